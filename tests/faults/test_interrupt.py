"""The reconciler stopped in the middle of a remote command: the command must not go on alone.

Closing an SSH channel does not stop the remote process (no pty, so no SIGHUP), and a local
command runs in its own session: a reconciler stopped mid-`npm install` would leave the install
running, racing the next run's. A real SIGTERM is sent to this very process while a transport
runs a command, with the handler a service would install (SIGTERM -> SystemExit); the
transports kill the command in hand on the way out.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.local import LocalTransport
from reconciler.sandbox.sshfleet import SSHFleet
from reconciler.transport import Transport
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


def test_sigterm_during_a_command_kills_the_command(transport: Transport) -> None:
    marker = f"{30 + secrets.randbelow(10**6) / 10**6:.6f}"

    def stop_me() -> None:
        wait_until(lambda: bool(running(marker)), timeout=20, what="the command")
        # While it runs, not in the instant it starts: a signal inside Popen (before it returns
        # the process) or before the SSH command printed its PID cannot be traced to the
        # command; that window is a few milliseconds, a step runs for seconds.
        time.sleep(0.5)
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
