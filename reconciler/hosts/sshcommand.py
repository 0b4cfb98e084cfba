"""The remote command line: the one string a host's login shell receives for each command,
and the reading back of the PID line it prints first.

It exists apart from `reconciler.hosts.ssh` (which owns the connection and the channel) because
it is the part that must be right for every POSIX shell, and the part to read when auditing
what reaches a host:

* **No shell injection.** The remote login shell receives one string; every value in it (argv,
  env values, PATH entries) is quoted with `shlex.quote`, env names are validated, and env is
  passed as `env NAME=VALUE ...` arguments so it works whatever sshd's AcceptEnv says.
* **Missing programs are told apart from failing ones.** A small POSIX-sh prelude checks
  `command -v argv[0]` with the final PATH and reports a marker on stderr, so a script that
  itself exits 127 is not mistaken for a missing binary.
* **The command's PID comes first on stdout**, before the shell `exec`s the command in that
  same process, so a timed-out command can be killed (`reconciler.hosts.ssh`). `StdoutSplitter`
  separates that line (and any login-shell noise before it) from the command's output.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from reconciler.hosts.transport import BoundedBuffer, check_env

MAX_PREAMBLE = 64 * 1024
"""Bytes of login-shell noise (rc files printing) tolerated before our PID line."""
FILE_MISSING = 66

# Runs under /bin/sh with the final environment: "$1" is argv[0]. Prints a marker when it
# cannot be found, so exit code 127 from the program itself is not mistaken for "missing".
_PRELUDE = (
    'command -v "$1" >/dev/null 2>&1 || '
    '{{ printf "%s %s\\n" {marker} "$PATH" >&2; exit 127; }}; exec "$@"'
)

# Reads a file with a bound; `~` and `~/...` mean the host's HOME (which may differ from the
# login directory, as on the test fleet). Exit 66 means "does not exist".
READ_SCRIPT = (
    'case $1 in "~") set -- "$HOME" "$2";; "~/"*) set -- "$HOME/${1#"~/"}" "$2";; esac; '
    f'[ -e "$1" ] || exit {FILE_MISSING}; exec head -c "$2" -- "$1"'
)


def command_line(
    args: tuple[str, ...],
    env: Mapping[str, str] | None,
    nonce: str,
    *,
    base_env: Mapping[str, str],
    extra_path: Sequence[str],
) -> str:
    """The one string the remote login shell gets; every value in it is shlex-quoted."""
    merged = {**base_env, **check_env(env)}
    explicit_path = merged.pop("PATH", None)
    words = [shlex.quote(f"{name}={value}") for name, value in merged.items()]
    if explicit_path is not None:
        words.append(shlex.quote("PATH=" + ":".join((*extra_path, explicit_path))))
    elif extra_path:
        # the host's own PATH stays, expanded by the remote shell after our prefix
        words.append(shlex.quote("PATH=" + ":".join(extra_path) + ":") + '"$PATH"')
    prelude = _PRELUDE.format(marker=shlex.quote(missing_marker(nonce)))
    return " ".join(
        [
            f"printf '%s%s\\n' {shlex.quote(pid_marker(nonce))} \"$$\";",
            "exec",
            *(["env", "--", *words] if words else []),  # no env: one exec fewer (~1 ms)
            "/bin/sh -c",
            shlex.quote(prelude),
            "sh",
            *(shlex.quote(arg) for arg in args),
            # stdin is /dev/null on the host, not the channel: nothing waits for input, and
            # we never half-close a channel the command may already have closed (EOF race).
            "</dev/null",
        ]
    )


def pid_marker(nonce: str) -> str:
    return f"__reconciler_pid_{nonce}__="


def missing_marker(nonce: str) -> str:
    return f"__reconciler_missing_{nonce}__"


class StdoutSplitter:
    """Separates our PID line (and any login-shell noise before it) from the command's stdout."""

    def __init__(self, marker: bytes, sink: BoundedBuffer) -> None:
        self.marker = marker
        self.sink = sink
        self.pid: int | None = None
        self._head: bytearray | None = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._head is None:
            self.sink.feed(chunk)
            return
        self._head += chunk
        start = self._head.find(self.marker)
        end = self._head.find(b"\n", start) if start >= 0 else -1
        if end >= 0:
            digits = bytes(self._head[start + len(self.marker) : end])
            self.pid = int(digits) if digits.isdigit() else None
            rest = bytes(self._head[end + 1 :])
            self._head = None
            self.sink.feed(rest)
        elif len(self._head) > MAX_PREAMBLE:
            self.finish()

    @property
    def searching(self) -> bool:
        """Still reading the preamble: neither the PID line nor too much noise came yet."""
        return self._head is not None

    def finish(self) -> None:
        """No PID line came: whatever arrived is the command's output."""
        if self._head is not None:
            head, self._head = bytes(self._head), None
            self.sink.feed(head)
