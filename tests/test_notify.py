"""Broadcasts over real HTTP: signed, retried with backoff, never blocking the caller."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time

from reconciler.rollout.events import Event
from reconciler.serve.notify import SIGNATURE_HEADER, Broadcaster, SlackSink, WebhookSink
from tests.fixtures.webhook import Receiver


def event(kind: str = "failure") -> Event:
    return Event(
        kind=kind,  # type: ignore[arg-type]
        fleet="studio",
        message="mac-2: red after upgrade",
        host="mac-2",
        versions={"openclaw": "2026.4.3"},
        finding="config.schema.invalid (error): bad config",
        spec_commit="a" * 40,
        at="2026-11-24T10:00:00Z",
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_is_signed_and_carries_the_failure(webhook: Receiver) -> None:
    b = Broadcaster([WebhookSink(webhook.url, b"secret", ["failure"])], backoff_s=0.01)
    b.notify(event())
    assert b.flush(10)
    (delivery,) = webhook.deliveries
    expected = "sha256=" + hmac.new(b"secret", delivery["body"], hashlib.sha256).hexdigest()
    assert delivery["headers"][SIGNATURE_HEADER] == expected
    assert delivery["json"]["host"] == "mac-2" and delivery["json"]["finding"].startswith("config")
    assert b"secret" not in delivery["body"]


def test_a_receiver_that_fails_is_retried_until_it_answers(webhook: Receiver) -> None:
    webhook.fail_next = 2
    b = Broadcaster([WebhookSink(webhook.url, None, ["failure"])], backoff_s=0.01)
    b.notify(event())
    assert b.flush(10)
    assert len(webhook.deliveries) == 1 and not b.undelivered


def test_a_receiver_that_is_down_never_blocks_and_is_recorded() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    b = Broadcaster([WebhookSink(url, None, ["failure"])], attempts=3, backoff_s=0.05)
    started = time.monotonic()
    b.notify(event())
    assert time.monotonic() - started < 0.05, "notify waited for the delivery"
    assert b.flush(10)
    ((sink, ev, error),) = b.undelivered
    assert sink == "webhook" and ev.host == "mac-2" and "Connection refused" in error


def test_events_are_filtered_per_sink_and_slack_gets_text(webhook: Receiver) -> None:
    b = Broadcaster([SlackSink(webhook.url, ["failure"])], backoff_s=0.01)
    b.notify(event("success"))
    b.notify(event("failure"))
    assert b.flush(10)
    (delivery,) = webhook.deliveries
    text = delivery["json"]["text"]
    assert "studio" in text and "config.schema.invalid" in text
