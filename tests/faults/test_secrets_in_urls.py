"""Secrets carried by URLs never printed (issue 15, item 6).

A token in the git remote's userinfo reached the daemon's startup line and every
`RemoteUnavailable`; a Slack URL read from the environment was never checked, and the bad one
killed the broadcaster thread, whose traceback printed it (the broadcasts after it were lost).

Real parts: libgit2 fetching and pushing over real sockets (a closed port, an HTTP server that
demands credentials), the real daemon as a subprocess (its log and its /metrics), broadcasts to
a real HTTP receiver. A redacted URL shows `***` where its userinfo was.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler import redact
from reconciler.desired.spec import Notification
from reconciler.record.gitstore import GitStore, RemoteUnavailable
from reconciler.rollout.events import Event
from reconciler.serve.notify import (
    Broadcaster,
    SlackSink,
    WebhookSink,
    sinks_from_spec,
    url_problem,
)
from tests.faults.test_http_limits import wait_until
from tests.fixtures.webhook import Receiver

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ghp_Faults0TokenInTheRemote7c1d"
SLACK_PATH = "services/T0FAULTS/B0FAULTS/slackSecretPath9x2"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the rule ------------------------------------------------------------------------------------

REDACTED = {
    "https://x-access-token:TOKEN@git.example.com/org/fleet.git": (
        "https://***@git.example.com/org/fleet.git"
    ),
    "https://TOKEN@git.example.com/org/fleet": "https://***@git.example.com/org/fleet",
    "ssh://git:TOKEN@git.example.com:2222/org/fleet": "ssh://***@git.example.com:2222/org/fleet",
    "fetch from 'http://u:TOKEN@h/x' failed": "fetch from 'http://***@h/x' failed",
}
UNCHANGED = (
    "git@git.example.com:org/fleet.git",
    "https://git.example.com/org/fleet.git",
    "https://git.example.com/org/fleet?ref=a@b",
    "/srv/git/fleet.git",
)


@pytest.mark.parametrize("shown", list(REDACTED))
def test_userinfo_is_hidden_wherever_a_url_is_shown(shown: str) -> None:
    assert redact.url(shown) == REDACTED[shown]
    assert "TOKEN" not in redact.text(shown)


@pytest.mark.parametrize("shown", UNCHANGED)
def test_a_url_without_userinfo_is_shown_as_it_is(shown: str) -> None:
    assert redact.url(shown) == shown


# --- the git remote ------------------------------------------------------------------------------


class _AuthRequired(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def auth_required() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AuthRequired)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("where", ["a closed port", "a server that demands credentials"])
def test_remote_unavailable_never_shows_the_token_in_the_remote(
    tmp_path: Path, auth_required: int, where: str
) -> None:
    port = closed_port() if where == "a closed port" else auth_required
    store = GitStore(f"http://x-access-token:{TOKEN}@127.0.0.1:{port}/spec.git", tmp_path / "c")
    errors: list[str] = []
    attempts: list[Callable[[], object]] = [
        store.fetch,
        lambda: store.commit_status(None, {"a": b"x"}, "probe"),
    ]
    for attempt in attempts:
        with pytest.raises(RemoteUnavailable) as caught:
            attempt()
        errors.append(str(caught.value))
    for error in errors:
        assert TOKEN not in error
        assert f"http://***@127.0.0.1:{port}/spec.git" in error


def test_the_daemon_never_prints_the_token_at_startup_in_errors_or_in_metrics(
    tmp_path: Path,
) -> None:
    http_port = closed_port()
    config = tmp_path / "daemon.yaml"
    config.write_text(
        f"remote: https://oauth2:{TOKEN}@127.0.0.1:{closed_port()}/spec.git\n"
        f"fleets: [sandbox]\ncache: {tmp_path / 'cache'}\npollInterval: 60\n"
        f"http: {{bind: 127.0.0.1, port: {http_port}}}\n"
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        wait_until("the fetch error logged", lambda: b"failed to connect" in log.read_bytes())
        url = f"http://127.0.0.1:{http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            metrics = response.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    printed = log.read_text()
    assert "reconciling sandbox from https://***@127.0.0.1" in printed
    assert TOKEN not in printed
    assert TOKEN not in metrics


# --- broadcast URLs read from the environment -----------------------------------------------------

BAD_URLS = {
    "no scheme": f"hooks.example.com/{SLACK_PATH}",
    "not http": f"ftp://hooks.example.com/{SLACK_PATH}",
    "a space inside": f"https://hooks.example.com/{SLACK_PATH} x",
    "a newline inside": f"https://hooks.example.com/{SLACK_PATH}\nX-Injected: 1",
}


def notification(kind: str, env: str) -> Notification:
    return Notification.model_validate({"type": kind, "urlEnv": env, "events": ["failure"]})


@pytest.mark.parametrize("case", list(BAD_URLS))
def test_a_bad_url_from_the_environment_is_refused_at_load_by_name_not_value(
    case: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAULTS_SLACK_URL", BAD_URLS[case])
    assert sinks_from_spec([notification("slack", "FAULTS_SLACK_URL")]) == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "FAULTS_SLACK_URL" in logged
    assert SLACK_PATH not in logged


def test_a_good_url_from_the_environment_makes_a_sink_whose_repr_hides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAULTS_HOOK_URL", f"https://hooks.example.com/{SLACK_PATH}")
    monkeypatch.setenv("FAULTS_HOOK_SECRET", "hmac-secret-never-shown")
    spec = Notification.model_validate(
        {"type": "webhook", "urlEnv": "FAULTS_HOOK_URL", "secretEnv": "FAULTS_HOOK_SECRET"}
    )
    (sink,) = sinks_from_spec([spec])
    assert isinstance(sink, WebhookSink) and sink.url.endswith(SLACK_PATH)
    assert SLACK_PATH not in repr(sink) and "hmac-secret" not in repr(sink)


def event(message: str) -> Event:
    return Event(kind="failure", fleet="sandbox", message=message, at="2026-11-24T10:00:00Z")


class _Exploding:
    """A sink whose delivery raises an error that quotes its URL (as urllib's do)."""

    name = "exploding"
    events = ("failure",)
    url = f"https://hooks.example.com/{SLACK_PATH}"

    def deliver(self, event: Event, timeout: float) -> None:
        raise RuntimeError(f"cannot post to {self.url}")


@pytest.mark.parametrize(
    "bad",
    [SlackSink(url=BAD_URLS["no scheme"], events=["failure"]), _Exploding()],
    ids=["a URL without a scheme", "an error that quotes the URL"],
)
def test_the_broadcaster_survives_a_failing_sink_and_never_prints_its_url(
    webhook: Receiver,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    bad: object,
) -> None:
    crashed: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, crashed.append
    try:
        good = WebhookSink(webhook.url, None, ["failure"])
        broadcaster = Broadcaster([bad, good], backoff_s=0.01)  # type: ignore[list-item]
        for n in range(3):
            broadcaster.notify(event(f"failure {n}"))
            assert broadcaster.flush(30)
    finally:
        threading.excepthook = previous
    assert crashed == []
    assert [d["message"] for d in webhook.bodies()] == ["failure 0", "failure 1", "failure 2"]
    assert len(broadcaster.undelivered) == 3
    shown = "\n".join(
        [*(r.getMessage() for r in caplog.records), *(e for _, _, e in broadcaster.undelivered)]
    )
    out, err = capfd.readouterr()
    for text in (shown, out, err):
        assert SLACK_PATH not in text


def test_the_rule_for_a_url_from_the_environment_is_the_specs_own() -> None:
    assert url_problem(f"https://hooks.example.com/{SLACK_PATH}") is None
    assert all(url_problem(v) for v in BAD_URLS.values())
    assert url_problem("https://hooks.example.com/" + "a" * 3000) is not None
