"""`reconciler run --config`: the daemon as a real subprocess, driven only by git pushes and
a signed webhook; stopped with SIGTERM mid-rollout and resumed by a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.sandbox.processes import free_port
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World

SECRET = "github-webhook-secret-for-tests"


def rollout(world: World) -> dict[str, Any] | None:
    repo = world.status_repo()
    ref = repo.references.get("refs/heads/reconciler/status")
    if ref is None:
        return None
    commit = repo.get(ref.target)
    assert isinstance(commit, pygit2.Commit)
    try:
        blob = commit.tree / "fleets/sandbox/rollout.json"
    except KeyError:
        return None
    assert isinstance(blob, pygit2.Blob)
    return json.loads(blob.data)  # type: ignore[no-any-return]


def lease_present(world: World) -> bool:
    repo = world.status_repo()
    commit = repo.revparse_single("refs/heads/reconciler/status")
    assert isinstance(commit, pygit2.Commit)
    return "fleets/sandbox/lease.json" in [
        f"fleets/sandbox/{e.name}" for e in commit.tree / "fleets/sandbox"
    ]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class Daemon:
    def __init__(self, world: World, poll: float, port: int) -> None:
        self.config = world.root / "daemon.yaml"
        self.config.write_text(
            "\n".join(
                [
                    f"remote: {world.remote}",
                    "fleets: [sandbox]",
                    f"cache: {world.root / 'daemon-cache'}",
                    f"pollInterval: {poll}",
                    f"http: {{bind: 127.0.0.1, port: {port}}}",
                    "webhookSecrets: {github: {env: TEST_GITHUB_SECRET}}",
                ]
            )
            + "\n"
        )
        self.port = port
        self.log = (world.root / "daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "TEST_GITHUB_SECRET": SECRET},
        )
        wait_for("the daemon's /healthz", self.healthy, 30)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def world(tmp_path: Path, registry: LocalRegistry) -> Iterator[World]:
    with World(tmp_path / "w", names=("mac-1", "mac-2"), steps=(100,), registry=registry) as w:
        yield w


def scrape(port: int) -> dict[str, float]:
    """`GET /metrics`, as Prometheus would: sample name with labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def github_push(world: World, after: str, port: int) -> int:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": after,
            "repository": {
                "full_name": "example-org/openclaw-fleet",
                "clone_url": world.remote,
                "ssh_url": world.remote,
            },
            "pusher": {"name": "operator"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/git",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"delivery-{after}",
            "X-Hub-Signature-256": signature,
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def test_daemon_rolls_out_pushed_commits_stops_on_sigterm_and_resumes(world: World) -> None:
    port = free_port()
    daemon = Daemon(world, poll=2.0, port=port)
    try:
        world.bump("2026.4.2")
        wait_for("adoption", lambda: (rollout(world) or {}).get("phase") == "Complete")
        bump = world.bump("2026.4.3")
        wait_for("the bump", lambda: (rollout(world) or {}).get("appliedCommit") == bump)

        second = world.bump("2026.4.4")

        def mid_rollout() -> bool:
            doc = rollout(world) or {}
            return doc.get("specCommit") == second and "mac-1/install" in doc.get("doneSteps", [])

        wait_for("the second bump to be mid-rollout", mid_rollout)
        # /metrics from the running daemon, mid-rollout: what a dashboard would see now
        scraped = scrape(port)
        assert scraped['reconciler_fleet_phase{fleet="sandbox",phase="Progressing"}'] == 1.0
        assert scraped.get('reconciler_fleet_phase{fleet="sandbox",phase="Complete"}', 0) == 0
        ok_passes = 'reconciler_passes_total{fleet="sandbox",result="Progressing"}'
        assert scraped[ok_passes] >= 1
        assert scraped['reconciler_last_pass_timestamp_seconds{fleet="sandbox"}'] > 0
        hosts = {k: v for k, v in scraped.items() if k.startswith("reconciler_hosts{")}
        assert sum(hosts.values()) == 2, hosts  # both hosts of the rollout, by phase
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    doc = rollout(world)
    assert doc is not None and doc["phase"] == "Progressing"
    assert not lease_present(world), "the lease was not released on SIGTERM"

    daemon = Daemon(world, poll=2.0, port=port)
    try:
        wait_for(
            "the resumed rollout", lambda: (rollout(world) or {}).get("appliedCommit") == second
        )
    finally:
        assert daemon.stop() == 0
    versions = [
        json.loads((h.prefix / "lib/node_modules/openclaw/package.json").read_text())["version"]
        for h in world.hosts
    ]
    assert versions == ["2026.4.4", "2026.4.4"]


def test_signed_push_webhook_triggers_a_pass_before_the_poll(world: World) -> None:
    port = free_port()
    daemon = Daemon(world, poll=600.0, port=port)  # the poll alone would not come in time
    try:
        time.sleep(1.0)  # the daemon's first pass (nothing on main yet) is done
        head = world.bump("2026.4.2")
        started = time.monotonic()
        assert github_push(world, head, port) == 202
        wait_for(
            "a status commit for the pushed head",
            lambda: (rollout(world) or {}).get("specCommit") == head,
            timeout=30,
        )
        assert time.monotonic() - started < 30
    finally:
        assert daemon.stop() == 0
