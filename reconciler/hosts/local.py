"""`Transport` for this machine: the same commands a host would run, without SSH.

Used when the reconciler manages the machine it runs on, and by tests and the demo to play
several "hosts" on one machine: each `LocalTransport` gets its own HOME and PATH prefix (its
own npm prefix), so two of them never see each other's installs.

Like the SSH transport it never uses a shell: argv goes straight to `execve`. Each command runs
in its own session (so its own process group); on timeout the whole group is SIGKILLed, which
also takes down children the command spawned (npm's node workers, `sleep` in a script).

The environment is built, not inherited: only a few harmless variables of the controller
(locale, USER, SHELL, TMPDIR, ...) pass through, so a token in the controller's environment
does not leak into every host command. Anything else goes through `base_env` or `env`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from reconciler.errors import CommandFailed, CommandTimeout, MissingBinary
from reconciler.hosts.transport import (
    DEFAULT_MAX_OUTPUT,
    BoundedBuffer,
    CommandResult,
    check_argv,
    check_env,
    check_limits,
    describe,
)

INHERITED_ENV = ("PATH", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""Variables of the controller's own environment that host commands see."""

_READ_CHUNK = 64 * 1024
_EXIT_POLL_S = 0.1
_LINGER_S = 1.0
"""After the process exited, how long we keep reading pipes that a leftover child holds."""


class _ExecFailed(Exception):
    """The program exists but could not be executed; becomes exit code 126/127 like a shell's."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LocalTransport:
    """Runs argv vectors on this machine as if it were the host `host_name`."""

    def __init__(
        self,
        host_name: str,
        *,
        home: Path | None,
        extra_path: Sequence[str] = (),
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host_name
        self.home = home
        self.extra_path = tuple(extra_path)
        self.base_env = check_env(base_env)

    def __repr__(self) -> str:
        return f"LocalTransport({self.host!r}, home={self.home!r})"

    # --- Transport -------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> CommandResult:
        args = check_argv(argv)
        check_limits(timeout, max_output)
        environment = self.environment(env)
        started = time.monotonic()
        try:
            proc = self._spawn(args, environment)
        except _ExecFailed as failed:
            return CommandResult(args, failed.code, b"", failed.message.encode(), 0.0, False)
        try:
            out, err, timed_out = _collect(proc, started + timeout, max_output)
        except (KeyboardInterrupt, SystemExit):
            _kill_group(proc)  # stopped mid-command: never leave it running on its own
            raise
        if timed_out:
            _kill_group(proc)
            raise CommandTimeout(
                self.host,
                f"`{describe(args)}` ran past its {timeout:g}s timeout; "
                f"process group {proc.pid} killed",
            )
        return CommandResult(
            argv=args,
            exit_code=proc.returncode,
            stdout=out.getvalue(),
            stderr=err.getvalue(),
            duration_s=time.monotonic() - started,
            truncated=out.truncated or err.truncated,
        )

    def read_file(self, path: str, *, max_bytes: int = DEFAULT_MAX_OUTPUT) -> bytes:
        target = self._resolve(path)
        try:
            with target.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"{self.host}: no such file", path) from None
        except OSError as exc:
            raise CommandFailed(self.host, f"cannot read {path}: {exc.strerror}") from exc
        if len(data) > max_bytes:
            raise CommandFailed(self.host, f"{path} is larger than {max_bytes} bytes")
        return data

    def close(self) -> None:
        """Nothing to release: every command is its own process."""

    # --- internals -------------------------------------------------------------------------

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The exact environment a command gets: inherited basics < base_env < env, then PATH."""
        merged = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        merged["HOME"] = str(self.home) if self.home is not None else str(Path.home())
        merged.update(self.base_env)
        merged.update(check_env(env))
        merged["PATH"] = os.pathsep.join((*self.extra_path, merged.get("PATH", os.defpath)))
        return merged

    def _spawn(self, args: tuple[str, ...], environment: dict[str, str]) -> subprocess.Popen[bytes]:
        cwd = self.home if self.home is not None and self.home.is_dir() else Path.home()
        try:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment,
                cwd=cwd,
                start_new_session=True,  # own session => own process group, killed as a whole
                close_fds=True,
            )
        except FileNotFoundError as exc:
            if exc.filename is not None and str(exc.filename) == str(cwd):
                raise CommandFailed(self.host, f"working directory {cwd} is missing") from exc
            if shutil.which(args[0], path=environment["PATH"]) is not None:
                # the program exists; its #! interpreter does not (what a shell reports as 127)
                raise _ExecFailed(127, f"{args[0]}: bad interpreter: {exc.strerror}") from exc
            raise MissingBinary(
                self.host, f"{args[0]!r} not found (PATH={environment['PATH']})"
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EPERM, errno.EISDIR):
                raise _ExecFailed(126, f"{args[0]}: cannot execute: {exc.strerror}") from exc
            raise

    def _resolve(self, path: str) -> Path:
        if path == "~" or path.startswith("~/"):
            home = self.home if self.home is not None else Path.home()
            return home / path[2:]
        return Path(path)


def _collect(
    proc: subprocess.Popen[bytes], deadline: float, max_output: int
) -> tuple[BoundedBuffer, BoundedBuffer, bool]:
    """Read both pipes into bounded buffers until EOF and exit, or the deadline (True)."""
    assert proc.stdout is not None and proc.stderr is not None
    sinks: dict[int, BoundedBuffer] = {
        proc.stdout.fileno(): BoundedBuffer(max_output),
        proc.stderr.fileno(): BoundedBuffer(max_output),
    }
    out, err = sinks.values()
    timed_out = _pump(proc, sinks, deadline)
    if not timed_out:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    _close_pipes(proc.stdout, proc.stderr)
    return out, err, timed_out


def _pump(proc: subprocess.Popen[bytes], sinks: dict[int, BoundedBuffer], deadline: float) -> bool:
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in sinks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _LINGER_S:
                return False  # a leftover child holds the pipes: stop reading, keep the result
            for key, _ in selector.select(min(deadline - now, _EXIT_POLL_S)):
                chunk = os.read(key.fd, _READ_CHUNK)
                if chunk:
                    sinks[key.fd].feed(chunk)
                else:
                    selector.unregister(key.fd)
    return False


def _close_pipes(*pipes: IO[bytes]) -> None:
    for pipe in pipes:
        pipe.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole process group and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
