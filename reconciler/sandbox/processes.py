"""Stopping the sandbox's daemons (verdaccio, HAProxy, git daemon) the same way.

Each is started in its own session, so its process group holds every child it forked (node
workers, git's per-connection children); stopping the group, not just the leader, is what
leaves no stray listener behind a test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess

KILL_GRACE_S = 5.0


def stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group, SIGKILL it if the leader is still there after `grace_s`;
    reap the leader. A group that is already gone is fine."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_GRACE_S)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
