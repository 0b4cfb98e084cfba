"""`reconcile --once` stopped by SIGTERM (a CI job cancelled, a service stopped): it stops as
the daemon does, never in the middle of a step.

The signal lands while the first host's `npm install` runs on the host (seen in the host's
process list, so not left to timing). The install finishes and is recorded, the lease is
given back so the next run (or a standby) takes over at once, and the run exits 3 (not
settled); the next run finishes the rollout from there.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.verdaccio import LocalRegistry
from tests.faults.conftest import Harness, harness, host_runs, installed, other, wait_until


@pytest.fixture
def h(tmp_path: Path, registry: LocalRegistry) -> Iterator[Harness]:
    with harness(tmp_path / "sigterm", registry) as h:
        yield h


def test_sigterm_finishes_the_step_in_hand_releases_the_lease_and_exits_3(h: Harness) -> None:
    mac1 = h.world.hosts[0]
    target = other("2026.4.3")
    h.world.set_faults(mac1, install_delay_s=3)
    bump = h.bump(target, message=f"openclaw {target}")
    live = h.start()
    wait_until(lambda: host_runs(h.world, mac1, "npm", "install"), timeout=120, what="install")

    live.signal(signal.SIGTERM)
    stopped = h.finish(live)

    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert "Stopped" in stopped.stderr
    assert installed(mac1) == target, "the install in hand was finished, not killed"
    assert any(": installed openclaw" in s for s in h.subjects(bump, "mac-1"))
    assert h.status_file("lease.json") is None, "the lease is given back"
    assert h.rollout()["phase"] == "Progressing"
    h.status_consistent()

    h.world.set_faults(mac1)
    done = h.reconcile()
    assert done.returncode == 0, done.stderr[-2000:]
    h.complete(bump, target)
    h.no_secrets()
