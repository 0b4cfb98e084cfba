"""The reconciler stopped in the middle of a remote command: the command must not go on alone.

Closing an SSH channel does not stop the remote process (no pty, so no SIGHUP), and a local
command runs in its own session: a reconciler stopped mid-`npm install` would leave the install
running, racing the next run's. A real SIGTERM is sent to this very process while a transport
runs a command, with the handler a service would install (SIGTERM -> SystemExit); the
transports kill the command in hand on the way out.

When the signal lands is not left to timing: it is sent once the command runs on the host AND
the transport is collecting its output (seen in the main thread's stack), or, over SSH, once
the command runs while the transport is held just before it would read the command's PID line.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from reconciler.hosts.local import LocalTransport
from reconciler.hosts.transport import Transport
from reconciler.sandbox.sshfleet import SSHFleet
from tests.faults.conftest import wait_until


def running(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[:2] == [b"sleep", marker.encode()]:
                found.append(int(proc.name))
    return found


@pytest.fixture(params=["ssh", "local"])
def transport(
    request: pytest.FixtureRequest, ssh_fleet: SSHFleet, tmp_path: Path
) -> Iterator[Transport]:
    made: Transport = (
        ssh_fleet[0].transport()
        if request.param == "ssh"
        else LocalTransport("local-1", home=tmp_path)
    )
    try:
        yield made
    finally:
        made.close()


def main_thread_in(function: str, module: str) -> bool:
    """Is the main thread (where signal handlers run) inside `module.function` right now?"""
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    while frame is not None:
        if frame.f_code.co_name == function and frame.f_globals.get("__name__") == module:
            return True
        frame = frame.f_back
    return False


def marker_seconds() -> str:
    return f"{30 + secrets.randbelow(10**6) / 10**6:.6f}"


def test_sigterm_during_a_command_kills_the_command(transport: Transport) -> None:
    marker = marker_seconds()
    module = type(transport).__module__

    def stop_me() -> None:
        # While it runs, not in the instant it starts: the command is on the host, and the
        # transport holds it (it is collecting the output: Popen has returned the process, the
        # exec request has been answered).
        wait_until(
            lambda: bool(running(marker)) and main_thread_in("_collect", module),
            timeout=20,
            what="the command, in the transport's hands",
        )
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    killer = threading.Thread(target=stop_me, daemon=True)
    try:
        killer.start()
        with pytest.raises(SystemExit):
            transport.run(["sleep", marker], timeout=60)
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join(5)
    wait_until(lambda: not running(marker), timeout=10, what="the command to be gone")


def test_sigterm_before_the_pid_line_is_read_still_kills_the_command(ssh_fleet: SSHFleet) -> None:
    """The signal lands once the command runs on the host but before the SSH transport has
    read the line with its PID (held at the call that would read it): the transport reads on
    for that line, then kills the command."""
    marker = marker_seconds()
    seen: list[object] = []

    def at_pump(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or frame.f_code.co_name != "_pump":
            return
        if frame.f_globals.get("__name__") != "reconciler.hosts.ssh":
            return
        sys.setprofile(None)
        wait_until(lambda: bool(running(marker)), timeout=20, what="the command")
        seen.append(frame.f_locals["out"].pid)  # the PID line: not read yet
        # Delivered and handled at once: SystemExit comes out of this very call of _pump.
        signal.raise_signal(signal.SIGTERM)

    transport = ssh_fleet[0].transport()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        sys.setprofile(at_pump)
        with pytest.raises(SystemExit):
            transport.run(["sleep", marker], timeout=60)
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGTERM, previous)
        transport.close()
    assert seen == [None], seen
    wait_until(lambda: not running(marker), timeout=10, what="the command to be gone")
