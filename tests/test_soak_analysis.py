"""A soak that saw too few requests is inconclusive, never passed; the spec says what that does
(`analysis.inconclusive`: pass, hold or fail). Real sshd hosts, the weights-file LB (whose
counters never move: every soak is inconclusive)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.desired.spec import Fleet, Host
from reconciler.rollout.planner import plan
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, product_version
from tests.nodes import fleet_spec
from tests.worlds import reconcile, subjects

OLD, NEW = "2026.4.2", "2026.4.3"
MakeWorld = Callable[[str], World]


@pytest.fixture
def make_world(tmp_path: Path, registry: LocalRegistry) -> Iterator[MakeWorld]:
    made: list[World] = []

    def make(policy: str) -> World:
        analysis = {"minRequests": 5, "inconclusive": policy}
        world = World(
            tmp_path / policy, names=("mac-1", "mac-2"), steps=(50, 100), soak="1s",
            registry=registry, extra_rollout={"analysis": analysis},
        )  # fmt: skip
        made.append(world)
        return world

    try:
        yield make
    finally:
        for world in made:
            world.close()


def test_an_inconclusive_soak_holds_where_the_spec_says_hold(make_world: MakeWorld) -> None:
    world = make_world("hold")
    world.bump(NEW)

    held = reconcile(world)

    assert held.returncode == 3, held.stderr
    assert "inconclusive" in held.stderr and "holding until enough came" in held.stderr
    assert world.weights() == {"mac-1": 50, "mac-2": 100}, "the weight widened regardless"
    assert not any("soak at 50% passed" in s for s in subjects(world))


def test_an_inconclusive_soak_fails_where_the_spec_says_fail(make_world: MakeWorld) -> None:
    world = make_world("fail")
    world.bump(NEW)

    done = reconcile(world)

    assert done.returncode == 2, done.stderr
    assert "inconclusive: 0 requests" in done.stderr
    assert product_version(world.host("mac-1"), "openclaw") == OLD, "not restored"
    assert world.weights() == {"mac-1": 100, "mac-2": 100}


def test_an_inconclusive_soak_that_passes_is_recorded_as_inconclusive(
    make_world: MakeWorld,
) -> None:
    world = make_world("pass")
    world.bump(NEW)

    done = reconcile(world)

    assert done.returncode == 0, done.stderr
    soaks = [s for s in subjects(world) if ": soak at " in s]
    assert soaks and all("inconclusive, passed on (inconclusive: 0 requests" in s for s in soaks)


def test_plan_warns_when_analysis_cannot_judge() -> None:
    hosts = [Host.model_validate({"name": "mac-1", "address": "10.0.0.1", "user": "op"})]
    no_soak = fleet_spec("https://npm.example.net/", hosts, soak="0s")
    assert any("cannot judge anything" in w for w in plan(no_soak, None).warnings)
    lenient = fleet_spec("https://npm.example.net/", hosts, soak="5m")
    assert any("minRequests is 0" in w for w in plan(lenient, None).warnings)
    strict = Fleet.model_validate(
        lenient.model_dump(by_alias=True)
        | {"rollout": {"soak": "5m", "analysis": {"minRequests": 50}}}
    )
    assert not [w for w in plan(strict, None).warnings if "analysis" in w]
