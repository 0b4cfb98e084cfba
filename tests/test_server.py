"""The daemon's HTTP server over real HTTP: git webhooks, metrics, health, the readiness URL.

Deliveries are the providers' real payload shapes (tests/data/webhooks, after the examples in
GitHub's, Gitea's and GitLab's webhook documentation), signed the way each provider signs, and
sent over a socket to a running Server. The trigger callback stands in for the daemon's
scheduler: it records what it was asked and sets an Event, so "triggers a pass within one
second" is a wait on that Event, not a timing assertion.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.canonical import sha256_of
from reconciler.record.documents import (
    HostStatus,
    Installed,
    ProfileReadiness,
    Readiness,
    RolloutRecord,
    fingerprint_basis,
    seal_readiness,
)
from reconciler.record.status import FleetStatus
from reconciler.rollout.engine import PassResult
from reconciler.serve import webhooks
from reconciler.serve.metrics import Metrics
from reconciler.serve.notify import sign
from reconciler.serve.server import Server

DATA = Path(__file__).parent / "data" / "webhooks"
SECRETS = {
    "github": b"gh-hmac-7Qv2-never-echoed",
    "gitea": b"gitea-hmac-Zx81-never-echoed",
    "gitlab": b"gitlab-token-Pw55-never-echoed",
}
MAX_BODY = 64 * 1024
TIMEOUT = 5.0
LOCK = "a" * 64
SPEC = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"


# --- the harness ----------------------------------------------------------------------------


@dataclass
class Harness:
    server: Server
    metrics: Metrics
    statuses: dict[str, FleetStatus] = field(default_factory=dict)
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    fired: threading.Event = field(default_factory=threading.Event)
    answers: list[bytes] = field(default_factory=list)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] = {}
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.answers.append(data + str(response.headers).encode())
        return response.status, dict(response.headers), data

    def hook(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        status, _, data = self.request("POST", "/hooks/git", body, headers)
        return status, json.loads(data)


@pytest.fixture
def harness() -> Iterator[Harness]:
    metrics = Metrics()
    h: Harness

    def trigger(branch: str, urls: tuple[str, ...]) -> list[str]:
        h.calls.append((branch, urls))
        h.fired.set()
        return ["minis"] if branch == "main" else []

    server = Server(
        "127.0.0.1",
        0,
        secrets=SECRETS,
        trigger=trigger,
        readiness=lambda fleet: h.statuses.get(fleet),
        metrics=metrics,
        max_body=MAX_BODY,
        request_timeout=TIMEOUT,
    )
    h = Harness(server, metrics)
    server.start()
    try:
        yield h
    finally:
        server.stop()


# --- deliveries as each provider sends them ----------------------------------------------------


def payload(name: str) -> bytes:
    """A payload as a forge sends it: compact JSON, not our pretty file."""
    return json.dumps(json.loads((DATA / name).read_text())).encode()


def github(
    body: bytes, *, event: str = "push", secret: bytes = SECRETS["github"]
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7e36c2b",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "471031234",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": sign(secret, body),
    }


def gitea(body: bytes, *, secret: bytes = SECRETS["gitea"]) -> dict[str, str]:
    delivery = str(uuid.uuid4())
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "Go-http-client/1.1",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "X-GitHub-Event-Type": "push",
        "X-Gogs-Delivery": delivery,
        "X-Gogs-Event": "push",
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Event": "push",
        "X-Gitea-Event-Type": "push",
        "X-Gitea-Signature": signature,
        "X-Hub-Signature-256": "sha256=" + signature,
    }


def gitlab(body: bytes, *, token: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.5.0",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "X-Gitlab-Webhook-UUID": "0c5e0a5d-4e6d-4b8e-9f35-1c1c4f7c8a11",
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Token": token if token is not None else SECRETS["gitlab"].decode(),
    }


# --- webhooks ----------------------------------------------------------------------------------


def test_a_signed_github_push_triggers_a_pass_within_a_second(harness: Harness) -> None:
    body = payload("github-push.json")
    status, doc = harness.hook(body, github(body))

    assert status == 202, doc
    assert harness.fired.wait(timeout=1.0)
    assert doc == {
        "provider": "github",
        "branch": "main",
        "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "triggered": ["minis"],
    }
    ((branch, urls),) = harness.calls
    assert branch == "main"
    assert "https://github.com/example-org/openclaw-fleet.git" in urls
    assert "git@github.com:example-org/openclaw-fleet.git" in urls
    assert webhooks.same_repository("git@github.com:example-org/openclaw-fleet", urls)
    assert not webhooks.same_repository("https://github.com/example-org/other.git", urls)


def test_a_forged_signature_gets_401_and_no_pass(harness: Harness) -> None:
    body = payload("github-push.json")
    forged = github(body, secret=b"not-the-secret")
    status, doc = harness.hook(body, forged)
    assert status == 401, doc

    tampered = body.replace(b"refs/heads/main", b"refs/heads/prod")
    status, _ = harness.hook(tampered, github(body))
    assert status == 401
    assert not harness.fired.wait(timeout=0.2)
    assert harness.calls == []


def test_a_missing_signature_gets_401(harness: Harness) -> None:
    body = payload("github-push.json")
    headers = github(body)
    del headers["X-Hub-Signature-256"]  # the SHA-1 one alone is not accepted
    assert harness.hook(body, headers)[0] == 401
    headers = gitea(body)
    del headers["X-Gitea-Signature"]
    assert harness.hook(body, headers)[0] == 401
    headers = gitlab(payload("gitlab-push.json"))
    del headers["X-Gitlab-Token"]
    assert harness.hook(payload("gitlab-push.json"), headers)[0] == 401
    assert harness.calls == []


def test_gitea_push_with_its_own_signature(harness: Harness) -> None:
    body = payload("gitea-push.json")
    status, doc = harness.hook(body, gitea(body))
    assert status == 202, doc
    assert doc["provider"] == "gitea"  # not mistaken for GitHub, whose headers it also sends
    ((branch, urls),) = harness.calls
    assert branch == "main"
    assert webhooks.same_repository("https://gitea.example.com/ops/openclaw-fleet", urls)

    forged = gitea(body, secret=SECRETS["github"])
    assert harness.hook(body, forged)[0] == 401


def test_gitlab_push_with_its_token(harness: Harness) -> None:
    body = payload("gitlab-push.json")
    status, doc = harness.hook(body, gitlab(body))
    assert status == 202, doc
    assert doc["after"] == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"  # checkout_sha
    ((branch, urls),) = harness.calls
    assert branch == "main"
    assert webhooks.same_repository("git@gitlab.example.com:ops/openclaw-fleet.git", urls)

    assert harness.hook(body, gitlab(body, token="guess"))[0] == 401
    assert len(harness.calls) == 1


def test_github_form_encoded_delivery_is_verified_over_the_raw_form(harness: Harness) -> None:
    body = urllib.parse.urlencode({"payload": payload("github-push.json").decode()}).encode()
    headers = {**github(body), "Content-Type": "application/x-www-form-urlencoded"}
    status, doc = harness.hook(body, headers)
    assert status == 202, doc
    assert harness.calls[0][0] == "main"


def test_a_replayed_delivery_gets_409(harness: Harness) -> None:
    body = payload("github-push.json")
    headers = github(body)
    assert harness.hook(body, headers)[0] == 202
    assert harness.hook(body, headers)[0] == 409
    # The delivery id is outside the signature: a new one on a captured body is still a replay.
    status, doc = harness.hook(body, {**headers, "X-GitHub-Delivery": str(uuid.uuid4())})
    assert status == 409, doc
    assert len(harness.calls) == 1


def test_an_oversized_body_gets_413_before_it_is_read(harness: Harness) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", harness.server.port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/hooks/git")
        for name, value in github(b"{}").items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()  # and no body: the server must answer without waiting for it
        response = conn.getresponse()
        assert response.status == 413
        response.read()
    finally:
        conn.close()
    assert harness.calls == []


def test_a_wrong_content_type_gets_415(harness: Harness) -> None:
    body = payload("github-push.json")
    headers = {**github(body), "Content-Type": "text/plain"}
    assert harness.hook(body, headers)[0] == 415
    form = {**gitlab(body), "Content-Type": "application/x-www-form-urlencoded"}
    assert harness.hook(body, form)[0] == 415  # GitLab only ever sends JSON
    assert harness.calls == []


def test_a_non_push_event_is_202_and_triggers_nothing(harness: Harness) -> None:
    body = payload("github-ping.json")
    status, doc = harness.hook(body, github(body, event="ping"))
    assert status == 202
    assert "ignored" in doc
    tag = json.loads(payload("github-push.json"))
    tag["ref"] = "refs/tags/v2026.4.3"
    body = json.dumps(tag).encode()
    assert harness.hook(body, github(body))[0] == 202
    assert harness.calls == []


def test_unknown_provider_and_malformed_json_get_400(harness: Harness) -> None:
    body = payload("github-push.json")
    status, _ = harness.hook(body, {"Content-Type": "application/json", "X-Gogs-Event": "push"})
    assert status == 400
    broken = body[:-10]
    assert harness.hook(broken, github(broken))[0] == 400
    assert harness.calls == []


def test_a_failing_trigger_answers_500_without_a_traceback(harness: Harness) -> None:
    def broken(branch: str, urls: tuple[str, ...]) -> list[str]:
        raise RuntimeError("scheduler is gone: /internal/path")

    harness.server.trigger = broken
    body = payload("github-push.json")
    status, doc = harness.hook(body, github(body))
    assert status == 500
    assert doc == {"error": "internal error"}
    harness.server.trigger = lambda branch, urls: ["minis"]
    assert harness.hook(body, github(body))[0] == 202  # not remembered as delivered


def test_a_forgotten_delivery_expires_from_the_replay_guard() -> None:
    now = [0.0]
    guard = webhooks.ReplayGuard(ttl_s=10.0, max_entries=2, clock=lambda: now[0])
    assert guard.admit(["a"])
    assert not guard.admit(["a"])
    now[0] = 11.0
    assert guard.admit(["a"])
    assert guard.admit(["b"]) and guard.admit(["c"])
    assert len(guard) == 2  # bounded: the oldest went first
    assert guard.admit(["a"])


# --- health and metrics ----------------------------------------------------------------------


def test_healthz(harness: Harness) -> None:
    status, headers, body = harness.request("GET", "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"ok": True}
    assert harness.request("GET", "/nowhere")[0] == 404
    assert harness.request("GET", "/hooks/git")[0] == 405


def status_commit(tmp_path: Path, message: str) -> pygit2.Commit:
    repo = pygit2.init_repository(str(tmp_path / "status.git"), bare=True)
    who = pygit2.Signature("reconciler", "reconciler@localhost")
    tree = repo.TreeBuilder().write()
    commit = repo[repo.create_commit(None, who, who, message, tree, [])]
    assert isinstance(commit, pygit2.Commit)
    return commit


def test_metrics_parse_as_prometheus_text_with_the_named_series(
    harness: Harness, tmp_path: Path
) -> None:
    record = rollout({"mac-1": "Done", "mac-2": "RolledBack", "mac-3": "Pending"}, applied="c" * 40)
    commit = status_commit(
        tmp_path, "mac-2: restored from bookmark\n\nFleet: minis\nPhase: RolledBack\n"
    )
    status = fleet_status({}, record, commit)
    rolled = PassResult("Failed", "mac-2: restored", 0.0, acted=True, commit=str(commit.id))
    harness.metrics.observe_pass("minis", rolled, 1.5, status)
    held = PassResult("Paused", "ramp-mac-2-1: weight held: mac-2 differs", 10.0)
    harness.metrics.observe_pass("minis", held, 0.2, status)

    status_code, headers, body = harness.request("GET", "/metrics")
    assert status_code == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    names = {name for name, _ in samples}
    assert {
        "reconciler_pass_duration_seconds_bucket",
        "reconciler_pass_duration_seconds_count",
        "reconciler_passes_total",
        "reconciler_hosts",
        "reconciler_fleet_phase",
        "reconciler_last_applied_spec_commit_info",
        "reconciler_gate_refusals_total",
        "reconciler_rollbacks_total",
    } <= names
    fleet = (("fleet", "minis"),)
    assert samples[("reconciler_pass_duration_seconds_count", fleet)] == 2
    assert samples[("reconciler_passes_total", (("fleet", "minis"), ("result", "Paused")))] == 1
    assert samples[("reconciler_passes_total", (("fleet", "minis"), ("result", "Failed")))] == 1
    assert samples[("reconciler_fleet_phase", (("fleet", "minis"), ("phase", "Paused")))] == 1
    assert samples[("reconciler_fleet_phase", (("fleet", "minis"), ("phase", "Failed")))] == 0
    assert samples[("reconciler_hosts", (("fleet", "minis"), ("phase", "RolledBack")))] == 1
    assert samples[("reconciler_hosts", (("fleet", "minis"), ("phase", "Done")))] == 1
    info = (("commit", "c" * 40), ("fleet", "minis"))
    assert samples[("reconciler_last_applied_spec_commit_info", info)] == 1
    assert samples[("reconciler_gate_refusals_total", fleet)] == 1
    assert samples[("reconciler_rollbacks_total", fleet)] == 1  # the second pass wrote nothing


def test_metrics_live_in_their_own_registry() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second
    first.observe_error("minis", 0.1)
    assert b'reconciler_passes_total{fleet="minis",result="Error"} 1.0' in first.render()[0]
    assert b"reconciler_passes_total{" not in second.render()[0]


# --- the readiness URL -----------------------------------------------------------------------


def readiness(host: str, *, core: str = "2026.4.3", green: bool = True) -> Readiness:
    installed = Installed(core=core, plugins={"@openclaw/discord": "2026.4.3"})
    profiles = [
        ProfileReadiness(
            profile="default",
            port=18789,
            healthz=True,
            readyz=green,
            health_ok=True,
            running_version=core,
            lb_weight=100,
        )
    ]
    basis = fingerprint_basis(LOCK, installed, profiles)
    return seal_readiness(
        {
            "schemaVersion": 1,
            "fleet": "minis",
            "host": host,
            "observedAt": f"2026-11-24T09:00:0{len(host) % 10}Z",
            "specCommit": SPEC,
            "lockSha256": LOCK,
            "nodeVersion": "22.12.0",
            "installed": installed.dump(),
            "profiles": [p.dump() for p in profiles],
            "green": green,
            "reasons": [] if green else ["profile default: /readyz is not 200 (port 18789)"],
            "basis": basis,
            "fingerprint": sha256_of(basis),
        }
    )


def rollout(
    phases: Mapping[str, str], *, applied: str | None = SPEC, golden: str | None = None
) -> RolloutRecord:
    return RolloutRecord.model_validate(
        {
            "fleet": "minis",
            "phase": "Complete",
            "specCommit": SPEC,
            "appliedCommit": applied,
            "target": {"openclaw": "2026.4.3"},
            "hosts": {h: HostStatus.model_validate({"phase": p}).dump() for h, p in phases.items()},
            "goldenFingerprint": golden,
            "updatedAt": "2026-11-24T09:00:00.000+00:00",
        }
    )


def fleet_status(
    nodes: Mapping[str, Readiness],
    record: RolloutRecord | None = None,
    commit: pygit2.Commit | None = None,
) -> FleetStatus:
    return FleetStatus(
        fleet="minis",
        commit=commit,
        rollout=record,
        freeze=None,
        lease=None,
        nodes=dict(nodes),
        bookmarks=[],
    )


def get_readiness(harness: Harness, fleet: str = "minis") -> tuple[int, dict[str, Any]]:
    status, _, body = harness.request("GET", f"/fleets/{fleet}/readiness")
    return status, json.loads(body)


def test_readiness_is_200_when_every_host_is_green_and_agrees(harness: Harness) -> None:
    nodes = {h: readiness(h) for h in ("mac-1", "mac-2", "mac-3")}
    golden = nodes["mac-1"].fingerprint
    record = rollout(dict.fromkeys(nodes, "Done"), golden=golden)
    harness.statuses["minis"] = fleet_status(nodes, record)

    status, doc = get_readiness(harness)
    assert status == 200, doc
    assert doc["agree"] is True and doc["green"] is True and doc["ready"] is True
    assert doc["goldenFingerprint"] == golden
    hosts = {h["host"]: h for h in doc["hosts"]}
    assert set(hosts) == set(nodes)
    for name, node in nodes.items():
        assert hosts[name]["fingerprint"] == node.fingerprint
        assert hosts[name]["readinessSha256"] == node.readiness_sha256
        assert hosts[name]["readiness"] == node.dump()
    assert len({h["readinessSha256"] for h in hosts.values()}) == 3  # same release, own docs
    expected = sha256_of(sorted(n.readiness_sha256 for n in nodes.values()))
    assert doc["fleetReadinessSha256"] == expected

    harness.statuses["minis"] = fleet_status(nodes)  # no rollout record: peers vs each other
    assert get_readiness(harness)[0] == 200


def test_readiness_is_503_when_a_peer_differs(harness: Harness) -> None:
    nodes = {h: readiness(h) for h in ("mac-1", "mac-2")}
    nodes["mac-3"] = readiness("mac-3", core="2026.4.2")
    harness.statuses["minis"] = fleet_status(nodes)
    status, doc = get_readiness(harness)
    assert status == 503
    assert doc["agree"] is False and doc["green"] is True
    assert len(doc["fingerprints"]) == 2

    golden = nodes["mac-1"].fingerprint
    record = rollout(dict.fromkeys(nodes, "Done"), golden=golden)
    harness.statuses["minis"] = fleet_status(nodes, record)
    status, doc = get_readiness(harness)
    assert status == 503
    (odd,) = [h for h in doc["hosts"] if h["agrees"] is False]
    assert odd["host"] == "mac-3"
    assert any("core" in field for field in odd["differs"])


def test_readiness_is_503_when_a_host_is_red_or_unobserved(harness: Harness) -> None:
    nodes = {"mac-1": readiness("mac-1"), "mac-2": readiness("mac-2", green=False)}
    harness.statuses["minis"] = fleet_status(nodes)
    status, doc = get_readiness(harness)
    assert status == 503
    assert doc["red"] == ["mac-2"]

    nodes = {"mac-1": readiness("mac-1")}
    record = rollout({"mac-1": "Done", "mac-2": "Pending"})
    harness.statuses["minis"] = fleet_status(nodes, record)
    status, doc = get_readiness(harness)
    assert status == 503
    assert doc["unobserved"] == ["mac-2"]

    harness.statuses["minis"] = fleet_status({})  # served, but nothing observed yet
    assert get_readiness(harness)[0] == 503


def test_readiness_of_an_unknown_fleet_is_404(harness: Harness) -> None:
    assert get_readiness(harness, "nope")[0] == 404
    assert harness.request("GET", "/fleets/..%2Fetc/readiness")[0] == 404


# --- secrets ----------------------------------------------------------------------------------


def test_no_secret_in_any_response_or_log_record(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    github_body, gitlab_body = payload("github-push.json"), payload("gitlab-push.json")
    harness.hook(github_body, github(github_body))
    harness.hook(github_body, github(github_body, secret=b"wrong"))
    harness.hook(gitlab_body, gitlab(gitlab_body))
    harness.hook(gitlab_body, gitlab(gitlab_body, token="wrong"))
    harness.hook(gitlab_body, {**gitlab(gitlab_body), "Content-Type": "text/plain"})
    gitea_body = payload("gitea-push.json")
    harness.hook(gitea_body, gitea(gitea_body, secret=b"wrong"))
    harness.request("GET", "/metrics")
    harness.request("GET", "/healthz")

    assert len(harness.answers) == 8
    assert any(r.name.startswith("reconciler.") for r in caplog.records)
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    shown = b"\n".join(harness.answers) + repr(harness.server).encode()
    for secret in SECRETS.values():
        assert secret not in shown
        assert secret.decode() not in logged
        assert hmac.new(secret, b"", hashlib.sha256).hexdigest() not in logged
