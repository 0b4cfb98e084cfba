"""A real npm registry on loopback (verdaccio, offline), and real `npm -g` installs from it.

Upgrading a fleet means `npm i -g openclaw@V` on every host; the only honest way to test that
is against a real registry with real tarballs, peer ranges and `engines` fields. verdaccio is
pinned (Node 20 here; verdaccio >= 6.10 needs Node 22) and runs fully offline on a free port.

npm 11.19 notes (measured here): `npm i -g` still runs the stand-in's postinstall without
`--allow-scripts=openclaw` but warns, so installs pass it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from reconciler.sandbox.processes import free_port, stop_group
from reconciler.sandbox.tools import SandboxError, ensure_verdaccio, run_tool

NPM_TIMEOUT_S = 120.0
LOOPBACK = "127.0.0.1"


# --- the registry process --------------------------------------------------------------------


_CONFIG = """\
storage: {storage}
uplinks: {{}}
packages:
  '@*/*':
    access: $all
    publish: $all
    unpublish: $all
  '**':
    access: $all
    publish: $all
    unpublish: $all
web:
  enable: false
max_body_size: 100mb
log: {{type: stdout, format: pretty, level: warn}}
"""


class LocalRegistry:
    """A verdaccio process serving `directory/storage` on 127.0.0.1, offline (no uplinks).

    Start with `LocalRegistry.start(directory)`; stop with `stop()` or use it as a context
    manager. The process runs in its own process group and is stopped by that group's id.
    """

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.process = process

    @classmethod
    def start(
        cls,
        directory: Path,
        port: int = 0,
        *,
        verdaccio: Path | None = None,
        timeout: float = 30.0,
    ) -> LocalRegistry:
        """Write the config, start verdaccio on `port` (0: a free one) and wait for /-/ping."""
        executable = verdaccio if verdaccio is not None else ensure_verdaccio()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.yaml"
        storage = json.dumps(str(directory / "storage"))
        config.write_text(_CONFIG.format(storage=storage), encoding="utf-8")
        attempts = 3 if port == 0 else 1  # a free port may be taken before verdaccio binds it
        for _ in range(attempts):
            chosen = port or free_port()
            registry = cls(directory, chosen, _spawn(executable, config, chosen, directory))
            if registry._wait_until_up(timeout):
                registry._write_npmrc()
                return registry
            registry.stop()
        log = (directory / "verdaccio.log").read_text(encoding="utf-8", errors="replace")
        raise SandboxError(f"verdaccio did not answer /-/ping on port {chosen}:\n{log[-2000:]}")

    @property
    def url(self) -> str:
        """Like `http://127.0.0.1:4873/` (with the trailing slash npm wants)."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def npmrc(self) -> Path:
        """The private userconfig: registry URL and the token that publishing requires."""
        return self.directory / ".npmrc"

    def npm_env(self) -> dict[str, str]:
        """npm configuration pointing at this registry, to merge over a base environment.

        Only `npm_config_*` variables: merge with `{**os.environ, **registry.npm_env()}` for a
        local subprocess, or pass them alone to a remote host's environment.
        """
        return {
            "npm_config_userconfig": str(self.npmrc),
            "npm_config_cache": str(self.directory / "npm-cache"),
            "npm_config_registry": self.url,
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
        }

    def packument(self, name: str) -> dict[str, Any]:
        """The registry's metadata document for package `name` ({} when it is not published)."""
        url = self.url + urllib.parse.quote(name, safe="@")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
                document: dict[str, Any] = json.load(response)
                return document
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise SandboxError(f"GET {url}: HTTP {exc.code}") from exc

    def dist_tags(self, name: str) -> dict[str, str]:
        tags: dict[str, str] = self.packument(name).get("dist-tags", {})
        return tags

    def remove_dist_tag(self, name: str, tag: str) -> None:
        """Delete dist-tag `tag` of `name` (no error when it does not exist)."""
        url = f"{self.url}-/package/{urllib.parse.quote(name, safe='@')}/dist-tags/{tag}"
        request = urllib.request.Request(  # noqa: S310 (loopback)
            url, method="DELETE", headers={"authorization": "Bearer x"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise SandboxError(f"DELETE {url}: HTTP {exc.code}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the verdaccio process group (SIGTERM, then SIGKILL) and reap it."""
        stop_group(self.process, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _answers_ping(self.url):
                return True
            time.sleep(0.05)
        return False

    def _write_npmrc(self) -> None:
        host = f"//{LOOPBACK}:{self.port}/"
        self.npmrc.write_text(f"registry={self.url}\n{host}:_authToken=x\n", encoding="utf-8")


def _spawn(executable: Path, config: Path, port: int, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "verdaccio.log").open("ab") as log:
        return subprocess.Popen(
            [str(executable), "-c", str(config), "-l", f"{LOOPBACK}:{port}"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _answers_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "-/ping", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# --- installing from the registry ------------------------------------------------------------


def npm_install_global(
    registry: LocalRegistry,
    prefix: Path,
    specs: Sequence[str],
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = NPM_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """`npm install -g --prefix <prefix> <specs>` from `registry`; raises SandboxError on failure.

    Passes `--allow-scripts=openclaw` (npm 11.19 runs uncovered install scripts of global
    installs anyway, with a warning). `env` is the base environment (default: os.environ).
    """
    argv = [
        "npm",
        "install",
        "-g",
        "--prefix",
        str(prefix),
        "--allow-scripts=openclaw",
        *extra_args,
        *specs,
    ]
    base = dict(os.environ if env is None else env)
    return run_tool(
        argv,
        env={**base, **registry.npm_env()},
        timeout=timeout,
        what=f"installing {' '.join(specs)} into {prefix}",
    )


def npm_ls_global(
    registry: LocalRegistry, prefix: Path, *, depth: int = 1, timeout: float = NPM_TIMEOUT_S
) -> tuple[int, dict[str, Any]]:
    """`npm ls -g --prefix <prefix> --depth=<depth> --json`: (exit code, parsed tree).

    Exit code 1 with `error.code == "ELSPROBLEMS"` is a result here, not a failure.
    """
    argv = ["npm", "ls", "-g", "--prefix", str(prefix), f"--depth={depth}", "--json"]
    env = {**os.environ, **registry.npm_env()}
    done = run_tool(argv, timeout=timeout, what="npm ls", env=env, check=False)
    tree: dict[str, Any] = json.loads(done.stdout or "{}")
    return done.returncode, tree


def standin_bin(prefix: Path) -> Path:
    """Where `npm i -g --prefix <prefix> openclaw` puts the `openclaw` command."""
    return prefix / "bin" / "openclaw"
