"""`reconciler status` renders what the status branch says, including what it does not say yet:
when each host was observed, and the versions a finished install step put on a host after its
last observation (so a host mid-rollout is not shown on the release it just left)."""

from __future__ import annotations

import io

from rich.console import Console

from reconciler import report
from reconciler.documents import HostStatus, RolloutRecord
from reconciler.status import FleetStatus
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
