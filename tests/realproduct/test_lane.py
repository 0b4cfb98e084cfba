"""The real-product lane: the reconciler against the released `openclaw`, not the stand-in.

Two real sshd hosts, each with its own HOME and npm prefix, Node 26 and a real gateway (token
auth, run by a service script) behind real HAProxy, with requests flowing through it. The
scenarios run in this order on one world (installing a release costs ~45 s of CPU per host):
adopt, a bump of core and plugin, a revert that is a real downgrade, and a host whose gateway
dies at start after its upgrade. A scenario that finds the fleet elsewhere than it expects
first puts the hosts back the way an operator would (`RealWorld.reset`).

Each ends by asking the product itself (`openclaw --version`, /startupz, /readyz,
`openclaw plugins list --json`, `openclaw doctor --json`, HAProxy's weights) whether the fleet
is what the spec says, never the reconciler's own records.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from reconciler.hosts import facts, productfacts
from reconciler.hosts.transport import Transport
from reconciler.sandbox.realproduct import PLUGIN, RELEASES
from reconciler.sandbox.realworld import ProductView, RealWorld
from reconciler.sandbox.traffic import Traffic
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, WorldHost
from reconciler.views import report
from tests.realproduct.contract import invented

pytestmark = [pytest.mark.realproduct, pytest.mark.timeout(1200)]

OLD, NEW, NEWEST = RELEASES
RUN_TIMEOUT = 1100
STORY: dict[str, str] = {}
"""Commits one scenario leaves for the next (the bump that the revert reverts)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealWorld]:
    built = RealWorld(tmp_path_factory.mktemp("real"), initial=OLD)
    try:
        yield built
    finally:
        built.close()


def reconcile(world: RealWorld, *extra: str) -> subprocess.CompletedProcess[str]:
    head = world.status_repo().references.get("refs/heads/reconciler/status")
    done = subprocess.run(
        world.reconcile_argv("--retries", "1", "--max-backoff", "5", *extra),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=dict(os.environ),
    )
    record_phases(world, str(head.target) if head is not None else None)
    return done


PHASES_FILE = Path(tempfile.gettempdir()) / "openclaw-lane-phases.md"
"""Where the lane appends each run's per-phase real timings (for the issue notes)."""


def record_phases(world: RealWorld, after: str | None) -> None:
    rows = report.phase_rows(world.status_repo(), after)
    with PHASES_FILE.open("a") as out:
        out.write(f"\n### {os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\n\n")
        out.write("| host | phase | seconds |\n|---|---|---|\n")
        out.writelines(f"| {h} | {p} | {s} |\n" for h, p, s in rows)


def spec(version: str) -> dict[str, str]:
    return {PLUGIN: version}


def differences(world: RealWorld, core: str, plugins: Mapping[str, str]) -> dict[str, list[str]]:
    """Every host's differences from the spec, as the product reports them."""
    views = world.views()
    found = {name: view.differences(core, plugins, 100) for name, view in views.items()}
    return {name: wrong for name, wrong in found.items() if wrong}


def gateway_pid(world: RealWorld, name: str) -> str:
    return (world.host(name).home / ".openclaw-service" / "gateway.pid").read_text().strip()


def at(world: RealWorld, core: str) -> None:
    """The fleet on `core` with the plugin at the same release, serving at full weight: reset
    the hosts that are not (after a scenario the reconciler could not finish)."""
    world.reset_where(core, spec(core))
    assert not differences(world, core, spec(core))


# --- the contract: the stand-in against the product -----------------------------------------


def outputs(world: World, host: WorldHost) -> tuple[Transport, dict[str, Any]]:
    """Every fact the reconciler reads from a host: parsed (the parser must accept the
    output) and, for the product's JSON, the raw document."""
    assert world.ssh is not None
    transport = world.ssh[host.name].transport()
    env = {"OPENCLAW_GATEWAY_PORT": str(host.gateway_port)}
    raw: dict[str, Any] = {}
    for fact in (
        productfacts.doctor(env),
        productfacts.post_upgrade(env),
        productfacts.health(env),
        productfacts.plugins(env),
    ):
        result = transport.run(fact.argv, timeout=120, env=fact.env, max_output=fact.max_output)
        fact.parse(host.name, result)
        raw[fact.name] = json.loads(result.stdout)
    probes = facts.gather(transport, productfacts.probes(host.gateway_port), timeout=30)
    raw |= {f"GET {p.path}": p.body for p in probes}
    facts.gather(transport, facts.openclaw_version(env), timeout=30)
    facts.gather(transport, facts.host_tree(str(host.prefix)), timeout=60)
    backup = ["openclaw", "backup", "create", "--dry-run", "--json"]
    raw["backup create --dry-run"] = json.loads(transport.run(backup, timeout=60).stdout)
    return transport, raw


REAL = Path(__file__).resolve().parents[1] / "data" / "real"
CAPTURED = {
    "doctor": [json.loads((REAL / "doctor-2026.9.6.json").read_text())],
    "health": [json.loads((REAL / "health-2026.9.6.json").read_text())],
    "plugins": [json.loads((REAL / "plugins-list-2026.9.5.json").read_text())],
}
"""What the newer releases printed (tests/data/real): the lane's hosts run the oldest."""


class DiscordOnly(World):
    """The stand-in with the lane's one plugin (channel names are keys of health's output)."""

    plugin_names = (PLUGIN,)


@pytest.fixture
def standin(registry: LocalRegistry, tmp_path: Path) -> Iterator[World]:
    built = DiscordOnly(tmp_path / "standin", names=("standin-1",), registry=registry)
    try:
        yield built
    finally:
        built.close()


def test_the_standin_prints_nothing_the_product_does_not(world: RealWorld, standin: World) -> None:
    host = standin.hosts[0]  # its plugins installed the product's way, like the lane's
    transport, theirs = outputs(standin, host)
    transport.close()
    transport, ours = outputs(world, world.hosts[0])
    transport.close()

    assert theirs.keys() == ours.keys()
    wrong = {what: invented(theirs[what], ours[what], *CAPTURED.get(what, [])) for what in ours}
    found = {what: paths for what, paths in wrong.items() if paths}
    assert not found, json.dumps(found, indent=1)


# --- the scenarios ----------------------------------------------------------------------------


def test_adopt_changes_nothing_on_a_fleet_that_matches(world: RealWorld) -> None:
    pids = {h.name: gateway_pid(world, h.name) for h in world.hosts}
    world.bump(OLD, spec(OLD), message=f"fleet on {OLD}")

    done = reconcile(world)

    assert done.returncode == 0, done.stderr[-3000:]
    assert not differences(world, OLD, spec(OLD))
    assert {h.name: gateway_pid(world, h.name) for h in world.hosts} == pids, "restarted"


def test_bump_of_core_and_plugin_reaches_the_product(world: RealWorld) -> None:
    at(world, OLD)
    assert world.haproxy is not None
    traffic = Traffic(world.haproxy.frontend_port)
    traffic.start()
    STORY["bump"] = world.bump(NEW, spec(NEW), message=f"openclaw {NEW}")

    done = reconcile(world)

    statuses = traffic.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert statuses.get(200, 0) > 100 and traffic.failed == 0, statuses
    assert not differences(world, NEW, spec(NEW))


def test_revert_is_a_real_downgrade(world: RealWorld) -> None:
    """The newer release wrote the config (an operator's change): the older one would refuse
    to start on it, so the revert goes back onto the recovery point the bump took, and the
    state it replaces is kept."""
    bump = STORY.get("bump")
    if bump is None or world.reset_where(NEW, spec(NEW)):
        at(world, OLD)
        bump = world.bump(NEW, spec(NEW), message=f"openclaw {NEW}")
        assert reconcile(world).returncode == 0
    for host in world.hosts:  # an operator's config change, written by the running release
        world.openclaw(host, "config", "set", "gateway.bind", "loopback")
        assert world.view(host).config_version == NEW
    world.revert(bump)

    done = reconcile(world)

    assert done.returncode == 0, done.stderr[-3000:]
    assert not differences(world, OLD, spec(OLD))
    for host in world.hosts:
        kept = host.home / ".local/state/openclaw-reconciler/replaced"
        asides = [p / "openclaw.json" for p in kept.glob("*/0-state")]
        assert any('"bind": "loopback"' in a.read_text() for a in asides), "state lost"


def test_gateway_that_dies_at_start_is_restored(world: RealWorld) -> None:
    at(world, OLD)
    first = world.hosts[0]
    world.crash_at_start(first, NEW)
    try:
        world.bump(NEW, spec(NEW), message=f"openclaw {NEW} (dies at start on {first.name})")
        done = reconcile(world)
    finally:
        world.crash_at_start(first, None)

    assert done.returncode == 2, done.stderr[-3000:]
    assert not differences(world, OLD, spec(OLD)), "the red host is restored, the other untouched"


def test_views_read_the_real_product(world: RealWorld) -> None:
    """The lane itself: the hosts run the real product (not the stand-in) on Node 26."""
    view: ProductView = world.view(world.hosts[0])
    assert view.version in RELEASES
    assert not view.errors
    node = world.openclaw(world.hosts[0], "--version")
    assert "standin" not in node
    assert Path(world.node_bin / "node").exists()
