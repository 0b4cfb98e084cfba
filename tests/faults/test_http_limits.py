"""The daemon's HTTP listener against clients that misbehave on purpose (issue 15, item 4).

Each case runs a real Server on a loopback port and talks to it over raw sockets: a client
that sends a byte at a time, connections that open and never finish, bodies announced and never
sent, and a burst of valid signed pushes. Nothing here asserts a duration: a deadline is shown
by the server answering (or closing) while the request is still incomplete, a cap by the
server's own count of the connections it handles, and memory by its budget's count.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from reconciler.serve.metrics import Metrics
from reconciler.serve.notify import sign
from reconciler.serve.server import Server
from tests.test_server import SECRETS, payload

DRIP_S = 0.05
"""The pause between two bytes of a client that sends a byte at a time."""


@dataclass
class Listener:
    """A running Server whose trigger records each branch it is asked for (and can be held)."""

    server: Server
    calls: list[str] = field(default_factory=list)
    hold: threading.Event | None = None

    @classmethod
    def start(cls, **options: object) -> Listener:
        listener: Listener
        server = Server(
            "127.0.0.1",
            0,
            secrets=SECRETS,
            trigger=lambda branch, urls: listener.trigger(branch, urls),
            readiness=lambda fleet: None,
            metrics=Metrics(),
            **options,  # type: ignore[arg-type]
        )
        listener = cls(server)
        server.start()
        return listener

    def trigger(self, branch: str, urls: tuple[str, ...]) -> list[str]:
        if self.hold is not None:
            self.hold.wait(60)
        self.calls.append(branch)
        return ["minis"]


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(**options: object) -> Listener:
        started.append(Listener.start(**options))
        return started[-1]

    yield start
    for listener in started:
        listener.server.stop()


def wait_until(what: str, predicate: Callable[[], bool], bound: float = 30.0) -> None:
    """Poll `predicate` (a failure only when it never holds; no duration is asserted)."""
    end = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


def signed_push(after: str | None = None) -> tuple[bytes, dict[str, str]]:
    doc = json.loads(payload("github-push.json"))
    doc["after"] = after or uuid.uuid4().hex + "0" * 8
    body = json.dumps(doc).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRETS["github"], body),
    }
    return body, headers


def head(headers: dict[str, str], length: int) -> bytes:
    lines = ["POST /hooks/git HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def answer(sock: socket.socket) -> bytes:
    """The server's whole answer (headers and the body its Content-Length announces), without
    waiting for it to close: after answering, it may still be reading a body to drop it."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while not _complete(data) and (chunk := sock.recv(65536)):
            data += chunk
    return data


def _complete(data: bytes) -> bool:
    headers, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data else 0


def post(server: Server, body: bytes, headers: dict[str, str]) -> int:
    with connect(server) as sock:
        sock.sendall(head(headers, len(body)) + body)
        return status_of(answer(sock))


def drip(sock: socket.socket, data: bytes) -> tuple[int, bytes]:
    """Send `data` a byte at a time until the server answers or closes; (bytes sent, answer)."""
    for sent, byte in enumerate(data):
        if select.select([sock], [], [], DRIP_S)[0]:
            return sent, answer(sock)
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return sent, b""
    return len(data), answer(sock)


# --- one deadline for the whole request ----------------------------------------------------------


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_request_deadline(
    listen: Callable[..., Listener],
) -> None:
    """Each byte comes well within any per-read timeout; the whole never comes in time."""
    listener = listen(request_timeout=1.0)
    body, headers = signed_push()
    request = head({**headers, "X-Padding": "p" * 400}, len(body))
    with connect(listener.server) as sock:
        sent, _ = drip(sock, request)
    assert sent < len(request), "the server waited for the whole trickle"
    assert listener.calls == []


def test_a_body_sent_a_byte_at_a_time_gets_400_before_it_is_complete(
    listen: Callable[..., Listener],
) -> None:
    listener = listen(request_timeout=1.0)
    body, headers = signed_push()
    with connect(listener.server) as sock:
        sock.sendall(head(headers, len(body)))
        sent, data = drip(sock, body)
    assert sent < len(body), "the server waited for the whole trickle"
    assert status_of(data) == 400, data[:300]
    assert listener.calls == []


# --- a cap on connections, a deep backlog ---------------------------------------------------------


def http_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "http-conn")


def test_slow_connections_never_take_more_than_the_cap_of_threads(
    listen: Callable[..., Listener],
) -> None:
    listener = listen(request_timeout=60.0, max_connections=4)
    server = listener.server
    slow = [connect(server) for _ in range(12)]
    try:
        for sock in slow:
            sock.sendall(b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        wait_until("four connections handled", lambda: server.connections == 4)
        assert http_threads() == 4
        assert server._httpd is not None and server._httpd.slots.peak == 4
    finally:
        for sock in slow:
            sock.close()
    wait_until("the slow connections gone", lambda: server.connections == 0)
    body, headers = signed_push()
    assert post(server, body, headers) == 202
    assert listener.calls == ["main"]


def test_a_connection_that_waits_longer_than_a_request_may_take_gets_503(
    listen: Callable[..., Listener],
) -> None:
    listener = listen(request_timeout=1.0, max_connections=1)
    listener.hold = threading.Event()  # the one slot is busy in the trigger
    body, headers = signed_push()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, listener.server, body, headers)
        wait_until("the first push in the trigger", lambda: listener.server.connections == 1)
        other, other_headers = signed_push()
        assert post(listener.server, other, other_headers) == 503
        listener.hold.set()
        assert first.result() == 202
    assert listener.calls == ["main"]


def test_every_valid_push_of_a_burst_of_100_sent_50_at_a_time_is_answered(
    listen: Callable[..., Listener],
) -> None:
    """With the standard library's backlog of 5, about one in five of these was reset."""
    listener = listen(request_timeout=30.0)
    pushes = [signed_push() for _ in range(100)]
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda p: post(listener.server, *p), pushes))
    assert statuses == [202] * 100
    assert len(listener.calls) == 100


# --- nothing large held before authentication ---------------------------------------------------


def _no_signature() -> dict[str, str]:
    return {"Content-Type": "application/json", "X-GitHub-Event": "push"}


PROVEN_FORGED: dict[str, Callable[[], dict[str, str]]] = {
    "github: no signature": _no_signature,
    "github: a signature that is not 64 hex digits": lambda: {
        **_no_signature(),
        "X-Hub-Signature-256": "sha256=" + "zz" * 32,
    },
    "gitea: a signature that is not 64 hex digits": lambda: {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": "0" * 63,
    },
    "gitlab: a wrong token": lambda: {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Token": "not-the-token",
    },
}


@pytest.mark.parametrize("case", list(PROVEN_FORGED))
def test_a_delivery_its_headers_prove_forged_gets_401_with_its_body_never_sent(
    listen: Callable[..., Listener], case: str
) -> None:
    """Announce the largest body allowed and send none of it: the answer comes anyway (a
    server that read the body first would wait for it, then answer 400)."""
    listener = listen(request_timeout=5.0)
    with connect(listener.server) as sock:
        sock.sendall(head(PROVEN_FORGED[case](), listener.server.max_body))
        data = answer(sock)
    assert status_of(data) == 401, data[:300]
    assert listener.server.unverified.in_use == 0


def test_bodies_not_yet_verified_share_one_memory_budget(
    listen: Callable[..., Listener],
) -> None:
    listener = listen(request_timeout=60.0, max_body=64 * 1024, max_unverified_bytes=128 * 1024)
    server = listener.server
    forged = {**_no_signature(), "X-Hub-Signature-256": "sha256=" + "ab" * 32}
    held = [connect(server) for _ in range(2)]
    try:
        for sock in held:  # half of each body, then silence: each holds its 64 KiB reserved
            sock.sendall(head(forged, 64 * 1024) + b"{" * 32 * 1024)
        wait_until("both bodies reserved", lambda: server.unverified.in_use == 128 * 1024)
        with connect(server) as third:
            third.sendall(head(forged, 64 * 1024))
            assert status_of(answer(third)) == 503
        assert server.unverified.in_use == 128 * 1024
    finally:
        for sock in held:
            sock.close()
    wait_until("the budget released", lambda: server.unverified.in_use == 0)
    body, headers = signed_push()
    assert post(server, body, headers) == 202
