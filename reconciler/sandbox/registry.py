"""A real npm registry on loopback, and the releases the tests, bench and demo upgrade between.

Upgrading a fleet means `npm i -g openclaw@V` on every host; the only honest way to test that
is against a real registry with real tarballs, peer ranges and `engines` fields. This module
installs verdaccio (pinned: Node 20 here, and verdaccio >= 6.10 needs Node 22), runs it fully
offline on a free loopback port, and publishes the stand-in `openclaw` and `@openclaw/*`
plugins (templates in `standin/`) in any version with any metadata.

npm 11.19 notes (measured here): `npm publish` of a version lower than the current `latest`,
or of any prerelease (which includes correction releases such as `2026.5.3-1`), fails unless
`--tag` is given, so every publish here passes an explicit tag; `npm i -g` still runs the
stand-in's postinstall without `--allow-scripts=openclaw` but warns, so installs pass it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nodesemver

VERDACCIO_VERSION = "6.8.0"
TOOLS_DIR_ENV = "RECONCILER_TOOLS_DIR"
STANDIN_DIR = Path(__file__).resolve().parent / "standin"
INSTALL_TIMEOUT_S = 300.0
NPM_TIMEOUT_S = 120.0
LOOPBACK = "127.0.0.1"
BUILT_AT = "2026-01-01T00:00:00.000Z"


class SandboxError(RuntimeError):
    """A sandbox part (verdaccio, npm) failed; the message carries the tool's own words."""


# --- verdaccio installation ------------------------------------------------------------------


def default_tools_dir() -> Path:
    """`$RECONCILER_TOOLS_DIR`, else `~/.cache/openclaw-reconciler/tools`."""
    configured = os.environ.get(TOOLS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "openclaw-reconciler" / "tools"


def ensure_verdaccio(tools_dir: Path | None = None) -> Path:
    """Path of the verdaccio executable, installing it first if needed.

    Idempotent and safe across processes: installs run under an exclusive file lock, into a
    temporary directory that is renamed into place only once complete.
    """
    tools = tools_dir if tools_dir is not None else default_tools_dir()
    home = tools / f"verdaccio-{VERDACCIO_VERSION}"
    executable = home / "node_modules" / ".bin" / "verdaccio"
    if executable.exists():
        return executable
    tools.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(tools / f"verdaccio-{VERDACCIO_VERSION}.lock"):
        if not executable.exists():
            _install_verdaccio(tools, home)
    return executable


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_verdaccio(tools: Path, home: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".verdaccio-", dir=tools))
    try:
        manifest = {
            "name": "reconciler-tools-verdaccio",
            "private": True,
            "dependencies": {"verdaccio": VERDACCIO_VERSION},
            # The registry serves only `latest` tags; verdaccio 6.8 asks for node-fetch@cjs.
            "overrides": {"node-fetch": "2.7.0"},
        }
        (staging / "package.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _run(["npm", "install", "--no-audit", "--no-fund"], cwd=staging,
             timeout=INSTALL_TIMEOUT_S, what="installing verdaccio")
        if home.exists():
            shutil.rmtree(home)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout; raise SandboxError with its stderr when it fails."""
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, env=None if env is None else dict(env), timeout=timeout,
            capture_output=True, text=True, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{what}: `{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise SandboxError(f"{what}: `{' '.join(argv)}` exited {done.returncode}:\n{tail}")
    return done


# --- the registry process --------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


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
        attempts = 3 if port == 0 else 1
        for attempt in range(attempts):
            chosen = port or free_port()
            registry = cls(directory, chosen, _spawn(executable, config, chosen, directory))
            if registry._wait_until_up(timeout):
                registry._write_npmrc()
                return registry
            registry.stop()
            if attempt == attempts - 1:
                log = (directory / "verdaccio.log").read_text(encoding="utf-8", errors="replace")
                raise SandboxError(f"verdaccio did not answer /-/ping on {registry.url}:\n{log[-2000:]}")
        raise AssertionError("unreachable")

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

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the verdaccio process group (SIGTERM, then SIGKILL) and reap it."""
        _stop_group(self.process, timeout)

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
            cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _answers_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "-/ping", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
