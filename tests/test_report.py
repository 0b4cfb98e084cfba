"""`reconciler status` renders what the status branch says, including what it does not say yet:
when each host was observed, and the versions a finished install step put on a host after its
last observation (so a host mid-rollout is not shown on the release it just left)."""

from __future__ import annotations

import io
from pathlib import Path

import pygit2
from rich.console import Console

from reconciler.record.documents import HostStatus, RolloutRecord
from reconciler.record.status import FleetStatus
from reconciler.views import report
from tests.test_server import readiness


def fleet_status(phase: str) -> FleetStatus:
    record = RolloutRecord(
        fleet="minis",
        phase="Progressing",
        spec_commit="a" * 40,
        target={"openclaw": "2026.4.4"},
        hosts={"mac-1": HostStatus(phase=phase), "mac-2": HostStatus(phase="Pending")},  # type: ignore[arg-type]
        updated_at="2026-11-24T09:01:00Z",
    )
    nodes = {h: readiness(h, core="2026.4.3") for h in ("mac-1", "mac-2")}
    return FleetStatus("minis", None, record, None, None, nodes, [])


def rendered(doc: dict[str, object]) -> str:
    out = io.StringIO()
    report.print_status(doc, Console(file=out, width=200))
    return out.getvalue()


def test_a_host_installed_since_its_observation_shows_the_installed_release() -> None:
    doc = report.status_doc(fleet_status("Installed"))

    mac1, mac2 = doc["hosts"]
    assert mac1["installedByStep"] == {"openclaw": "2026.4.4"} and mac1["core"] == "2026.4.3"
    assert mac2["installedByStep"] is None
    assert mac1["observedAt"] == readiness("mac-1").observed_at
    text = rendered(doc)
    assert "2026.4.4 (installed; observed 2026.4.3 before)" in text
    assert readiness("mac-1").observed_at.replace("T", " ")[:19] in text


def test_a_verified_host_shows_what_was_observed() -> None:
    doc = report.status_doc(fleet_status("Verified"))

    assert doc["hosts"][0]["installedByStep"] is None
    assert "installed; observed" not in rendered(doc)


def test_phase_timings_are_the_time_between_a_hosts_transitions(tmp_path: Path) -> None:
    repo = pygit2.init_repository(str(tmp_path / "spec.git"), bare=True)
    tree = repo.TreeBuilder().write()
    parents: list[pygit2.Oid] = []
    subjects = [
        (100, "rollout abc started: openclaw 2026.9.4 -> 2026.9.5"),
        (103, "mac-1: bookmarked (openclaw 2026.9.4, weights mac-1=100, 1 recovery point)"),
        (104, "mac-1: drained (weight 0)"),
        (190, "mac-1: installed openclaw 2026.9.5"),
        (215, "mac-1: openclaw 2026.9.5 running, doctor green, ready"),
        (216, "mac-2: bookmarked (openclaw 2026.9.4, weights mac-2=100, 1 recovery point)"),
    ]
    for when, subject in subjects:
        who = pygit2.Signature("reconciler", "r@example.com", when, 0)
        parents = [repo.create_commit(None, who, who, subject, tree, parents)]
        if when == 103:
            started = parents[0]
    repo.references.create("refs/heads/reconciler/status", parents[0])

    rows = report.phase_rows(repo)

    assert rows == [
        ("mac-1", "backup create (recovery point) and bookmark", 3),
        ("mac-1", "drain", 1),
        ("mac-1", "install (core, then plugins)", 86),
        ("mac-1", "restart to ready (verify)", 25),
        ("mac-2", "backup create (recovery point) and bookmark", 1),
    ]
    assert report.phase_rows(repo, after=str(started))[0] == ("mac-1", "drain", 1)
