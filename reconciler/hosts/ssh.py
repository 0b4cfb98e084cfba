"""`Transport` over SSH (paramiko): how the reconciler reaches every real host.

Why it looks the way it does:

* **Host keys are pinned** (no trust-on-first-use): `reconciler.hosts.sshconnect` opens the
  connection and maps every way that fails to a typed error; this module runs commands on it.
* **One connection per host, reused.** A fresh SSH handshake costs ~70-85 ms; a command on a
  live connection ~5-7 ms once Nagle is off (we build the socket ourselves with TCP_NODELAY).
  Keepalives hold the connection through idle periods; when it dropped (sshd restarted, host
  rebooted) the next command reconnects transparently, retrying once and only when the command
  cannot have started (the failure happened before the session channel existed).
* **Every command has a timeout and is killed when it passes it.** Closing an SSH channel does
  not stop the remote process (no pty, so no SIGHUP). So the command line first prints the
  shell's PID and then `exec`s the command in that same process. OpenSSH runs each session's
  command in a new session (`setsid` in `do_exec_no_pty`), so that PID is also the process
  group id of the command and of every child it starts. On timeout we close the channel and
  send `kill -s KILL -- -PGID` over a second channel on the same connection. This needs only a
  POSIX login shell and `kill`, which Linux and macOS hosts both have, unlike `setsid(1)` or
  `timeout(1)` (missing on macOS). If the host does not answer even that, the error says so.
* **No shell injection, missing programs told apart from failing ones**: see
  `reconciler.hosts.sshcommand`, which builds the one string the remote login shell receives.

Requirements on a host: OpenSSH, and a POSIX-like login shell for the user (sh, dash, bash, zsh,
ksh: the defaults on Linux and macOS). Anything rc files print before our PID line is dropped.
"""

from __future__ import annotations

import errno
import logging
import secrets
import select
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from reconciler.errors import (
    AuthenticationError,
    CommandFailed,
    CommandTimeout,
    HostError,
    HostKeyError,
    HostUnreachable,
    MissingBinary,
)
from reconciler.hosts.sshcommand import (
    FILE_MISSING,
    READ_SCRIPT,
    StdoutSplitter,
    command_line,
    missing_marker,
    pid_marker,
)
from reconciler.hosts.sshconnect import SSHEndpoint, connect, load_key
from reconciler.hosts.transport import (
    DEFAULT_MAX_OUTPUT,
    BoundedBuffer,
    CommandResult,
    check_argv,
    check_env,
    check_limits,
    describe,
)

_READ_CHUNK = 64 * 1024
_POLL_S = 0.2
"""Longest select() wait: how soon we notice an exit status that arrives without data."""
_LINGER_S = 1.0
"""After the exit status, how long we keep reading output that a leftover child still holds."""

log = logging.getLogger(__name__)


@dataclass
class _Outcome:
    stdout: BoundedBuffer
    stderr: BoundedBuffer
    pid: int | None
    exit_code: int
    timed_out: bool


class SSHTransport:
    """Runs argv vectors on one host over a single reused SSH connection."""

    def __init__(
        self,
        host_name: str,
        address: str,
        port: int,
        user: str,
        *,
        known_hosts: Path,
        key_file: Path | None = None,
        use_agent: bool = True,
        connect_timeout: float = 10,
        keepalive_s: int = 15,
        extra_path: Sequence[str] = (),
        base_env: Mapping[str, str] | None = None,
        read_timeout: float = 60,
    ) -> None:
        if key_file is None and not use_agent:
            raise ValueError(f"{host_name}: no way to authenticate (no key_file, agent disabled)")
        for entry in extra_path:
            if not entry or ":" in entry or "\0" in entry:
                raise ValueError(f"{host_name}: invalid PATH entry {entry!r}")
        self.host = host_name
        self.address = address
        self.port = port
        self.user = user
        self.known_hosts = known_hosts
        self.key_file = key_file
        self.use_agent = use_agent
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self.extra_path = tuple(extra_path)
        self.base_env = check_env(base_env)
        self.read_timeout = read_timeout
        self.connect_count = 0
        """How many SSH connections this transport has opened (reuse shows as 1)."""
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._failed: tuple[float, HostError] | None = None
        """When the last connect failed, and how: threads that were already waiting for that
        connect get the same answer instead of each paying another connect timeout."""

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def __repr__(self) -> str:
        return f"SSHTransport({self.host!r}, {self.target!r})"

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        nonce = secrets.token_hex(6)
        command = self.command_line(args, env, nonce)
        channel = self._open_channel()
        started = time.monotonic()
        stdout, stderr = BoundedBuffer(max_output), BoundedBuffer(max_output)
        splitter = StdoutSplitter(pid_marker(nonce).encode(), stdout)
        try:
            self._start(channel, command, args)
            outcome = _collect(channel, started + timeout, splitter, stderr)
            lost = outcome.exit_code == -1 and not channel.get_transport().is_active()
        except (KeyboardInterrupt, SystemExit):
            # The reconciler is being stopped (SIGINT, or SIGTERM turned into SystemExit) while
            # this command runs. Closing the channel does not stop it (no pty, no SIGHUP): an
            # `npm install` would go on alone and race the install of the next run. Kill it.
            if not channel.exit_status_ready():
                self._kill_remote(_await_pid(channel, splitter, stderr, self.connect_timeout))
            raise
        finally:
            _close_quietly(channel, self.host)
        if lost and not outcome.timed_out:
            self._drop(channel.get_transport())
            raise HostUnreachable(
                self.host,
                f"connection to {self.target} lost while `{describe(args)}` ran; "
                "it may or may not have completed",
            )
        if outcome.timed_out:
            fate = self._kill_remote(outcome.pid)
            raise CommandTimeout(
                self.host, f"`{describe(args)}` ran past its {timeout:g}s timeout; {fate}"
            )
        self._check_missing(args, outcome, nonce)
        return CommandResult(
            argv=args,
            exit_code=outcome.exit_code,
            stdout=outcome.stdout.getvalue(),
            stderr=outcome.stderr.getvalue(),
            duration_s=time.monotonic() - started,
            truncated=outcome.stdout.truncated or outcome.stderr.truncated,
        )

    def read_file(self, path: str, *, max_bytes: int = DEFAULT_MAX_OUTPUT) -> bytes:
        argv = ["sh", "-c", READ_SCRIPT, "sh", path, str(max_bytes + 1)]
        result = self.run(argv, timeout=self.read_timeout, max_output=max_bytes + 1)
        if result.exit_code == FILE_MISSING:
            raise FileNotFoundError(errno.ENOENT, f"{self.host}: no such file", path)
        if result.exit_code != 0:
            reason = result.error_text().strip() or f"exit code {result.exit_code}"
            raise CommandFailed(self.host, f"cannot read {path}: {reason}")
        if len(result.stdout) > max_bytes:
            raise CommandFailed(self.host, f"{path} is larger than {max_bytes} bytes")
        return result.stdout

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- command line ----------------------------------------------------------------------

    def command_line(self, args: tuple[str, ...], env: Mapping[str, str] | None, nonce: str) -> str:
        """The one string the remote login shell gets; every value in it is shlex-quoted."""
        return command_line(args, env, nonce, base_env=self.base_env, extra_path=self.extra_path)

    # --- connection ------------------------------------------------------------------------

    def _open_channel(self) -> paramiko.Channel:
        """A session channel on the shared connection; reconnects once if it had dropped.

        Retrying is safe here: without a channel the command cannot have started.
        """
        for attempt in (1, 2):
            transport = self._connection()
            try:
                return transport.open_session(timeout=self.connect_timeout)
            except paramiko.ChannelException as exc:
                raise HostUnreachable(self.host, f"{self.target} refused a session: {exc}") from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                silent = "Timeout" in str(exc)  # paramiko: "Timeout opening channel."
                dropped = not transport.is_active()
                self._drop(transport)
                if dropped and not silent and attempt == 1:
                    continue
                why = (
                    f"did not open a session within {self.connect_timeout:g}s"
                    if silent
                    else f"dropped the connection ({exc or type(exc).__name__})"
                )
                raise HostUnreachable(self.host, f"{self.target} {why}") from exc
        raise AssertionError("unreachable")

    def _connection(self) -> paramiko.Transport:
        asked = time.monotonic()
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._client.close()
                self._client = None
            if self._failed is not None and self._failed[0] >= asked:
                # Facts are gathered in parallel over one connection: when the host is frozen,
                # each waiting thread would otherwise try its own connect, one connect timeout
                # after the other (5 facts x 10 s before one pass can even report the host).
                exc = self._failed[1]
                raise type(exc)(self.host, str(exc).removeprefix(f"{self.host}: "))
            try:
                client = self._connect()
            except HostError as exc:
                self._failed = (time.monotonic(), exc)
                raise
            self._failed = None
            self._client = client
            transport = client.get_transport()
            assert transport is not None
            return transport

    def _drop(self, transport: paramiko.Transport) -> None:
        """Forget a connection that failed, so the next command reconnects."""
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._client.close()
                self._client = None

    def _connect(self) -> paramiko.SSHClient:
        if self.key_file is not None and self._pkey is None:
            self._pkey = load_key(self.host, self.key_file)
        endpoint = SSHEndpoint(
            host=self.host,
            address=self.address,
            port=self.port,
            user=self.user,
            known_hosts=self.known_hosts,
            key_file=self.key_file,
            use_agent=self.use_agent,
            connect_timeout=self.connect_timeout,
            keepalive_s=self.keepalive_s,
        )
        client = connect(endpoint, self._pkey)
        self.connect_count += 1
        return client

    # --- one command -----------------------------------------------------------------------

    def _start(self, channel: paramiko.Channel, command: str, args: tuple[str, ...]) -> None:
        """Send the exec request; a host that never answers raises HostUnreachable.

        paramiko waits for the answer without any timeout, so a watchdog closes the connection
        (which wakes the wait) when a frozen host stays silent for `connect_timeout`.
        """
        transport = channel.get_transport()
        fired = threading.Event()

        def give_up() -> None:
            fired.set()
            transport.close()

        watchdog = threading.Timer(self.connect_timeout, give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            # No shutdown_write(): the command line redirects stdin from /dev/null already, and
            # a command that exits at once may have closed the channel before our EOF is sent.
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop(transport)
            why = (
                f"did not answer within {self.connect_timeout:g}s"
                if fired.is_set()
                else f"dropped the connection ({exc or type(exc).__name__})"
            )
            raise HostUnreachable(
                self.host, f"{self.target} {why} while starting `{describe(args)}`"
            ) from exc
        finally:
            watchdog.cancel()

    def _kill_remote(self, pid: int | None) -> str:
        """SIGKILL the timed-out command's process group; returns what happened, for the error.

        `kill -s KILL -- -PGID` is the POSIX spelling that dash, bash and zsh all accept; the
        fallback kills the PID alone should the host's sshd not have made it a group leader.
        """
        if pid is None:
            return "its process id was never reported, so the remote process could not be killed"
        argv = ("kill", "-s", "KILL", "--", f"-{pid}")
        command = f"kill -s KILL -- -{pid} 2>/dev/null || kill -s KILL {pid}"
        try:
            channel = self._open_channel()
            try:
                self._start(channel, command, argv)
                answered = channel.status_event.wait(self.connect_timeout)
            finally:
                _close_quietly(channel, self.host)
        except (HostUnreachable, HostKeyError, AuthenticationError) as exc:
            return f"could not kill remote process group {pid}: {exc}"
        if not answered:
            self.close()
            return f"the host did not confirm killing remote process group {pid}"
        if channel.exit_status != 0:
            return f"remote process group {pid} was already gone"
        return f"remote process group {pid} killed"

    def _check_missing(self, args: tuple[str, ...], outcome: _Outcome, nonce: str) -> None:
        marker = missing_marker(nonce).encode()
        stderr = outcome.stderr.getvalue()
        if outcome.exit_code != 127 or marker not in stderr:
            return
        line = stderr[stderr.index(marker) :].split(b"\n", 1)[0]
        path = line[len(marker) :].strip().decode("utf-8", errors="replace")
        raise MissingBinary(self.host, f"{args[0]!r} not found (PATH={path})")


def _close_quietly(channel: paramiko.Channel, host: str) -> None:
    """Close a channel whose command is over (or abandoned). The host may have closed it, or
    the whole connection, at the same moment: paramiko then raises EOFError or SSHException
    from sending our close, which must not replace the command's result or error."""
    try:
        channel.close()
    except (EOFError, paramiko.SSHException, OSError) as exc:
        log.debug("%s: closing channel %s: %s", host, channel.get_id(), exc or type(exc).__name__)


def _await_pid(
    channel: paramiko.Channel, splitter: StdoutSplitter, stderr: BoundedBuffer, wait: float
) -> int | None:
    """The command's PID, when we are stopped before its PID line was read.

    The line is the first thing the remote shell prints, so once the exec request went out it
    is on its way, or already buffered: read for it (at most `wait` seconds), rather than leave
    a command we could not name running on the host. None when it never came (the request
    never went out, or the host is gone) or the command exited first (nothing to kill).
    """
    deadline = time.monotonic() + wait
    _drain(channel, splitter, stderr)
    while splitter.pid is None and splitter.searching:
        now = time.monotonic()
        if now >= deadline or channel.eof_received or channel.closed:
            break
        if channel.exit_status_ready():
            return None
        select.select([channel.fileno()], [], [], min(deadline - now, _POLL_S))
        _drain(channel, splitter, stderr)
    return splitter.pid


def _collect(
    channel: paramiko.Channel, deadline: float, splitter: StdoutSplitter, stderr: BoundedBuffer
) -> _Outcome:
    """Read stdout (through `splitter`, which finds our PID line) and stderr into bounded
    buffers until the command's exit or the deadline."""
    timed_out = _pump(channel, splitter, stderr, deadline)
    if not timed_out:
        timed_out = not channel.status_event.wait(max(0.0, deadline - time.monotonic()))
        _drain(channel, splitter, stderr)
    splitter.finish()
    return _Outcome(splitter.sink, stderr, splitter.pid, channel.exit_status, timed_out)


def _pump(
    channel: paramiko.Channel, out: StdoutSplitter, err: BoundedBuffer, deadline: float
) -> bool:
    """Read until EOF (or exit plus linger); True when the deadline passed first."""
    wakeup = channel.fileno()  # readable when stdout or stderr data (or EOF) arrived
    exited_at: float | None = None
    while not (channel.eof_received or channel.closed):
        now = time.monotonic()
        if now >= deadline:
            return True
        if exited_at is None and channel.exit_status_ready():
            exited_at = now
        if exited_at is not None and now - exited_at > _LINGER_S:
            break  # a leftover child holds the output open: the command itself is done
        select.select([wakeup], [], [], min(deadline - now, _POLL_S))
        _drain(channel, out, err)
    _drain(channel, out, err)
    return False


def _drain(channel: paramiko.Channel, out: StdoutSplitter, err: BoundedBuffer) -> None:
    while channel.recv_ready():
        out.feed(channel.recv(_READ_CHUNK))
    while channel.recv_stderr_ready():
        err.feed(channel.recv_stderr(_READ_CHUNK))
