"""Which observation a bookmark or a ramp gate takes: one made ahead, or one made now.

`Executor.take_or_observe` decides from the look-ahead's age, `Executor.recheck` (ramp gates) from
what this process observed and a glance; every rollout in tests/test_engine.py runs both against
real hosts. Here an agent that counts its calls pins the decisions themselves: a look-ahead
that just finished is taken as is, an older one or none means observing now; a gate takes a
readiness this process observed within the last second as it is, and a peer's recorded one
while a glance agrees with it, else observes the peer.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.canonical import sha256_of
from reconciler.desired.spec import Host
from reconciler.errors import FactParseError
from reconciler.lb.file import WeightsFile
from reconciler.record.documents import (
    Installed,
    ProfileReadiness,
    Readiness,
    fingerprint_basis,
    seal_readiness,
)
from reconciler.rollout.readahead import ReadAhead
from reconciler.rollout.steps import FRESH_S, Executor
from tests.nodes import fleet_spec

OLD, NEW = "2026.4.2", "2026.4.3"
DISCORD = "@openclaw/discord"
Live = dict[str, tuple[bool, str | None]]


def readiness(host: str, core: str) -> Readiness:
    installed = Installed(core=core, plugins={DISCORD: core})
    profiles = [
        ProfileReadiness(
            profile="default", port=18789, healthz=True, readyz=True, health_ok=True,
            running_version=core, lb_weight=100,
        )
    ]  # fmt: skip
    basis = fingerprint_basis(None, installed, profiles)
    return seal_readiness(
        {
            "schemaVersion": 1,
            "fleet": "testfleet",
            "host": host,
            "observedAt": "2026-11-24T09:00:00Z",
            "specCommit": "0" * 40,
            "lockSha256": None,
            "nodeVersion": "20.20.2",
            "installed": installed.dump(),
            "profiles": [p.dump() for p in profiles],
            "green": True,
            "reasons": [],
            "basis": basis,
            "fingerprint": sha256_of(basis),
        }
    )


@dataclass
class CountingAgent:
    """Answers from fixed values and counts what it was asked."""

    core_now: dict[str, str] = field(default_factory=dict)
    glance_fails: bool = False
    plugin_now: dict[str, str] = field(default_factory=dict)
    """The plugin version the product lists, per host (default: the core's)."""
    glanced: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)

    def glance(self, host: Host) -> tuple[Installed, Live]:
        self.glanced.append(host.name)
        if self.glance_fails:
            raise FactParseError(host.name, "glance: not JSON")
        # The npm tree a glance reads: the core (the plugins are the product's tracked
        # installs, which only its plugin list shows).
        core = self.core_now[host.name]
        return Installed(core=core), {"default": (True, core)}

    def installed(self, host: Host) -> Installed:
        self.listed.append(host.name)
        core = self.core_now[host.name]
        return Installed(core=core, plugins={DISCORD: self.plugin_now.get(host.name, core)})

    def observe(self, host: Host, *, lb_weights: Mapping[str, int], **_: object) -> Readiness:
        self.observed.append(host.name)
        return readiness(host.name, self.core_now[host.name])


def looked_ahead(doc: Readiness, *, age: float) -> ReadAhead:
    """Reads ahead holding an observation of `doc`'s host that finished `age` seconds before
    it is taken (its clock says 0 when the observation finishes, `age` from then on)."""
    clock = itertools.chain([0.0], itertools.repeat(age))
    ahead = ReadAhead(clock=lambda: next(clock))
    ahead.start_observing(doc.host, lambda: doc)
    return ahead


def just_observed(*docs: Readiness) -> ReadAhead:
    """Reads ahead that remember this process observing `docs` just now."""
    ahead = ReadAhead(clock=lambda: 0.0)
    for doc in docs:
        ahead.note(doc)
    return ahead


def executor(agent: CountingAgent, tmp_path: Path, ahead: ReadAhead | None = None) -> Executor:
    weights = tmp_path / "weights.json"
    weights.write_text('{"servers": {"mac-1": 100, "mac-2": 100}}')
    hosts = [Host.model_validate({"name": n, "address": "127.0.0.1", "user": "op"}) for n in
             ("mac-1", "mac-2")]  # fmt: skip
    return Executor(
        fleet=fleet_spec("http://127.0.0.1:4873/", hosts),
        lock=None,
        spec_commit="0" * 40,
        agent=agent,  # type: ignore[arg-type]  # only what take_or_observe calls
        lb=WeightsFile(weights),
        now=lambda: "2026-11-24T09:00:00Z",
        ahead=ahead or ReadAhead(),
    )


def test_a_look_ahead_that_just_finished_is_taken_as_is(tmp_path: Path) -> None:
    doc = readiness("mac-1", OLD)
    agent = CountingAgent(core_now={"mac-1": OLD})
    ahead = looked_ahead(doc, age=FRESH_S / 2)
    assert executor(agent, tmp_path, ahead).take_or_observe(["mac-1"]) == {"mac-1": doc}
    assert agent.glanced == [] and agent.observed == []


def test_an_older_look_ahead_or_none_means_observing_now(tmp_path: Path) -> None:
    agent = CountingAgent(core_now={"mac-1": NEW, "mac-2": OLD})
    ahead = looked_ahead(readiness("mac-1", OLD), age=FRESH_S * 5)
    got = executor(agent, tmp_path, ahead).take_or_observe(["mac-1", "mac-2"])
    assert list(got) == ["mac-1", "mac-2"]  # in the order asked
    assert got["mac-1"].installed.core == NEW  # what the host runs now, not the look-ahead's
    assert agent.glanced == [] and sorted(agent.observed) == ["mac-1", "mac-2"]


def test_a_ramp_gate_observes_a_peer_whose_glance_differs_or_fails(tmp_path: Path) -> None:
    agent = CountingAgent(core_now={"mac-1": NEW})
    got = executor(agent, tmp_path).recheck({"mac-1": readiness("mac-1", OLD)})
    assert got["mac-1"].installed.core == NEW
    assert agent.glanced == ["mac-1"] and agent.observed == ["mac-1"]
    failing = CountingAgent(core_now={"mac-1": OLD}, glance_fails=True)
    executor(failing, tmp_path).recheck({"mac-1": readiness("mac-1", OLD)})
    assert failing.glanced == ["mac-1"] and failing.observed == ["mac-1"]


def test_a_readiness_this_process_just_observed_needs_no_glance(tmp_path: Path) -> None:
    mine, theirs = readiness("mac-1", NEW), readiness("mac-2", NEW)
    agent = CountingAgent(core_now={"mac-1": NEW, "mac-2": NEW})
    got = executor(agent, tmp_path, just_observed(mine)).recheck({"mac-1": mine, "mac-2": theirs})
    assert got == {"mac-1": mine, "mac-2": theirs}
    assert agent.glanced == ["mac-2"] and agent.observed == []
    assert agent.listed == ["mac-2"]  # the plugins, as the product lists them


def test_a_ramp_gate_sees_a_peers_plugin_changed_through_the_product(tmp_path: Path) -> None:
    """A glance reads npm's tree, which no longer holds plugins: the product's list does."""
    theirs = readiness("mac-2", NEW)
    agent = CountingAgent(core_now={"mac-2": NEW}, plugin_now={"mac-2": "2026.4.4"})
    executor(agent, tmp_path).recheck({"mac-2": theirs})
    assert agent.glanced == ["mac-2"] and agent.listed == ["mac-2"]
    assert agent.observed == ["mac-2"], "a peer whose plugin changed was not observed again"
