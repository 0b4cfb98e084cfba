"""The one narrow interface every host operation goes through.

The reconciler touches hosts only by running argv vectors and reading files. Keeping that
surface this small is what lets the same observers, installers and service managers drive a
Mac mini over SSH, a Linux box over SSH, or this machine (`LocalTransport`), and what lets the
test-suite drive real sshd hosts instead of mocks.

The contract every implementation keeps:

* `run` takes an argv vector, never a shell string. Where a shell is unavoidable (SSH hands the
  remote login shell one string), every value is quoted with `shlex.quote`, so arguments such as
  `$(reboot)` or `a; b` arrive literally.
* A non-zero exit is a result, not an error: the caller decides what failure means.
* Errors that are about the host, not the command, are raised as the typed errors of
  `reconciler.errors`: `HostUnreachable`, `HostKeyError`, `AuthenticationError`,
  `CommandTimeout` (the process is killed, not just abandoned) and `MissingBinary`.
* Output is bounded: a runaway command cannot exhaust the controller's memory; the result says
  when it was `truncated`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""Bytes kept per stream (stdout, stderr) unless the caller asks for another bound."""

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""Environment variable names we agree to pass; anything else could smuggle shell syntax."""


@dataclass(frozen=True)
class CommandResult:
    """What one command did: its exit code and (possibly truncated) output.

    `exit_code` is the process's exit status; a negative value means it died from a signal
    (locally `-signum`; over SSH `-1`, because paramiko does not expose the exit-signal).
    """

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    truncated: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        """stdout as text; undecodable bytes become U+FFFD instead of raising."""
        return self.stdout.decode("utf-8", errors="replace")

    def error_text(self) -> str:
        """stderr as text, same decoding rules as `text`."""
        return self.stderr.decode("utf-8", errors="replace")


@runtime_checkable
class Transport(Protocol):
    """Runs commands and reads files on one host. One instance per host."""

    host: str
    """The host's name, used in every error message."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> CommandResult:
        """Run argv to completion or kill it at `timeout` seconds (raising CommandTimeout)."""
        ...

    def read_file(self, path: str, *, max_bytes: int = DEFAULT_MAX_OUTPUT) -> bytes:
        """The file's bytes. A leading `~/` means the host's HOME.

        Raises FileNotFoundError when the path does not exist and CommandFailed when it cannot
        be read or holds more than `max_bytes`.
        """
        ...

    def close(self) -> None:
        """Release connections; the transport may be used again afterwards (it reconnects)."""
        ...


# --- helpers shared by the implementations ----------------------------------------------------


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """A validated argv tuple: non-empty, only strings, no NUL bytes (they cannot be passed)."""
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a sequence of strings, not a single string")
    args = tuple(argv)
    if not args or not args[0]:
        raise ValueError("argv must name a program")
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(f"argv items must be str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            raise ValueError(f"argv item contains a NUL byte: {arg!r}")
    return args


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """A validated copy of env: names match ENV_NAME, values are NUL-free strings."""
    checked: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name: {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"invalid value for environment variable {name}: {value!r}")
        checked[name] = value
    return checked


def check_limits(timeout: float, max_output: int) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if max_output < 0:
        raise ValueError(f"max_output must be >= 0, got {max_output!r}")


class BoundedBuffer:
    """Keeps the first `limit` bytes fed to it and counts the rest, so memory stays bounded."""

    __slots__ = ("_data", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self._data)
        if room > 0:
            self._data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def getvalue(self) -> bytes:
        return bytes(self._data)


def describe(argv: Sequence[str], limit: int = 120) -> str:
    """A short, readable rendering of argv for error messages."""
    text = " ".join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."
