"""Recovery points on real sshd hosts: the stand-in's `openclaw backup`, which has the product's
shape (the lane proves the same path on the real product), taken, pruned, checked and restored.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pygit2
import pytest

from reconciler.desired.spec import Fleet, Host
from reconciler.hosts import facts, operations, productfacts, recovery
from reconciler.hosts.recovery import RecoveryPointUnusable
from reconciler.hosts.transport import Transport
from reconciler.record.documents import Installed
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, product_version
from tests.nodes import MakeNode, Node, fleet_spec, make_node
from tests.worlds import reconcile

__all__ = ["make_node"]  # the fixture, imported for pytest

DISCORD = "@openclaw/discord"


def setup(node: Node, **rollout: object) -> tuple[Fleet, Host, Transport]:
    fleet = fleet_spec(node.registry.url, [node.host()], **rollout)
    return fleet, fleet.host(node.name), node.transport(fleet)


def at(fleet: Fleet, host: Host, transport: Transport, version: str) -> Installed:
    """Core and plugin at `version`, the plugin the product's way (which stamps the config)."""
    return operations.install(fleet, host, transport, {"openclaw": version, DISCORD: version})


def config(node: Node) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((node.home / ".openclaw" / "openclaw.json").read_text())
    return loaded


def stamp(document: dict[str, object]) -> object:
    meta = document.get("meta")
    return meta.get("lastTouchedVersion") if isinstance(meta, dict) else None


def points_dir(node: Node) -> Path:
    return node.home / recovery.ROOT / "recovery-points"


def test_a_recovery_point_is_the_products_verified_backup_and_old_ones_are_pruned(
    make_node: MakeNode,
) -> None:
    node = make_node("rp")
    fleet, host, transport = setup(node, keepRecoveryPoints=2)
    installed = at(fleet, host, transport, "2026.4.2")

    taken = [recovery.take(fleet, host, transport, seq=s, installed=installed) for s in (7, 8)]
    newer = at(fleet, host, transport, "2026.4.3")
    for seq in (9, 10):  # two attempts at an upgrade that failed: same release, newer points
        recovery.take(fleet, host, transport, seq=seq, installed=newer)

    # The newest point of each of the 2 newest releases: the way back to 2026.4.2 is kept.
    assert sorted(p.name for p in points_dir(node).iterdir()) == [
        "10-default@2026.4.3.tar.gz",
        "8-default@2026.4.2.tar.gz",
    ]
    [point] = taken[-1]
    archive = Path(point.archive)
    assert archive.name == "8-default@2026.4.2.tar.gz"
    assert point.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert point.size_bytes == archive.stat().st_size
    assert (point.runtime_version, point.installed) == ("2026.4.2", installed)
    [asset] = point.assets
    assert (asset.kind, asset.source_path) == ("state", str(node.home / ".openclaw"))
    listed = subprocess.run(
        ["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    assert f"{point.archive_root}/manifest.json" in listed
    assert f"{asset.archive_path}/openclaw.json" in listed
    assert not [e for e in listed if "/.openclaw/npm/" in e], "plugin code is rebuilt, not kept"

    recovery.take(fleet, host, transport, seq=11, installed=at(fleet, host, transport, "2026.4.4"))
    assert sorted(p.name for p in points_dir(node).iterdir()) == [
        "10-default@2026.4.3.tar.gz",
        "11-default@2026.4.4.tar.gz",
    ], "not pruned to keepRecoveryPoints releases"


def test_the_disk_preflight_counts_what_the_backup_will_archive(make_node: MakeNode) -> None:
    node = make_node("rpdisk")
    fleet, host, transport = setup(node)
    at(fleet, host, transport, "2026.4.2")
    before = recovery.needed_bytes(host, transport, timeout=30)
    (node.home / ".openclaw" / "workspace").mkdir(parents=True, exist_ok=True)
    (node.home / ".openclaw" / "workspace" / "notes.bin").write_bytes(b"\1" * 3_000_000)

    after = recovery.preflight(host, transport, timeout=30)

    assert after - before >= 3_000_000


def test_a_restore_swaps_the_older_state_back_and_keeps_what_it_replaced(
    make_node: MakeNode,
) -> None:
    node = make_node("rprestore")
    fleet, host, transport = setup(node)
    older = at(fleet, host, transport, "2026.4.2")
    operations.restart_host(fleet, host, transport)
    [point] = recovery.take(fleet, host, transport, seq=1, installed=older)
    at(fleet, host, transport, "2026.4.3")
    transport.run(["openclaw", "config", "set", "gateway.mode", "local"], timeout=30)
    operations.restart_host(fleet, host, transport)
    assert stamp(config(node)) == "2026.4.3"  # 2026.4.2 would now refuse to start

    restored = recovery.restore(
        fleet, host, transport, [point], {"openclaw": "2026.4.2", DISCORD: "2026.4.2"}
    )

    probes = facts.gather(transport, productfacts.probes(node.port), timeout=30)
    assert probes.startupz.status is None, "the gateway was not left stopped"
    operations.restart_host(fleet, host, transport, stopped=True)
    ready = operations.wait_ready(fleet, host, host.profiles[0], transport, timeout=20)
    assert ready.running_version == "2026.4.2"
    now = config(node)
    assert stamp(now) == "2026.4.2" and "mode" not in now.get("gateway", {})  # type: ignore[operator]
    view = productfacts.installed_view(transport, host, str(node.prefix), timeout=30)
    assert (view.core, view.plugins) == ("2026.4.2", {DISCORD: "2026.4.2"})
    [aside] = restored.replaced
    kept = json.loads((Path(aside) / "openclaw.json").read_text())
    assert kept["gateway"]["mode"] == "local" and stamp(kept) == "2026.4.3", "state was lost"
    assert aside in restored.summary()


@pytest.mark.parametrize(
    "forgery", ["changed", "foreign archive", "asset outside home", "asset kind a path"]
)
def test_a_changed_or_forged_recovery_point_is_refused_before_anything_stops(
    make_node: MakeNode, forgery: str
) -> None:
    node = make_node("rpforged")
    fleet, host, transport = setup(node)
    installed = at(fleet, host, transport, "2026.4.2")
    operations.restart_host(fleet, host, transport)
    # Up before anything else: a gateway still starting answers /startupz 503, which the end
    # of this test would take for one that was stopped.
    operations.wait_ready(fleet, host, host.profiles[0], transport, timeout=60)
    [point] = recovery.take(fleet, host, transport, seq=1, installed=installed)
    if forgery == "changed":
        with Path(point.archive).open("ab") as archive:
            archive.write(b"\0")
    elif forgery == "foreign archive":
        point = point.model_copy(update={"archive": str(node.home / "elsewhere.tar.gz")})
    elif forgery == "asset outside home":
        asset = point.assets[0].model_copy(update={"source_path": "/etc"})
        point = point.model_copy(update={"assets": [asset]})
    else:  # the kind names the directory the live state is moved aside to
        asset = point.assets[0].model_copy(update={"kind": "../../../.ssh"})
        point = point.model_copy(update={"assets": [asset]})

    with pytest.raises(RecoveryPointUnusable):
        recovery.restore(fleet, host, transport, [point], {"openclaw": "2026.4.2"})

    probes = facts.gather(transport, productfacts.probes(node.port), timeout=30)
    assert probes.startupz.status == 200, "the gateway was stopped for a point that was refused"


# --- through the engine -------------------------------------------------------------------------


def test_a_downgrade_with_no_recovery_point_is_refused_in_the_products_words_and_restored(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    with World(
        tmp_path / "world", names=("mac-1", "mac-2"), initial="2026.4.3", registry=registry
    ) as world:
        world.bump("2026.4.3", message="fleet on 2026.4.3")  # its plugin install stamped 4.3
        assert reconcile(world).returncode == 0
        world.bump("2026.4.2", message="pin the older release")  # no recovery point of it
        # mac-1 left drained (by an operator, or a rollout that failed): its bookmark must hold
        # the weight it returns to, not the 0 it has then.
        servers = json.loads(world.lb_file.read_text())["servers"]
        world.lb_file.write_text(json.dumps({"servers": {**servers, "mac-1": 0}}))

        done = reconcile(world)

        assert done.returncode == 2, done.stderr
        assert "Update refused" in done.stderr and "2026.4.3" in done.stderr, done.stderr
        for host in world.hosts:
            assert product_version(host, "openclaw") == "2026.4.3"
        assert world.weights() == {"mac-1": 100, "mac-2": 100}, "restored host not in service"


def test_a_skill_link_is_bookmarked_and_back_after_a_restore(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    with World(tmp_path / "world", names=("mac-1", "mac-2"), registry=registry) as world:
        world.bump("2026.4.2", message="fleet on 2026.4.2")
        assert reconcile(world).returncode == 0
        mac1 = world.host("mac-1")
        source = mac1.home / ".openclaw" / "skill-src" / "notes"
        source.mkdir(parents=True)
        link = mac1.home / ".openclaw" / "skills" / "notes"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
        world.set_faults(mac1, doctor_red=["2026.4.3"])
        world.bump("2026.4.3", message="openclaw 2026.4.3 (mac-1 goes red)")
        killed = reconcile(world, env={"RECONCILER_FAILPOINTS": "mac-1/install:before"})
        assert killed.returncode == -9, killed.stderr
        link.unlink()  # lost between the bookmark and the restore

        done = reconcile(world)

        assert done.returncode == 2, done.stderr
        assert link.is_symlink() and link.readlink() == source, "the skill link is not back"
        repo = world.status_repo()
        tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
        folder = tree / "fleets/sandbox/bookmarks"
        [name] = [e.name for e in folder if "-mac-1-" in (e.name or "")][-1:]
        bookmark = json.loads((folder / name).data)
        assert bookmark["skillLinks"] == {str(link): str(source)}
