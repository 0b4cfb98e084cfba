"""Failure broadcasts: a signed JSON webhook and a Slack-compatible webhook.

A broadcast must never block a restore: `Broadcaster.notify` only queues the event; a worker
thread delivers it with retries and backoff, and what could not be delivered is kept (and
reported by `flush`) instead of being lost. The worker survives any error of a delivery: one
bad target must not silence the broadcasts after it.

Secrets (webhook secrets, URLs with tokens) come from the environment or files and never appear
in an event, a log line or a repr. A Slack or webhook URL is a secret as a whole (its path is
the token), so it is never printed, not even inside an error from urllib: a target is named by
its type and the variable it came from. A URL read from the environment is checked when the
sinks are built, as the spec's own `url` is when the spec is validated.

A fleet's `commitStatus` is one more sink: the outcome of a rollout posted on the spec commit it
applied, through the forge's API (reconciler.forge.client). Its token comes from the
environment or a file too; when there is none, the sink is left out with a warning naming the
variable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reconciler import redact
from reconciler.desired.spec import URL, Fleet, Notification, seconds
from reconciler.errors import TemporaryError
from reconciler.forge.client import ForgeClient, ForgeInputError, Outcome, read_token
from reconciler.rollout.events import Event, Notifier

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Reconciler-Signature-256"


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

    url: str = field(repr=False)
    secret: bytes | None = field(repr=False)
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

    url: str = field(repr=False)
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


@dataclass
class CommitStatusSink:
    """A rollout's outcome as a commit status on the spec commit it applied; each request is
    bounded by the spec's own `timeout` (in the client), not the broadcaster's."""

    client: ForgeClient
    context: str
    target_url: str | None = None
    events: Sequence[str] = ("success", "failure", "gate")
    name: str = "commit-status"

    def deliver(self, event: Event, timeout: float) -> None:
        status = commit_status(event)
        if status is None or event.spec_commit is None:
            return
        outcome, description = status
        self.client.post_status(
            event.spec_commit, outcome, description, self.context, self.target_url
        )


def commit_status(event: Event) -> tuple[Outcome, str] | None:
    """The outcome and description an event posts on its spec commit; None when it posts
    nothing (no spec commit, or a kind that says nothing of the rollout's outcome)."""
    if event.spec_commit is None:
        return None
    if event.kind == "success":
        return "success", event.message
    if event.kind == "failure":  # Failed: the rollout went red; else the spec was refused
        return ("failure" if event.phase == "Failed" else "error"), event.message
    if event.kind == "gate":
        return "pending", f"held: {event.message}"
    return None


def commit_status_sink(fleet: Fleet) -> CommitStatusSink | None:
    """The sink of `fleet.commitStatus`, or None (not set, or no token: logged, never
    raised, so a missing token never stops a rollout)."""
    cs = fleet.commit_status
    if cs is None:
        return None
    try:
        token = read_token(env=cs.token_env, file=cs.token_file)
        client = ForgeClient(cs.forge, cs.api, cs.repository, token, seconds(cs.timeout))
    except ForgeInputError as exc:
        log.warning("commitStatus on %s: %s; skipped", cs.forge, exc)
        return None
    context = cs.context or f"openclaw-reconciler/{fleet.name}"
    return CommitStatusSink(client, context, cs.target_url, name=f"commit-status {cs.forge}")


def sinks_for_fleet(fleet: Fleet) -> list[Sink]:
    """Every sink a fleet's spec names: its notifications, then its commit status."""
    sinks = sinks_from_spec(fleet.notifications)
    status = commit_status_sink(fleet)
    return [*sinks, status] if status is not None else sinks


MAX_URL = 2048


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a broadcast target (the spec's URL rule: http or https, a host, no
    spaces or quotes), without quoting it; None when it can."""
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    if not re.match(URL, url):
        return "not an http:// or https:// URL with a host (and no spaces or quotes)"
    return None


def _env_url(n: Notification) -> str | None:
    """The URL a notification reads from its `urlEnv`, when set and valid; else None, with an
    error that names the variable and never its value."""
    value = os.environ.get(n.url_env or "", "")
    if not value:
        log.warning("notification %s: %s is not set; skipped", n.type, n.url_env)
        return None
    problem = url_problem(value)
    if problem is not None:
        log.error("notification %s: %s is %s; skipped", n.type, n.url_env, problem)
        return None
    return value


def sinks_from_spec(notifications: Sequence[Notification]) -> list[Sink]:
    """Build sinks, reading URLs and secrets from the environment or files named in the spec."""
    sinks: list[Sink] = []
    for n in notifications:
        url = n.url or _env_url(n)
        if not url:
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
            except Exception as exc:  # the worker outlives any one delivery
                log.error("broadcast to %s: %s", sink.name, _described(exc, sink))
            finally:
                self._queue.task_done()

    def _deliver(self, sink: Sink, event: Event) -> None:
        error = ""
        for attempt in range(self.attempts):
            try:
                sink.deliver(event, self.timeout_s)
            except Exception as exc:
                error = _described(exc, sink)
                log.warning(
                    "broadcast to %s failed (attempt %d): %s", sink.name, attempt + 1, error
                )
                if not isinstance(exc, OSError | TemporaryError):  # a bad target: no retry
                    break
                time.sleep(self.backoff_s * 2**attempt)
                continue
            self.delivered.append((sink.name, event))
            return
        log.warning(
            "broadcast to %s undelivered (%s of spec %s): %s",
            sink.name, event.kind, (event.spec_commit or "-")[:12], error,
        )  # fmt: skip
        self.undelivered.append((sink.name, event, error))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait for queued deliveries (bounded); True when the queue emptied in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks


def _described(exc: BaseException, sink: Sink) -> str:
    """The error's type and words, with the sink's URL (a secret) and any userinfo hidden."""
    words = str(getattr(exc, "reason", None) or exc)
    return f"{type(exc).__name__}: {redact.text(words, getattr(sink, 'url', ''))}"


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
