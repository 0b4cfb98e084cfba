"""The transport contract, against real sshd hosts on loopback and against this machine.

No mocks: every SSH test talks to a real OpenSSH server (tests/fixtures/sshfleet.py), because
what matters (quoting through a real login shell, processes really killed, host keys really
checked, reconnects after a real restart) only shows against the real thing. Behaviour the
Transport contract promises is tested once for both implementations (`target` is parametrized).
"""

from __future__ import annotations

import ast
import os
import random
import signal
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import (
    AuthenticationError,
    CommandFailed,
    CommandTimeout,
    HostKeyError,
    HostUnreachable,
    MissingBinary,
)
from reconciler.hosts.local import LocalTransport
from reconciler.hosts.ssh import SSHTransport
from reconciler.hosts.transport import CommandResult, Transport
from reconciler.sandbox.sshfleet import FleetHost, SSHFleet, generate_key

REPO = Path(__file__).resolve().parents[1]


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Target:
    """One host under test and a way to make more transports to it."""

    kind: str
    home: Path
    make: Callable[..., Transport]
    opened: list[Transport] = field(default_factory=list)

    @property
    def transport(self) -> Transport:
        if not self.opened:
            self.new()
        return self.opened[0]

    def new(self, **kwargs: Any) -> Transport:
        transport = self.make(**kwargs)
        self.opened.append(transport)
        return transport


@pytest.fixture(params=["ssh", "local"])
def target(request: pytest.FixtureRequest, ssh_fleet: SSHFleet, tmp_path: Path) -> Iterator[Target]:
    if request.param == "ssh":
        host = ssh_fleet[0]
        made = Target("ssh", host.home, host.transport)
    else:
        home = tmp_path / "local-home"
        home.mkdir()
        made = Target("local", home, lambda **kw: LocalTransport("local-1", home=home, **kw))
    yield made
    for transport in made.opened:
        transport.close()


@pytest.fixture
def sleeper() -> Iterator[Callable[[], str]]:
    """Unique `sleep` durations for a test; any such process still alive at the end is
    killed by PID (the fleet's hosts live on this machine, so pgrep here sees them)."""
    made: list[str] = []

    def new() -> str:
        made.append(str(random.randint(100_000, 999_999)))
        return made[-1]

    yield new
    for seconds in made:
        for pid in _pids_of(seconds):
            os.kill(pid, signal.SIGKILL)


def _pids_of(seconds: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def _gone_within(transport: Transport, pattern: str, seconds: float) -> bool:
    """True once no process on the host matches `pattern` (checked ON the host)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if transport.run(["pgrep", "-f", pattern], timeout=10).exit_code == 1:
            return True
        time.sleep(0.05)
    return False


# --- shared behaviour: arguments, environment, results ----------------------------------------

NASTY = [
    "a b",
    "it's",
    'say "hi"',
    "$(touch /tmp/pwned-by-transport-test)",
    "a;b",
    "`id`",
    "*",
    "~",
    "$HOME",
    "back\\slash",
    "new\nline",
    "tab\there",
    "&& echo injected",
    "| cat",
    "--",
    "-n",
    "ünïcødé ✓",
    "",
]


def test_argv_arrives_literally(target: Target) -> None:
    result = target.transport.run(["printf", "%s\\0", *NASTY], timeout=10)
    assert result.exit_code == 0, result
    assert result.stdout.split(b"\0")[:-1] == [arg.encode() for arg in NASTY]
    assert not Path("/tmp/pwned-by-transport-test").exists()


def test_env_values_arrive_literally_and_override_base_env(target: Target) -> None:
    transport = target.new(base_env={"FROM_BASE": "base", "OVERRIDDEN": "base"})
    env = {"NASTY": "va lue $(id) ; 'q' \"dq\" `x` \\", "OVERRIDDEN": "call", "EMPTY": ""}
    result = transport.run(
        ["sh", "-c", 'printf "%s|" "$NASTY" "$FROM_BASE" "$OVERRIDDEN" "${EMPTY-unset}"'],
        timeout=10,
        env=env,
    )
    assert result.text() == f"{env['NASTY']}|base|call||"


def test_home_is_the_hosts_own(target: Target) -> None:
    assert target.transport.run(["printenv", "HOME"], timeout=10).text() == f"{target.home}\n"


def test_extra_path_comes_first_and_finds_programs(target: Target, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    hello = tools / "hello-transport"
    hello.write_text('#!/bin/sh\necho hello from "$0"\n')
    hello.chmod(0o755)
    transport = target.new(extra_path=[str(tools)])
    path = transport.run(["printenv", "PATH"], timeout=10).text().strip()
    assert path.split(":")[0] == str(tools)
    assert len(path.split(":")) > 1, "the host's own PATH must stay after the prefix"
    result = transport.run(["hello-transport"], timeout=10)
    assert result.text() == f"hello from {hello}\n"


@pytest.mark.parametrize("name", ["BAD-NAME", "1X", "A B", "X;rm", "", "A=B", "$(x)"])
def test_invalid_env_names_are_rejected_before_running(target: Target, name: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        target.transport.run(["true"], timeout=10, env={name: "x"})


def test_nonzero_exit_is_a_result_not_an_error(target: Target) -> None:
    result = target.transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert isinstance(result, CommandResult)
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert not result.truncated
    assert 0 <= result.duration_s < 10


def test_death_by_signal_is_a_negative_exit_code(target: Target) -> None:
    result = target.transport.run(["sh", "-c", "kill -9 $$"], timeout=10)
    assert result.exit_code < 0


def test_text_replaces_undecodable_bytes(target: Target) -> None:
    result = target.transport.run(["printf", "ok\\377\\n"], timeout=10)
    assert result.stdout == b"ok\xff\n"
    assert result.text() == "ok\ufffd\n"


def test_stdin_is_closed(target: Target) -> None:
    result = target.transport.run(["cat"], timeout=5)
    assert (result.exit_code, result.stdout) == (0, b"")


def test_output_is_bounded_and_memory_stays_bounded(target: Target) -> None:
    transport = target.transport
    transport.run(["true"], timeout=10)  # connect outside the measurement
    fifty_mb = "head -c 50000000 /dev/zero; head -c 50000000 /dev/zero >&2; exit 4"
    tracemalloc.start()
    try:
        result = transport.run(["sh", "-c", fifty_mb], timeout=30, max_output=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.truncated
    assert result.exit_code == 4, "the command runs to its end; only what we keep is cut"
    assert len(result.stdout) == len(result.stderr) == 1 << 20
    assert peak < 16 << 20, f"peak Python allocations {peak / 1e6:.1f} MB for 100 MB of output"


def test_output_under_the_bound_is_not_truncated(target: Target) -> None:
    result = target.transport.run(["head", "-c", "4096", "/dev/zero"], timeout=10, max_output=4096)
    assert (len(result.stdout), result.truncated) == (4096, False)


def test_timeout_kills_the_command_and_its_children(
    target: Target, sleeper: Callable[[], str]
) -> None:
    first, second = sleeper(), sleeper()
    script = f"sleep {first} & sleep {second}; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        target.transport.run(["sh", "-c", script], timeout=1)
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 3, elapsed
    assert caught.value.host == target.transport.host
    assert "timeout" in str(caught.value) and "killed" in str(caught.value)
    assert _gone_within(target.transport, f"^sleep ({first}|{second})$", 3), (
        "the timed-out command (and its background child) must be gone from the host"
    )


def test_a_leftover_child_holding_the_output_does_not_hang_run(
    target: Target, sleeper: Callable[[], str]
) -> None:
    seconds = sleeper()
    started = time.monotonic()
    result = target.transport.run(["sh", "-c", f"sleep {seconds} & echo started"], timeout=20)
    assert result.exit_code == 0
    assert result.text() == "started\n"
    assert time.monotonic() - started < 5


def test_missing_binary(target: Target) -> None:
    with pytest.raises(MissingBinary) as caught:
        target.transport.run(["no-such-binary-4c1e"], timeout=10)
    assert caught.value.host == target.transport.host
    assert "no-such-binary-4c1e" in str(caught.value) and "PATH=" in str(caught.value)
    with pytest.raises(MissingBinary):
        target.transport.run(["/nonexistent/dir/tool"], timeout=10)


def test_a_program_exiting_127_is_not_a_missing_binary(target: Target) -> None:
    result = target.transport.run(["sh", "-c", "no-such-binary-4c1e; exit 127"], timeout=10)
    assert result.exit_code == 127
    assert b"not found" in result.stderr


def test_read_file(target: Target) -> None:
    (target.home / "conf").mkdir(exist_ok=True)
    data = b'{"gateway": {"port": 18789}}\n\x00\xff binary too'
    (target.home / "conf" / "openclaw.json").write_bytes(data)
    transport = target.transport
    assert transport.read_file("~/conf/openclaw.json") == data
    assert transport.read_file(str(target.home / "conf" / "openclaw.json")) == data
    assert transport.read_file("~/conf/openclaw.json", max_bytes=len(data)) == data
    with pytest.raises(CommandFailed, match="larger than"):
        transport.read_file("~/conf/openclaw.json", max_bytes=10)
    with pytest.raises(FileNotFoundError):
        transport.read_file("~/conf/absent.json")
    with pytest.raises(CommandFailed):
        transport.read_file("~/conf")  # a directory


def test_parallel_use_from_a_thread_pool(
    target: Target, ssh_fleet: SSHFleet, tmp_path: Path
) -> None:
    if target.kind == "ssh":
        transports: list[Transport] = [host.transport() for host in ssh_fleet]
    else:
        homes = [tmp_path / f"home-{i}" for i in range(3)]
        for home in homes:
            home.mkdir()
        transports = [LocalTransport(f"local-{i}", home=h) for i, h in enumerate(homes)]
    target.opened.extend(transports)

    def observe(transport: Transport) -> str:
        return transport.run(["printenv", "HOME"], timeout=10).text().strip()

    jobs = [transports[i % 3] for i in range(60)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        homes_seen = list(pool.map(observe, jobs))
    expected = [observe(t) for t in jobs]
    assert homes_seen == expected
    assert len(set(homes_seen)) == 3
    for transport in transports:
        if isinstance(transport, SSHTransport):
            assert transport.connect_count == 1


def test_closed_transport_can_be_used_again(target: Target) -> None:
    transport = target.transport
    assert transport.run(["true"], timeout=10).exit_code == 0
    transport.close()
    assert transport.run(["true"], timeout=10).exit_code == 0


def test_both_implementations_satisfy_the_protocol(target: Target) -> None:
    assert isinstance(target.transport, Transport)


# --- SSH only: connection, host keys, authentication, host failures ---------------------------


def _established_connections(port: int) -> int:
    """ESTABLISHED TCP connections whose server side is 127.0.0.1:port (from /proc)."""
    wanted = f"0100007F:{port:04X}"
    with Path("/proc/net/tcp").open() as table:
        return sum(1 for line in table if line.split()[1:4:2] == [wanted, "01"])


def test_ssh_connection_is_reused(fresh_ssh_host: FleetHost) -> None:
    with fresh_ssh_host.transport() as transport:
        for _ in range(50):
            assert transport.run(["true"], timeout=10).exit_code == 0
        assert transport.connect_count == 1
        assert _established_connections(fresh_ssh_host.port) == 1


# Commands that exit at once, most without reading stdin: each one closes its channel from the
# host's side while we are still starting or closing ours (paramiko's EOF race).
QUICK: list[tuple[list[str], bytes, bytes]] = [
    (["true"], b"", b""),
    (["echo", "hi"], b"hi\n", b""),
    (["sh", "-c", "exit 0"], b"", b""),
    (["sh", "-c", "printf out; printf err >&2"], b"out", b"err"),
    (["sh", "-c", 'read line; echo "read=$?"'], b"read=1\n", b""),  # stdin: EOF at once
    (["cat"], b"", b""),
    (["head", "-c", "0"], b"", b""),
]


def test_ssh_many_quick_commands_all_succeed(ssh_fleet: SSHFleet) -> None:
    """Regression: 200 x `true`, then 200 quick commands of every shape, on one connection:
    every one exits 0 with exactly its output, none raises (EOFError/SSHException from closing a
    channel the host had already closed), and the connection is never dropped and reopened."""
    with ssh_fleet[0].transport() as transport:
        for i in range(200):
            result = transport.run(["true"], timeout=10)
            assert (result.exit_code, result.stdout, result.stderr) == (0, b"", b""), i
        for i in range(200):
            argv, stdout, stderr = QUICK[i % len(QUICK)]
            result = transport.run(argv, timeout=10)
            assert (result.exit_code, result.stdout, result.stderr) == (0, stdout, stderr), argv
        assert transport.connect_count == 1


def test_ssh_unknown_host_key_is_refused(ssh_fleet: SSHFleet, tmp_path: Path) -> None:
    host = ssh_fleet[1]
    known_hosts = ssh_fleet.write_known_hosts(tmp_path / "known_hosts", exclude=[host.name])
    with pytest.raises(HostKeyError) as caught:
        host.transport(known_hosts=known_hosts).run(["true"], timeout=10)
    message = str(caught.value)
    assert caught.value.host == host.name
    assert f"[127.0.0.1]:{host.port}" in message
    assert "unknown host key" in message and "SHA256:" in message
    assert str(known_hosts) in message


def test_ssh_missing_known_hosts_file_is_refused(ssh_fleet: SSHFleet, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="known_hosts"):
        ssh_fleet[0].transport(known_hosts=tmp_path / "absent").run(["true"], timeout=10)


def test_ssh_hashed_known_hosts_entries_work(ssh_fleet: SSHFleet, tmp_path: Path) -> None:
    known_hosts = ssh_fleet.write_known_hosts(tmp_path / "known_hosts", hashed=True)
    assert known_hosts.read_text().startswith("|1|")
    with ssh_fleet[2].transport(known_hosts=known_hosts) as transport:
        assert transport.run(["true"], timeout=10).exit_code == 0


def test_ssh_changed_host_key_is_refused(fresh_ssh_host: FleetHost) -> None:
    transport = fresh_ssh_host.transport()
    assert transport.run(["true"], timeout=10).exit_code == 0
    fresh_ssh_host.fleet.rekey(fresh_ssh_host)  # known_hosts keeps the old key
    with pytest.raises(HostKeyError) as caught:
        transport.run(["true"], timeout=10)
    message = str(caught.value)
    assert "CHANGED" in message and message.count("SHA256:") == 2
    assert f"127.0.0.1:{fresh_ssh_host.port}" in message
    transport.close()


def test_ssh_wrong_user_key_is_refused(ssh_fleet: SSHFleet, tmp_path: Path) -> None:
    wrong = generate_key(tmp_path / "wrong_ed25519")
    with pytest.raises(AuthenticationError) as caught:
        ssh_fleet[0].transport(key_file=wrong).run(["true"], timeout=10)
    assert "refused" in str(caught.value) and str(wrong) in str(caught.value)


def test_ssh_rsa_user_key_works(ssh_fleet: SSHFleet, tmp_path: Path) -> None:
    rsa = tmp_path / "id_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True
    )
    host = ssh_fleet[0]
    authorized = host.dir / "authorized_keys"
    before = authorized.read_text()
    authorized.write_text(before + rsa.with_suffix(".pub").read_text())
    try:
        with host.transport(key_file=rsa) as transport:
            assert transport.run(["true"], timeout=10).exit_code == 0
    finally:
        authorized.write_text(before)


def test_ssh_host_down_is_unreachable(fresh_ssh_host: FleetHost) -> None:
    connected = fresh_ssh_host.transport()
    connected.run(["true"], timeout=10)
    fresh_ssh_host.fleet.stop(fresh_ssh_host)
    for transport in (connected, fresh_ssh_host.transport()):
        started = time.monotonic()
        with pytest.raises(HostUnreachable) as caught:
            transport.run(["true"], timeout=10)
        assert time.monotonic() - started < 2
        assert caught.value.host == "scratch-1"
        assert "refused" in str(caught.value)
        transport.close()


def test_ssh_frozen_host_fails_within_the_connect_timeout(fresh_ssh_host: FleetHost) -> None:
    fleet = fresh_ssh_host.fleet
    connected = fresh_ssh_host.transport(connect_timeout=1)
    connected.run(["true"], timeout=10)
    fleet.freeze(fresh_ssh_host)
    try:
        for transport in (connected, fresh_ssh_host.transport(connect_timeout=1)):
            started = time.monotonic()
            with pytest.raises((HostUnreachable, CommandTimeout)):
                transport.run(["true"], timeout=10)
            assert time.monotonic() - started < 2.5, "a frozen host must not hang a command"
            transport.close()
    finally:
        fleet.thaw(fresh_ssh_host)


def test_ssh_host_freezing_mid_command_times_out(
    fresh_ssh_host: FleetHost, sleeper: Callable[[], str]
) -> None:
    fleet = fresh_ssh_host.fleet
    transport = fresh_ssh_host.transport(connect_timeout=1)
    transport.run(["true"], timeout=10)
    seconds = sleeper()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(transport.run, ["sleep", seconds], timeout=2)
        time.sleep(0.5)
        fleet.freeze(fresh_ssh_host)
        try:
            started = time.monotonic()
            with pytest.raises(CommandTimeout) as caught:
                pending.result(timeout=10)
            assert time.monotonic() - started < 1.5 + 1 + 1
            assert "could not kill" in str(caught.value)
        finally:
            fleet.thaw(fresh_ssh_host)
    transport.close()


def test_ssh_host_going_down_mid_command_is_unreachable(
    fresh_ssh_host: FleetHost, sleeper: Callable[[], str]
) -> None:
    transport = fresh_ssh_host.transport()
    transport.run(["true"], timeout=10)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(transport.run, ["sleep", sleeper()], timeout=20)
        time.sleep(0.5)
        fresh_ssh_host.fleet.stop(fresh_ssh_host)
        with pytest.raises(HostUnreachable, match="lost while"):
            pending.result(timeout=10)
    transport.close()


def test_ssh_reconnects_after_sshd_restart(fresh_ssh_host: FleetHost) -> None:
    fleet = fresh_ssh_host.fleet
    with fresh_ssh_host.transport() as transport:
        assert transport.run(["true"], timeout=10).exit_code == 0
        fleet.stop(fresh_ssh_host)
        fleet.start(fresh_ssh_host)
        assert transport.run(["echo", "back"], timeout=10).text() == "back\n"
        assert transport.connect_count == 2


def test_ssh_remote_command_runs_in_its_own_process_group(ssh_fleet: SSHFleet) -> None:
    """The timeout kill relies on this: the command is the leader of its process group."""
    with ssh_fleet[0].transport() as transport:
        result = transport.run(["sh", "-c", "ps -o pid=,pgid= -p $$"], timeout=10)
    pid, pgid = result.text().split()
    assert pid == pgid


def _names(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id, node.lineno
        elif isinstance(node, ast.Attribute):
            yield node.attr, node.lineno
        elif isinstance(node, ast.alias):
            yield node.name, node.lineno


def test_no_trust_on_first_use_anywhere_in_the_package() -> None:
    """No code in reconciler/ names paramiko's accept-any-key policies (prose may)."""
    for source in (REPO / "reconciler").rglob("*.py"):
        for name, line in _names(ast.parse(source.read_text())):
            assert name not in {"AutoAddPolicy", "WarningPolicy"}, f"{source}:{line}: {name}"


# --- local only ------------------------------------------------------------------------------


def test_local_environment_is_built_not_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROLLER_SECRET_TOKEN", "s3cret")
    transport = LocalTransport("local-1", home=tmp_path, base_env={"REGISTRY": "http://x"})
    env = transport.run(["env"], timeout=10).text()
    assert "CONTROLLER_SECRET_TOKEN" not in env
    assert f"HOME={tmp_path}\n" in env and "REGISTRY=http://x\n" in env


def test_local_not_executable_is_exit_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result = LocalTransport("local-1", home=tmp_path).run([str(script)], timeout=10)
    assert result.exit_code == 126


def test_local_missing_interpreter_is_exit_127_not_missing_binary(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    result = LocalTransport("local-1", home=tmp_path).run([str(script)], timeout=10)
    assert result.exit_code == 127 and b"interpreter" in result.stderr
