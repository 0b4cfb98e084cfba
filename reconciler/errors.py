"""Error types that carry the retry policy.

Like kopf, the type of an error is its policy: a `TemporaryError` is retried after its delay
(the reconcile loop backs off), a `PermanentError` stops the rollout, is recorded on the status
branch and broadcast. Every error message says where, what, and what was expected, because an
operator reads it at 3 a.m.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose."""


class TemporaryError(ReconcilerError):
    """Worth retrying: the same action may succeed after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ReconcilerError):
    """Retrying cannot help: stop, record, broadcast."""


class RetriesExhausted(TemporaryError):
    """A run stopped retrying: `attempts` temporary failures in a row spent its budget.

    Still temporary (a later run may succeed); the message is the last error, then why the run
    stopped, so the last line an operator reads says both.
    """

    def __init__(self, last: TemporaryError, attempts: int, why: str) -> None:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        super().__init__(f"{last} (gave up after {tries}: {why})", delay=last.delay)
        self.last = last
        self.attempts = attempts


# --- hosts -----------------------------------------------------------------------------------


class HostError(ReconcilerError):
    """Something about one host; always names it."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class HostUnreachable(HostError, TemporaryError):
    """The host could not be reached (connection refused, timed out, reset)."""

    def __init__(self, host: str, message: str, *, delay: float = 5.0) -> None:
        HostError.__init__(self, host, message)
        self.delay = delay


class HostKeyError(HostError, PermanentError):
    """The host presented a key that known_hosts does not list (unknown or changed)."""


class AuthenticationError(HostError, PermanentError):
    """Our key was refused by the host."""


class CommandTimeout(HostError, TemporaryError):
    """A command on a host ran past its timeout and was cut."""

    def __init__(self, host: str, message: str, *, delay: float = 5.0) -> None:
        HostError.__init__(self, host, message)
        self.delay = delay


class CommandFailed(HostError, PermanentError):
    """A command exited non-zero where success was required."""


class MissingBinary(HostError, PermanentError):
    """A required program (openclaw, npm, node) is not on the host's PATH."""


class FactParseError(HostError, PermanentError):
    """A command's output did not have the shape its parser expects."""


# --- desired state ---------------------------------------------------------------------------


class SpecError(PermanentError):
    """The desired state is invalid; carries every located problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0].render() if problems else "invalid spec"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


class Problem:
    """One located problem in a desired-state file: where, what, and what was expected."""

    __slots__ = ("column", "file", "line", "message", "path")

    def __init__(
        self,
        file: str,
        path: str,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.path = path
        self.message = message
        self.line = line
        self.column = column

    def location(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def render(self) -> str:
        return f"{self.location()}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }

    def __repr__(self) -> str:
        return f"Problem({self.render()!r})"


class RegistryError(TemporaryError):
    """The npm registry could not be reached or answered nonsense."""


class LockError(PermanentError):
    """The pins cannot be locked: a version is missing or a range excludes the core."""


class InitError(PermanentError):
    """`reconciler init` refused: bad input, a host that gave no key, or a DIR not empty."""


class ConfigError(PermanentError):
    """The daemon's configuration is unusable; says which key and why."""
