"""The limits that keep the daemon's HTTP listener answering when clients misbehave.

The standard library's `ThreadingHTTPServer` starts one thread per connection, with no cap,
times out each read separately (a client sending a byte every few seconds keeps a request open
as long as it likes), and listens with a backlog of 5 (a burst of pushes from a forge is reset
by the kernel before the server sees it). Each of these was shown to hold, see issue 15; here is
what replaces them:

- `Slots`: at most `max_connections` connections are handled at once. A connection beyond that
  waits, accepted, until a slot frees (each slot frees at the latest at the deadline below);
  one that waits longer than a whole request may take is answered 503 without a thread.
- `DeadlineReader`: every read of a request is bounded by what is left of ONE deadline for the
  whole request (request line, headers and body), not by a timeout per read.
- `ByteBudget`: the bytes held in memory for bodies that are not yet authenticated, summed
  over all connections, are bounded; a body that does not fit is refused before it is read.
- `LISTEN_BACKLOG`: the kernel queues this many connections while every slot is busy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
"""Connections the kernel queues before it resets new ones (it caps this at somaxconn)."""
MAX_CONNECTIONS = 32
MAX_UNVERIFIED_BYTES = 16 * 1024 * 1024
"""Memory for bodies read before their signature is checked, over all connections."""
_BUSY_BODY = b'{"error": "too many connections"}\n'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _BUSY_BODY
)


class Slots:
    """A counted set of connection slots that can be waited for, and read (`in_use`, `peak`)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"need at least one connection slot, got {size}")
        self.size = size
        self.in_use = 0
        self.peak = 0
        self._free = threading.Condition()

    def acquire(self, timeout: float, stopping: threading.Event) -> bool:
        """Take a slot, waiting at most `timeout` seconds (less when `stopping` is set)."""
        deadline = time.monotonic() + timeout
        with self._free:
            while self.in_use >= self.size:
                left = deadline - time.monotonic()
                if left <= 0 or stopping.is_set():
                    return False
                self._free.wait(min(left, 0.1))
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
            return True

    def release(self) -> None:
        with self._free:
            self.in_use -= 1
            self._free.notify()


class ByteBudget:
    """Bytes reserved for unauthenticated bodies, over all connections; never above `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.in_use + n > self.size:
                return False
            self.in_use += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.in_use -= n


class DeadlineReader(io.RawIOBase):
    """The connection's reads, each bounded by what is left until `deadline` (monotonic)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took longer than its deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def deadline_reader(sock: socket.socket, seconds: float) -> io.BufferedReader:
    """A buffered reader of `sock` for one request that must be read within `seconds`."""
    return io.BufferedReader(DeadlineReader(sock, time.monotonic() + seconds))


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a connection cap, a deep listen backlog, and quiet errors.

    `max_connections` caps the handler threads; `wait_s` is how long an accepted connection may
    wait for a slot (the whole-request deadline: by then some slot has freed); `stopping`, set
    before `shutdown()`, cuts that wait short."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self, address: tuple[str, int], handler: Any, *, max_connections: int, wait_s: float
    ) -> None:
        self.slots = Slots(max_connections)
        self.wait_s = wait_s
        self.stopping = threading.Event()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(self.wait_s, self.stopping):
            self._busy(request)
            return
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), name="http-conn", daemon=True
        )
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _busy(self, request: socket.socket) -> None:
        log.warning("all %d connection slots stayed busy: answered 503", self.slots.size)
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(_BUSY)
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)
