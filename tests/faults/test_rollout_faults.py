"""Faults of what a rollout depends on: the npm registry, the release, the gateway, the LB.

One 2-host World for the module; each case moves the fleet to the other release (a failed
rollout leaves it where it was, restored from its bookmarks).

- the npm registry slow during install (verdaccio SIGSTOPped): the install times out, is
  killed and retried, and completes once the registry answers;
- the npm registry away for a moment at preflight: waited out (up to 30 s), then the rollout
  goes on;
- the npm registry down (verdaccio stopped) at preflight for longer than that, or during
  install: the host is restored from its bookmark, the commit marked Failed, a signed
  broadcast sent;
- a lock whose tarball integrity differs from what the registry serves: refused before
  anything is installed;
- doctor red, or the gateway never ready, after the upgrade: restored from the bookmark;
- the LB weights file gone before drain and at the ramp: the run stops with an error naming
  it, no host is left drained without a record, and the rollout finishes once it is back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import signal
from collections.abc import Iterator

import pytest

from reconciler.desired.lock import build_lock
from reconciler.desired.resolve import resolve_lock
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import WorldHost
from tests.faults.conftest import SECRET, SHORT_BUDGET, Harness, harness, other

FAILPOINTS = "RECONCILER_FAILPOINTS"
INSTALL_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[Harness]:
    rollout = {"installTimeout": f"{INSTALL_TIMEOUT_S}s", "probeTimeout": "5s"}
    root = tmp_path_factory.mktemp("rollout-faults")
    with harness(root, registry, extra_rollout=rollout, command_timeout="10s") as h:
        yield h


def current(h: Harness) -> str:
    versions = set(h.hosts_known("2026.4.2", "2026.4.3", "2026.4.4").values())
    assert len(versions) == 1, versions
    return versions.pop()


def kill_at(h: Harness, point: str) -> None:
    killed = h.reconcile(env={FAILPOINTS: point})
    assert killed.returncode == -9, f"{point} not reached:\n{killed.stderr}"


@contextlib.contextmanager
def registry_stopped(registry: LocalRegistry) -> Iterator[None]:
    """verdaccio down (its process group stopped), then up again on the same port and storage."""
    port = registry.port
    registry.stop()
    try:
        yield
    finally:
        registry.process = LocalRegistry.start(registry.directory, port).process


@contextlib.contextmanager
def registry_frozen(registry: LocalRegistry) -> Iterator[None]:
    """verdaccio SIGSTOPped: connections are accepted, nothing is answered."""
    os.killpg(registry.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(registry.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def npm_without_retries(host: WorldHost) -> Iterator[None]:
    """The host's npm gives up on the first network error (npm's default retries take ~70 s
    against a registry that refuses connections)."""
    npmrc = host.home / ".npmrc"
    npmrc.write_text("fetch-retries=0\n")
    try:
        yield
    finally:
        npmrc.unlink()


def failed_and_restored(h: Harness, bump: str, before: str, host: str = "mac-1") -> str:
    """The rollout of `bump` Failed at `host`, which is back on `before` at its bookmarked
    weight; a freeze names it; a failure broadcast, signed with the secret, went out.
    Returns the freeze's reason."""
    record = h.rollout()
    assert record["phase"] == "Failed" and bump in record["failedCommits"], record
    assert record["hosts"][host]["phase"] == "RolledBack", record["hosts"]
    freeze = h.status_file("freeze.json")
    assert freeze is not None and freeze["host"] == host and freeze["specCommit"] == bump
    assert h.end_state(before) == {x.name: before for x in h.world.hosts}
    assert h.world.weights() == {x.server: x.weight for x in h.world.hosts}
    bookmarks = [c for c in h.commits_for(bump) if "bookmarked" in c.message]
    assert bookmarks, "no bookmark before the failed step"
    deliveries = [
        d
        for d in h.receiver.deliveries
        if d["json"].get("kind") == "failure" and d["json"].get("specCommit") == bump
    ]
    assert deliveries, "no failure broadcast"
    signature = hmac.new(SECRET.encode(), deliveries[0]["body"], hashlib.sha256).hexdigest()
    assert deliveries[0]["headers"]["X-Reconciler-Signature-256"] == f"sha256={signature}"
    return str(freeze["reason"])


# --- the npm registry ---------------------------------------------------------------------------


def test_registry_slow_during_install_times_out_retries_and_completes(
    h: Harness, registry: LocalRegistry
) -> None:
    before = current(h)
    target = other(before)
    bump = h.bump(target)
    kill_at(h, "mac-1/preflight:recorded")
    with registry_frozen(registry):
        live = h.start()
        # The install's first call to the registry (the integrity check's `npm view`, then
        # `npm install`) hangs until its timeout; the command is killed on the host.
        live.wait_for("retrying in", "mac-1: ", "s timeout; remote process group", "killed")
        h.weights_safe()  # mac-1 drained, on record
        h.hosts_known(before)  # npm was waiting for the registry: nothing changed
    done = h.finish(live)
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)


DOWN = {
    "at preflight": ("mac-1/drain:recorded", "registry http://127.0.0.1:"),
    "during install": ("mac-1/preflight:recorded", "npm install"),
}


@pytest.mark.parametrize("when", list(DOWN))
def test_registry_down_restores_the_host_and_fails_the_commit(
    h: Harness, registry: LocalRegistry, when: str
) -> None:
    point, reason = DOWN[when]
    before = current(h)
    bump = h.bump(other(before), message=f"openclaw {other(before)} (registry down {when})")
    kill_at(h, point)
    with registry_stopped(registry), npm_without_retries(h.world.hosts[0]):
        done = h.reconcile()
    assert done.returncode == 2, done.stderr
    freeze = failed_and_restored(h, bump, before)
    assert reason in freeze, freeze


# After the cases above: its rollout leaves fresh registry metadata in the hosts' npm caches,
# with which npm would install without asking the registry (the case above needs it to ask).
def test_registry_blinking_at_preflight_is_waited_out(h: Harness, registry: LocalRegistry) -> None:
    before = current(h)
    target = other(before)
    bump = h.bump(target)
    kill_at(h, "mac-1/drain:recorded")
    with registry_stopped(registry):
        live = h.start()
        live.wait_for("mac-1: registry http://127.0.0.1:", "unreachable; asking again in")
        h.weights_safe()  # mac-1 drained, on record
        h.hosts_known(before)  # nothing installed while the registry is away
    done = h.finish(live)  # the registry is back within the preflight's grace
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)
    assert h.status_file("freeze.json") is None


def test_tarball_integrity_differing_from_the_lock_is_refused(h: Harness) -> None:
    before = current(h)
    target = other(before)
    fleet = h.fleet(target)
    honest = resolve_lock(fleet)
    forged = "sha512-" + base64.b64encode(hashlib.sha512(b"another tarball").digest()).decode()
    packages = [
        p.model_copy(update={"integrity": forged}) if p.name == "@openclaw/matrix" else p
        for p in honest.packages
    ]
    lock = build_lock(fleet, packages)  # a lock that validates: its own sha256 is right
    bump = h.bump(
        target, message="a lock pinning another tarball", **{"openclaw.lock": lock.to_bytes()}
    )
    done = h.reconcile()
    assert done.returncode == 2, done.stderr
    freeze = failed_and_restored(h, bump, before)
    assert f"@openclaw/matrix@{target}" in freeze and "openclaw.lock pins sha512-" in freeze
    assert "nothing was changed" in freeze
    installs = [s for s in h.subjects(bump, "mac-1") if "installed openclaw" in s]
    assert installs == [], installs


# --- the gateway after the upgrade --------------------------------------------------------------

RED = {"doctor_red": "doctor", "never_ready": "readyz"}


@pytest.mark.parametrize("fault", list(RED))
def test_red_after_upgrade_is_restored_from_the_bookmark(h: Harness, fault: str) -> None:
    mac1 = h.world.hosts[0]
    before = current(h)
    target = other(before)
    h.world.set_faults(mac1, **{fault: [target]})
    try:
        bump = h.bump(target, message=f"openclaw {target} ({fault} on mac-1)")
        done = h.reconcile()
    finally:
        h.world.set_faults(mac1)
    assert done.returncode == 2, done.stderr
    freeze = failed_and_restored(h, bump, before)
    assert "red after upgrade" in freeze, freeze
    assert RED[fault] in freeze.lower(), freeze


def test_a_new_commit_after_the_failures_completes(h: Harness) -> None:
    before = current(h)
    target = other(before)
    bump = h.bump(target, message=f"openclaw {target} (registry, lock and gateway fixed)")
    done = h.reconcile()
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)
    assert h.status_file("freeze.json") is None


# --- the load balancer --------------------------------------------------------------------------


def test_weights_file_gone_before_drain_and_at_the_ramp(h: Harness) -> None:
    world = h.world
    lb = world.lb_file
    config = lb.read_text()  # what the LB comes back with after a restart: every host at 100
    before = current(h)
    target = other(before)
    bump = h.bump(target)
    for point in ("mac-1/bookmark:recorded", "mac-2/verify:recorded"):
        kill_at(h, point)
        lb.unlink()
        try:
            gone = h.reconcile(*SHORT_BUDGET)
            assert gone.returncode == 1, gone.stderr
            error = gone.stderr.strip().splitlines()[-1]
            assert error == (
                f"error: {lb}: weights file not found "
                "(gave up after 3 attempts: the retry budget of 2 is spent)"
            ), gone.stderr
            h.hosts_known(before, target)
            h.status_consistent()
        finally:
            lb.write_text(config)
        h.weights_safe()  # the drained host (at the ramp: mac-2) is on record
    done = h.reconcile()
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)


# --- the recovery point ---------------------------------------------------------------------------


def test_a_backup_the_product_refuses_stops_the_rollout_before_the_host_changes(
    h: Harness,
) -> None:
    mac1 = h.world.hosts[0]
    before = current(h)
    target = other(before)
    h.world.set_faults(mac1, backup_refused=True)
    try:
        bump = h.bump(target, message=f"openclaw {target} (mac-1 cannot be backed up)")
        done = h.reconcile()
    finally:
        h.world.set_faults(mac1)

    assert done.returncode == 2, done.stderr
    record = h.rollout()
    assert record["phase"] == "Failed" and record["hosts"]["mac-1"]["phase"] == "RolledBack"
    freeze = h.status_file("freeze.json")
    assert freeze is not None and "Backup refused" in freeze["reason"]
    assert any("nothing on the host changed" in s for s in h.subjects(bump, "mac-1"))
    assert h.end_state(before) == {x.name: before for x in h.world.hosts}
    assert h.world.weights() == {x.server: x.weight for x in h.world.hosts}
    assert not [s for s in h.subjects(bump, "mac-1") if "drained" in s], "drained anyway"
    assert h.status_file("lease.json") is None, "the lease outlived a rollout with nothing to do"
