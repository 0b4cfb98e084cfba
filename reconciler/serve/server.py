"""The daemon's one small HTTP server: git webhooks, metrics, health and the readiness URL.

One listener (default loopback) for everything a service manager, Prometheus, a load balancer
or a git forge needs from the daemon:

- `POST /hooks/git`: a verified push (reconciler.serve.webhooks) asks the daemon, through `trigger`,
  for an immediate pass of the fleets watching that branch; 202 with the fleets triggered.
- `GET /metrics`: the Metrics registry in Prometheus text format.
- `GET /healthz`: 200 while the server answers.
- `GET /`: the fleet page (reconciler.views.page), read-only, built from the status branch; with
  `?part=main` only its `<main>`, which the page fetches every few seconds to follow a
  rollout. An optional bearer token guards it (and nothing else: a load balancer's health
  check must reach the readiness URL without one). Its Content-Security-Policy lets it reach
  nothing but this server.
- `GET /fleets/<fleet>/readiness`: the runbook's "one readiness URL": every host's merged
  readiness with its fingerprint and readiness_sha256, whether peers agree, and one digest for
  the fleet; 503 when peers disagree or any host is red or unobserved, so a load balancer or a
  peer reconciler can consult it as a health check.

Standard library only (`ThreadingHTTPServer` in a thread): the endpoints are tiny, and the
daemon's work happens in its scheduler, never in a request. A misbehaving client cannot take
the listener down (reconciler.serve.httplimits): each request has one deadline for the whole of it,
connections are capped (more wait in a deep listen backlog), and what the headers prove forged
is refused before a byte of its body is read, while bodies read before their signature is
checked share one memory budget. Every handler answers its own errors with a short message (the
traceback goes to the log, never to the client). Secrets are never logged or echoed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from reconciler.canonical import sha256_of
from reconciler.desired.spec import NAME
from reconciler.record.status import FleetStatus
from reconciler.serve import httplimits, webhooks
from reconciler.serve.metrics import Metrics
from reconciler.views.page import FleetPage, render_main, render_page
from reconciler.views.report import status_doc

log = logging.getLogger(__name__)

Trigger = Callable[[str, tuple[str, ...]], Sequence[str]]
"""(branch, repository_urls) -> the fleets for which an immediate pass was scheduled."""
ReadinessSource = Callable[[str], FleetStatus | None]
"""fleet -> its status as last read from the status branch; None for a fleet not served."""
PageSource = Callable[[], Sequence[FleetPage]]
"""The fleets the page shows, each read fresh from its status branch."""

READINESS_PATH = re.compile(r"^/fleets/([^/]+)/readiness/?$")
FLEET_NAME = re.compile(NAME)
JSON_TYPE = "application/json"


# --- the readiness URL --------------------------------------------------------------------------


def fleet_readiness(status: FleetStatus) -> dict[str, Any]:
    """The merged readiness of a fleet: status_doc, plus every host's full readiness document,
    the agreement verdict and `fleetReadinessSha256` (sha256 of the canonical JSON of the
    sorted host readiness_sha256 values)."""
    doc = status_doc(status)
    golden = doc["goldenFingerprint"]
    for host in doc["hosts"]:
        node = status.nodes.get(host["host"])
        host["readinessSha256"] = node.readiness_sha256 if node else None
        host["readiness"] = node.dump() if node else None
    observed = [h for h in doc["hosts"] if h["readiness"] is not None]
    fingerprints = [h["fingerprint"] for h in observed]
    missing = [h["host"] for h in doc["hosts"] if h["readiness"] is None]
    red = [h["host"] for h in observed if h["green"] is False]
    if golden is not None:  # the first host upgraded in this rollout sets the standard
        agree = all(fp == golden for fp in fingerprints)
    else:
        agree = len(set(fingerprints)) <= 1
    digests = sorted(h["readinessSha256"] for h in doc["hosts"] if h["readinessSha256"])
    ready = bool(doc["hosts"]) and agree and not red and not missing
    return {
        **doc,
        "agree": agree,
        "green": not red and not missing,
        "ready": ready,
        "red": red,
        "unobserved": missing,
        "fingerprints": sorted(set(fingerprints)),
        "fleetReadinessSha256": sha256_of(digests),
    }


def _provider_label(headers: Mapping[str, str]) -> str:
    try:
        return webhooks.detect(headers)
    except webhooks.Rejected:
        return "unknown"


# --- the server ---------------------------------------------------------------------------------


class _HTTPServer(httplimits.BoundedHTTPServer):
    app: Server


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class Server:
    """`start()` binds and serves in a thread; `stop()` shuts down; `.port` is the bound port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secrets: Mapping[str, bytes],
        trigger: Trigger,
        readiness: ReadinessSource,
        metrics: Metrics,
        max_body: int = webhooks.MAX_BODY_BYTES,
        request_timeout: float = 10.0,
        replay: webhooks.ReplayGuard | None = None,
        remote: str | None = None,
        max_connections: int = httplimits.MAX_CONNECTIONS,
        max_unverified_bytes: int = httplimits.MAX_UNVERIFIED_BYTES,
        page: PageSource | None = None,
        page_token: bytes | None = None,
    ) -> None:
        """`request_timeout` bounds a whole request, from its first byte to its last; `remote`
        is the watched repository (a push of another one is ignored; None: any repository)."""
        self.host = host
        self._requested_port = port
        self.secrets = dict(secrets)
        self.trigger = trigger
        self.readiness = readiness
        self.metrics = metrics
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.replay = replay or webhooks.ReplayGuard()
        self.remote = remote
        self.max_connections = max_connections
        self.unverified = httplimits.ByteBudget(max(max_unverified_bytes, max_body))
        self.page = page
        self.page_token = page_token
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never the secrets
        return f"Server({self.host!r}, {self.port}, providers={sorted(self.secrets)})"

    @property
    def port(self) -> int:
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    @property
    def connections(self) -> int:
        """Connections being handled now (never more than `max_connections`)."""
        return self._httpd.slots.in_use if self._httpd is not None else 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Server:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"timeout": self.request_timeout})
        server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
        httpd = server_class(
            (self.host, self._requested_port),
            handler,
            max_connections=self.max_connections,
            wait_s=self.request_timeout,
        )
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="http", daemon=True
        )
        self._thread.start()
        log.info("serving on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout)
        self._httpd = self._thread = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the Server in `self.server.app`; each route answers its own errors."""

    server: _HTTPServer
    server_version = "openclaw-reconciler"
    sys_version = ""

    @property
    def app(self) -> Server:
        return self.server.app

    def setup(self) -> None:
        """The connection's reads share one deadline: the whole request, not each read."""
        self.body_unread = True
        super().setup()
        self.rfile.close()
        self.rfile = httplimits.deadline_reader(self.connection, self.app.request_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- dispatch ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/" and self.app.page is not None:
            self._guarded(self._page)
        elif path == "/healthz":
            self._guarded(self._healthz)
        elif path == "/metrics":
            self._guarded(self._metrics)
        elif match := READINESS_PATH.match(path):
            self._guarded(lambda: self._readiness(match.group(1)))
        elif path == "/hooks/git":
            self._send_json(405, {"error": "use POST"}, {"Allow": "POST"})
        else:
            self._send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] == "/hooks/git":
            self._guarded(self._hook)
        else:
            self._drain_and_answer(404, {"error": "not found"})

    def _guarded(self, route: Callable[[], None]) -> None:
        try:
            route()
        except Exception:
            log.exception("%s %s failed", self.command, self.path.split("?", 1)[0])
            self._send_json(500, {"error": "internal error"})

    # --- routes ------------------------------------------------------------------------------

    def _healthz(self) -> None:
        self._send_json(200, {"ok": True})

    def _page(self) -> None:
        token = self.app.page_token
        if token is not None and not _bearer_matches(self.headers.get("Authorization"), token):
            self._send(401, b"a bearer token is required\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Bearer realm="openclaw-reconciler"'})  # fmt: skip
            return
        assert self.app.page is not None
        pages = self.app.page()
        query = self.path.partition("?")[2]
        html = render_main(pages) if query == "part=main" else render_page(pages, live=True)
        headers = {"Content-Security-Policy": page_policy(html)}
        self._send(200, html.encode(), "text/html; charset=utf-8", headers)

    def _metrics(self) -> None:
        body, content_type = self.app.metrics.render()
        self._send(200, body, content_type)

    def _readiness(self, fleet: str) -> None:
        status = self.app.readiness(fleet) if FLEET_NAME.match(fleet) else None
        if status is None:
            self._send_json(404, {"error": f"unknown fleet {fleet[:63]!r}"})
            return
        doc = fleet_readiness(status)
        self._send_json(200 if doc["ready"] else 503, doc)

    def _hook(self) -> None:
        headers = webhooks.lower_headers(self.headers)
        try:
            self._refuse_from_headers(headers)
            with self._unverified_body() as body:
                event = webhooks.verify(
                    headers, body, self.app.secrets, self.app.replay, max_body=self.app.max_body
                )
            if self.app.remote is not None:
                webhooks.check_repository(event, self.app.remote)
        except webhooks.Rejected as exc:
            self._rejected(_provider_label(headers), exc)
            return
        self._triggered(event, body)

    def _triggered(self, event: webhooks.PushEvent, body: bytes) -> None:
        try:
            fleets = list(self.app.trigger(event.branch, event.repository_urls))
        except Exception:
            # Not delivered after all: let the forge's redelivery through.
            self.app.replay.forget(webhooks.replay_keys(event.provider, event.delivery_id, body))
            self.app.metrics.observe_webhook(event.provider, 500)
            raise
        log.info(
            "%s push to %s at %s (delivery %s): triggered %s",
            event.provider,
            event.branch,
            event.after[:12],
            event.delivery_id,
            ", ".join(fleets) or "no fleet",
        )
        self.app.metrics.observe_webhook(event.provider, 202)
        doc = {"provider": event.provider, "branch": event.branch, "after": event.after}
        self._send_json(202, {**doc, "triggered": fleets})

    def _refuse_from_headers(self, headers: Mapping[str, str]) -> None:
        """Refuse what the headers alone refuse, before a byte of the body is read."""
        provider = webhooks.check_envelope(headers, self._length(), self.app.max_body)
        webhooks.authenticate_headers(provider, headers, self.app.secrets)

    def _rejected(self, provider: str, exc: webhooks.Rejected) -> None:
        level = logging.INFO if exc.status == 202 else logging.WARNING
        log.log(level, "webhook from %s: %d %s", self.address_string(), exc.status, exc.reason)
        self.app.metrics.observe_webhook(provider, exc.status)
        body = {"ignored": exc.reason} if exc.status == 202 else {"error": exc.reason}
        self._send_json(exc.status, body)
        self._discard_body()

    # --- bodies ------------------------------------------------------------------------------

    def _length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            return -1

    @contextlib.contextmanager
    def _unverified_body(self) -> Iterator[bytes]:
        """The body, read within the memory budget for bodies not yet verified (503 when the
        budget is spent: other connections hold it until they are verified or time out)."""
        length = self._length() or 0
        if not self.app.unverified.reserve(length):
            raise webhooks.Rejected(503, "too many unverified bodies in flight; retry later")
        try:
            yield self._read_body(length)
        finally:
            self.app.unverified.release(length)

    def _read_body(self, length: int) -> bytes:
        self.body_unread = False
        try:
            body = self.rfile.read(length)
        except OSError:  # sent less than announced and went quiet, or past the deadline
            self.close_connection = True
            raise webhooks.Rejected(400, "body shorter than Content-Length") from None
        if len(body) != length:
            raise webhooks.Rejected(400, "body shorter than Content-Length")
        return body

    def _discard_body(self) -> None:
        """After the answer, read and drop a body that was never read, in small pieces (none
        of it is kept), so that the answer reaches a client still sending it; a body too large,
        or not sent within the request's deadline, closes the connection instead."""
        if not self.body_unread:
            return
        self.body_unread = False
        length = self._length()
        left = -1 if length is None else length  # no length: the body's end is unknown
        with contextlib.suppress(OSError):
            while 0 < left <= self.app.max_body and (chunk := self.rfile.read1(min(left, 65536))):
                left -= len(chunk)
        if left:
            self.close_connection = True

    def _drain_and_answer(self, status: int, doc: dict[str, Any]) -> None:
        self._send_json(status, doc)
        self._discard_body()

    # --- answers -----------------------------------------------------------------------------

    def _send_json(
        self, status: int, doc: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        body = (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()
        self._send(status, body, JSON_TYPE, headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.connection.settimeout(self.app.request_timeout)  # reads may have left less
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as exc:  # the client went away; nothing to answer to
            log.debug("answering %s %s: %s", self.command, self.path, exc)


def _bearer_matches(header: str | None, token: bytes) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)


NONE = "'none'"


def page_policy(html: str) -> str:
    """The page may run its own inline script (by hash) and style, and fetch only from here."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    ]
    return (
        f"default-src 'none'; script-src {' '.join(hashes) or NONE}; "
        "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
