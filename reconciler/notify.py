"""Failure broadcasts: a signed JSON webhook and a Slack-compatible webhook.

A broadcast must never block a restore: `Broadcaster.notify` only queues the event; a worker
thread delivers it with retries and backoff, and what could not be delivered is kept (and
reported by `flush`) instead of being lost. Secrets (webhook secrets, URLs with tokens) come
from the environment or files and never appear in an event or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from reconciler.spec import Model, Notification

log = logging.getLogger(__name__)
EventKind = Literal["failure", "success", "drift", "gate"]
SIGNATURE_HEADER = "X-Reconciler-Signature-256"


class Event(Model):
    """What a broadcast carries."""

    kind: EventKind
    fleet: str
    message: str
    host: str | None = None
    phase: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    finding: str | None = Field(None, description="the first failing doctor finding")
    spec_commit: str | None = None
    status_commit: str | None = None
    at: str


class Notifier(Protocol):
    def notify(self, event: Event) -> None: ...


class Sink(Protocol):
    """One delivery target."""

    name: str
    events: Sequence[str]

    def deliver(self, event: Event, timeout: float) -> None: ...


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        if response.status >= 300:
            raise urllib.error.HTTPError(
                url, response.status, "unexpected status", response.headers, None
            )


def sign(secret: bytes, body: bytes) -> str:
    """`sha256=<hex>`: the GitHub-style HMAC signature of a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass
class WebhookSink:
    """A generic JSON webhook; the body is HMAC-SHA256 signed when a secret is configured."""

    url: str
    secret: bytes | None
    events: Sequence[str]
    name: str = "webhook"

    def deliver(self, event: Event, timeout: float) -> None:
        body = json.dumps(event.dump(), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "openclaw-reconciler"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        _post(self.url, body, headers, timeout)


@dataclass
class SlackSink:
    """A Slack-compatible incoming webhook (`{"text": ...}`)."""

    url: str
    events: Sequence[str]
    name: str = "slack"

    def deliver(self, event: Event, timeout: float) -> None:
        icon = {"failure": ":red_circle:", "success": ":white_check_mark:"}.get(
            event.kind, ":warning:"
        )
        lines = [f"{icon} *{event.fleet}* {event.message}"]
        if event.finding:
            lines.append(f"first failing finding: `{event.finding}`")
        if event.spec_commit:
            lines.append(
                f"spec {event.spec_commit[:12]}"
                + (f", status {event.status_commit[:12]}" if event.status_commit else "")
            )
        body = json.dumps({"text": "\n".join(lines)}).encode()
        _post(self.url, body, {"Content-Type": "application/json"}, timeout)


def sinks_from_spec(notifications: Sequence[Notification]) -> list[Sink]:
    """Build sinks, reading URLs and secrets from the environment or files named in the spec."""
    sinks: list[Sink] = []
    for n in notifications:
        url = n.url or os.environ.get(n.url_env or "", "")
        if not url:
            log.warning("notification %s: %s is not set; skipped", n.type, n.url_env)
            continue
        if n.type == "slack":
            sinks.append(SlackSink(url=url, events=n.events))
            continue
        secret = None
        if n.secret_env:
            secret = os.environ.get(n.secret_env, "").encode() or None
        elif n.secret_file:
            secret = Path(n.secret_file).expanduser().read_bytes().strip()
        sinks.append(WebhookSink(url=url, secret=secret, events=n.events))
    return sinks


@dataclass
class Broadcaster:
    """Queues events and delivers them in the background with retries and backoff."""

    sinks: list[Sink]
    attempts: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 5.0
    delivered: list[tuple[str, Event]] = field(default_factory=list)
    undelivered: list[tuple[str, Event, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: queue.Queue[tuple[Sink, Event]] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="broadcaster", daemon=True)
        self._worker.start()

    def notify(self, event: Event) -> None:
        for sink in self.sinks:
            if event.kind in sink.events:
                self._queue.put((sink, event))

    def _run(self) -> None:
        while True:
            sink, event = self._queue.get()
            try:
                self._deliver(sink, event)
            finally:
                self._queue.task_done()

    def _deliver(self, sink: Sink, event: Event) -> None:
        error = ""
        for attempt in range(self.attempts):
            try:
                sink.deliver(event, self.timeout_s)
            except (OSError, urllib.error.URLError) as exc:
                error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                log.warning(
                    "broadcast to %s failed (attempt %d): %s", sink.name, attempt + 1, error
                )
                time.sleep(self.backoff_s * 2**attempt)
                continue
            self.delivered.append((sink.name, event))
            return
        self.undelivered.append((sink.name, event, error))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait for queued deliveries (bounded); True when the queue emptied in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks


class Recorder:
    """A notifier that keeps events in memory (the CLI's local log, and tests' extra eye)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)


@dataclass
class Fanout:
    """Send every event to several notifiers."""

    notifiers: list[Notifier]

    def notify(self, event: Event) -> None:
        for n in self.notifiers:
            n.notify(event)
