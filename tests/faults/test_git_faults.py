"""Faults of the spec remote and the status branch, and of the reconciler's own cache disk.

One 2-host World for the module; each case moves the fleet to the other release, so the state
carries from case to case (like tests/test_engine.py's crash_world).

- the git remote unreachable (git daemon stopped): nothing applied, a clear error once the
  retry budget is spent (`--retries`, and once `--max-passes`); a running reconciler retries
  and finishes once the remote is back;
- a push rejected by a concurrent writer: the reconciler refetches and redoes the step, never
  force-pushes (the other writer's commit stays in history); the remote lost while a step runs;
- the status branch rewritten (force-pushed) by someone else: detected, refused, said;
- the cache directory's disk full (a tiny tmpfs): a clear error, nothing half-applied, and the
  rollout resumes once there is space again.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from reconciler.sandbox.faults import versioned
from reconciler.sandbox.gitd import GitDaemon
from reconciler.sandbox.verdaccio import LocalRegistry
from tests.faults.conftest import (
    SHORT_BUDGET,
    STATUS_REF,
    Harness,
    harness,
    host_runs,
    other,
    wait_until,
)

OTHER_WRITER = pygit2.Signature("Auditor", "auditor@example.com")


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[Harness]:
    with harness(tmp_path_factory.mktemp("git-faults"), registry) as h:
        yield h


def current(h: Harness) -> str:
    versions = set(h.hosts_known("2026.4.2", "2026.4.3", "2026.4.4").values())
    assert len(versions) == 1, versions
    return versions.pop()


def restart_gitd(h: Harness, port: int) -> None:
    h.world.gitd = GitDaemon(h.world.root / "git", port=port)


def test_git_remote_unreachable_applies_nothing_then_resumes(h: Harness) -> None:
    world = h.world
    assert world.gitd is not None
    before = current(h)
    target = other(before)
    bump = h.bump(target)
    status_before = h.status_head()
    history = len(world.weight_history())
    port = world.gitd.port
    world.gitd.stop()
    try:
        down = h.reconcile(*SHORT_BUDGET)
        assert down.returncode == 1, down.stderr
        assert f"error: fetch from {world.remote} failed" in down.stderr, down.stderr
        assert down.stderr.count("retrying in") == 2, down.stderr
        gave_up = down.stderr.strip().splitlines()[-1]
        assert gave_up.endswith("(gave up after 3 attempts: the retry budget of 2 is spent)")
        # Nothing applied: hosts, weights and the weights' history untouched.
        assert h.hosts_known(before) == {x.name: before for x in world.hosts}
        assert len(world.weight_history()) == history
        assert world.weights() == {x.server: x.weight for x in world.hosts}

        # The real CLI keeps retrying while the remote is away, and finishes once it is back.
        live = h.start()
        live.wait_for("retrying in", f"fetch from {world.remote} failed")
    finally:
        restart_gitd(h, port)
    done = h.finish(live)
    assert done.returncode == 0, done.stderr
    assert status_before is not None
    assert any(c.id == status_before.id for c in h.status_log()), "status history lost"
    h.complete(bump, target)


def test_the_real_cli_gives_up_after_its_passes_with_the_error(h: Harness) -> None:
    """The give-up on `--max-passes` (the other cases spend a `--retries` budget, with the
    backoff capped at seconds): 2 passes spent on failures exit 1 with the error and why."""
    world = h.world
    assert world.gitd is not None
    before = current(h)
    h.bump(other(before))
    port = world.gitd.port
    world.gitd.stop()
    try:
        done = h.reconcile("--max-passes", "2")
    finally:
        restart_gitd(h, port)
    assert done.returncode == 1, done.stderr
    assert "retrying in 5.0s" in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: fetch from {world.remote}"), done.stderr
    assert last.endswith("(gave up after 2 attempts: the limit of 2 passes is reached)"), last
    h.end_state(before)


def test_status_branch_rewritten_by_someone_else_is_refused(h: Harness) -> None:
    world = h.world
    before = current(h)
    h.bump(other(before))
    repo = h.status_repo()
    ours = repo.references[STATUS_REF].target
    # An unrelated history, force-pushed over the status branch: it claims the bump is done.
    claim = {"fleet": "sandbox", "phase": "Complete", "updatedAt": "2026-01-01T00:00:00Z"}
    blob = repo.create_blob(json.dumps(claim).encode())
    index = pygit2.Index()
    index.add(pygit2.IndexEntry("fleets/sandbox/rollout.json", blob, pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(repo)
    foreign = repo.create_commit(None, OTHER_WRITER, OTHER_WRITER, "rewritten", tree, [])
    repo.references.create(STATUS_REF, foreign, force=True)
    history = len(world.weight_history())
    try:
        refused = h.reconcile()
        assert refused.returncode == 1, refused.stderr
        assert "status branch reconciler/status was rewritten" in refused.stderr
        assert "refusing to act" in refused.stderr
        assert repo.references[STATUS_REF].target == foreign, "the reconciler overwrote it"
        assert h.hosts_known(before) == {x.name: before for x in world.hosts}
        assert len(world.weight_history()) == history
        again = h.reconcile()
        assert again.returncode == 1 and "was rewritten" in again.stderr, "refused only once"
    finally:
        repo.references.create(STATUS_REF, ours, force=True)  # the operator restores it
    h.end_state(before)


def other_writer_commits(h: Harness, root: Path) -> str:
    """Another writer clones the remote and pushes one commit to the status branch (no force)."""
    clone = pygit2.clone_repository(h.world.remote, str(root), bare=True)
    clone.remotes["origin"].fetch([f"+{STATUS_REF}:refs/remotes/origin/reconciler/status"])
    parent = clone.revparse_single("refs/remotes/origin/reconciler/status")
    assert isinstance(parent, pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(parent.tree)
    blob = clone.create_blob(b"reviewed by the auditor\n")
    index.add(pygit2.IndexEntry("notes/audit.txt", blob, pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(clone)
    oid = clone.create_commit(
        STATUS_REF, OTHER_WRITER, OTHER_WRITER, "audit note", tree, [parent.id]
    )
    clone.remotes["origin"].push([f"{STATUS_REF}:{STATUS_REF}"])
    return str(oid)


def test_concurrent_writer_and_remote_lost_mid_step(h: Harness, tmp_path: Path) -> None:
    world = h.world
    assert world.gitd is not None
    mac1, mac2 = world.hosts
    target = other(current(h))
    for host in world.hosts:  # a slow install: time to act while it runs
        world.set_faults(host, install_delay_s=versioned(3, target))
    try:
        bump = h.bump(target)
        live = h.start()
        wait_until(lambda: host_runs(world, mac1, "install"), what="install")
        audit = other_writer_commits(h, tmp_path / "auditor")
        live.wait_for("retrying in", "status branch moved")

        wait_until(lambda: host_runs(world, mac2, "install"), what="install")
        port = world.gitd.port
        world.gitd.stop()
        try:
            # Whichever git call meets the dead remote first says so: the push of a record
            # (which now runs while the next step does) or the next pass's fetch.
            live.wait_for("retrying in", f"{world.remote} failed")
        finally:
            restart_gitd(h, port)
        done = h.finish(live)
    finally:
        for host in world.hosts:
            world.set_faults(host)
    assert done.returncode == 0, done.stderr
    head = h.status_head()
    assert head is not None
    assert h.status_repo().descendant_of(head.id, pygit2.Oid(hex=audit)), "audit note lost"
    h.complete(bump, target)  # exactly one install record per host: redone, not doubled


# --- disk full on the cache ----------------------------------------------------------------------


@pytest.fixture
def tiny_cache(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs for the reconciler's cache, unmounted at teardown."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(directory: Path) -> None:
    """Write until the filesystem is full (ENOSPC on the next write)."""
    for i, chunk in enumerate((65536, 4096, 512, 1)):
        fd = os.open(directory / f"filler-{i}", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"\0" * 8192)
    assert full.value.errno == errno.ENOSPC


def unfill(directory: Path) -> None:
    for path in directory.glob("filler-*"):
        path.unlink()
    (directory / "probe").unlink(missing_ok=True)


def test_disk_full_on_a_fresh_cache_applies_nothing(h: Harness, tiny_cache: Path) -> None:
    world = h.world
    before = current(h)
    h.bump(other(before))
    fill(tiny_cache)
    history = len(world.weight_history())
    full = h.reconcile(*SHORT_BUDGET, cache=tiny_cache / "cache")
    assert full.returncode == 1, full.stderr
    assert "error: cache" in full.stderr and "No space left on device" in full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    assert len(world.weight_history()) == history
    h.end_state(before)


def test_disk_full_mid_rollout_is_a_clear_error_then_resumes(h: Harness, tiny_cache: Path) -> None:
    before = current(h)
    target = other(before)
    cache = tiny_cache / "cache"
    bump = h.bump(target)
    # mac-1 drained and preflighted (recorded) with this cache, then the disk fills up.
    first = h.reconcile(cache=cache, env={"RECONCILER_FAILPOINTS": "mac-1/preflight:recorded"})
    assert first.returncode == -9, first.stderr
    fill(tiny_cache)
    full = h.reconcile(*SHORT_BUDGET, cache=cache)
    unfill(tiny_cache)
    h.weights_safe()  # mac-1 drained, and that is on record
    h.status_consistent()
    done = h.reconcile(cache=cache)
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)
    assert full.returncode == 1, full.stderr
    assert "No space left on device" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr, full.stderr
