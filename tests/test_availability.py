"""The availability budget (`rollout.maxUnavailable`) on real HAProxy and real sshd hosts.

Out of service counts whatever took a host out: an HAProxy server in MAINT that the reconciler
did not set, a gateway that is down (HAProxy's /readyz check marks it DOWN), a weight of 0.
A rollout repairs such a host first, and holds before draining another while the budget is
spent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.desired.spec import Host
from reconciler.rollout import gates, planner
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, product_version
from tests.nodes import fleet_spec
from tests.worlds import reconcile, subjects

OLD, NEW, NEWER = "2026.4.2", "2026.4.3", "2026.4.4"


def upgraded_in_order(world: World) -> list[str]:
    """Hosts in the order their install steps were recorded on the status branch."""
    return [s.split(":", 1)[0] for s in subjects(world) if ": installed openclaw" in s]


@pytest.fixture
def world(tmp_path: Path, registry: LocalRegistry) -> Iterator[World]:
    with World(
        tmp_path / "world", names=("mac-1", "mac-2", "mac-3"), steps=(100,), registry=registry,
        lb="haproxy",
    ) as built:  # fmt: skip
        yield built


def test_a_host_out_of_service_is_repaired_first_then_the_budget_holds(world: World) -> None:
    assert world.haproxy is not None
    haproxy = world.haproxy.driver()
    haproxy.set_state("mac-3", "maint")  # an operator's, not the reconciler's
    world.bump(NEW)

    held = reconcile(world)

    assert held.returncode == 3, held.stderr
    assert "out of service, repaired first: mac-3" in held.stderr
    assert upgraded_in_order(world) == ["mac-3"], "a healthy host was taken out first"
    assert "maxUnavailable 1 reached" in held.stderr and "mac-3 is MAINT" in held.stderr
    assert product_version(world.host("mac-1"), "openclaw") == OLD
    assert world.weights()["mac-1"] == 100 and world.weights()["mac-2"] == 100

    haproxy.set_state("mac-3", "ready")
    done = reconcile(world)

    assert done.returncode == 0, done.stderr
    assert upgraded_in_order(world) == ["mac-3", "mac-1", "mac-2"]
    assert {product_version(h, "openclaw") for h in world.hosts} == {NEW}


def test_a_budget_of_two_lets_a_rollout_pass_one_host_down(world: World) -> None:
    mac2 = world.host("mac-2")
    world.stop_gateway(mac2)  # down: HAProxy's check marks it DOWN, readiness says why
    world.extra_rollout["maxUnavailable"] = 2
    world.bump(NEW)

    done = reconcile(world)

    assert done.returncode == 0, done.stderr
    assert upgraded_in_order(world)[0] == "mac-2", "the down host was not repaired first"
    assert {product_version(h, "openclaw") for h in world.hosts} == {NEW}
    assert world.weights() == {"mac-1": 100, "mac-2": 100, "mac-3": 100}


# --- the pure parts -----------------------------------------------------------------------------


def test_the_budget_counts_hosts_already_out_and_not_the_one_being_repaired() -> None:
    assert gates.availability_refusal({}, ["mac-1"], 1) is None
    assert gates.availability_refusal({"mac-3": "DOWN"}, ["mac-3"], 1) is None
    refusal = gates.availability_refusal({"mac-3": "gateway default not ready"}, ["mac-1"], 1)
    assert refusal is not None and "mac-3: gateway default not ready" in refusal
    assert gates.availability_refusal({"mac-3": "MAINT"}, ["mac-1"], 2) is None
    assert gates.availability_refusal({"a": "x", "b": "y"}, ["c"], 2) is not None


def test_the_plan_takes_the_hosts_out_of_service_first() -> None:
    hosts = [
        Host.model_validate({"name": n, "address": f"10.0.0.{i}", "user": "op", "role": r})
        for i, (n, r) in enumerate([("mac-1", "canary"), ("mac-2", "stable"), ("mac-3", "stable")])
    ]
    fleet = fleet_spec("https://npm.example.net/", hosts)
    plain = planner.plan(fleet, None)
    repaired = planner.plan(fleet, None, first=["mac-3"])
    assert plain.order == ["mac-1", "mac-2", "mac-3"]
    assert repaired.order == ["mac-3", "mac-1", "mac-2"]
    assert repaired.steps[0].id == "mac-3/bookmark" and repaired.sha256 != plain.sha256
