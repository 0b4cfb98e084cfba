"""The tools cache: verdaccio installed once per machine, and tools run with a timeout.

Installs run under an exclusive file lock into a temporary directory renamed into place only
once complete, so parallel test workers and a rerun of CI share one copy and download nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

VERDACCIO_VERSION = "6.8.0"
TOOLS_DIR_ENV = "RECONCILER_TOOLS_DIR"
INSTALL_TIMEOUT_S = 300.0


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
    with exclusive_lock(tools / f"verdaccio-{VERDACCIO_VERSION}.lock"):
        if not executable.exists():
            _install_verdaccio(tools, home)
    return executable


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
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
        run_tool(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=staging,
            timeout=INSTALL_TIMEOUT_S,
            what="installing verdaccio",
        )
        if home.exists():
            shutil.rmtree(home)
        staging.chmod(0o755)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout; raise SandboxError with its stderr when it fails (any exit
    but 0, unless `check` is off: then the caller reads the exit code)."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{what}: `{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise SandboxError(f"{what}: `{' '.join(argv)}` exited {done.returncode}:\n{tail}")
    return done
