"""What one pass over a rollout in progress reads, and what every pass answers.

Why: each part of a pass (run a step and record it, hold at a gate, soak, fail and restore)
reads the same things: the status branch as the pass read it, the spec, the rollout record,
its plan, an executor for the spec's hosts. `Pass` carries them, read once and frozen, instead
of every part taking them as arguments. A part that changes the rollout writes the record's
next state (`RolloutRecord`'s transitions) with `Pass.write`, and the pass ends with the
`PassResult` it returns.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from reconciler.desired.spec import Fleet
from reconciler.desired.validate import LoadedSpec
from reconciler.record.documents import Readiness, RolloutRecord
from reconciler.record.status import FleetStatus, Transition
from reconciler.rollout.events import EventKind, Notifier
from reconciler.rollout.planner import Plan, Step
from reconciler.rollout.steps import Executor, Outcome

if TYPE_CHECKING:
    from reconciler.record.documents import Lease
    from reconciler.record.gitstore import GitStore


log = logging.getLogger(__name__)


class Failpoints:
    """Named crash points (`RECONCILER_FAILPOINTS=mac-2/install:after,...`), like etcd's gofail.

    Used by the crash-safety tests to SIGKILL the process at an exact phase boundary.
    """

    def __init__(self, spec: str = "") -> None:
        self.points = {p.strip() for p in spec.split(",") if p.strip()}

    @classmethod
    def from_env(cls) -> Failpoints:
        return cls(os.environ.get("RECONCILER_FAILPOINTS", ""))

    def hit(self, name: str) -> None:
        if name in self.points:
            log.warning("failpoint %s: killing myself", name)
            os.kill(os.getpid(), signal.SIGKILL)


class Driver(Protocol):
    """What the parts of a pass use of the engine that drives it (`engine.Engine`): named here
    so the parts depend on this, not on the module that imports them."""

    store: GitStore
    fleet_name: str
    instance: str
    poll_s: float
    failpoints: Failpoints
    notifier: Notifier

    @property
    def clock(self) -> Callable[[], datetime]: ...
    def load(self, commit: str) -> tuple[LoadedSpec | None, list[str]]: ...
    def fleet_at(self, commit: str) -> Fleet | None: ...
    def plan(
        self,
        spec: LoadedSpec,
        head: str,
        base: Fleet | None,
        base_commit: str | None,
        first: Sequence[str] = (),
    ) -> Plan: ...
    def lease_for(self, plan: Plan) -> float: ...
    def timestamp(self) -> str: ...
    def executor(self, status: FleetStatus, spec: LoadedSpec, commit: str) -> Executor: ...
    def commit(
        self,
        status: FleetStatus,
        t: Transition,
        record: RolloutRecord,
        *,
        renew: Lease | None = None,
        lease_s: float = 0.0,
        defer: bool = False,
    ) -> str | None: ...
    def event(self, kind: EventKind, message: str, **fields: object) -> None: ...


@dataclass(frozen=True)
class PassResult:
    """What one pass did and when it wants to run again (None: only on a new commit)."""

    phase: str
    message: str
    requeue_after: float | None
    acted: bool = False
    commit: str | None = None
    progress: tuple[int, int, float] | None = None
    """(steps done, steps in the plan, the plan's estimate of the seconds left)."""


@dataclass(frozen=True)
class Pass:
    """One pass over a rollout in progress, once it holds the lease and checked its plan."""

    engine: Driver
    status: FleetStatus
    """The fleet's status branch as this pass read it (its commits go on top of it)."""
    spec: LoadedSpec
    record: RolloutRecord
    """The rollout as recorded (`status.rollout`); a pass writes its next state, once."""
    plan: Plan
    now: datetime
    """When the pass checked the lease (the freeze and the windows are judged at it)."""

    @property
    def fleet(self) -> Fleet:
        return self.spec.fleet

    @cached_property
    def executor(self) -> Executor:
        """The executor of this pass: the spec's hosts at the rollout's commit."""
        return self.engine.executor(self.status, self.spec, self.record.spec_commit or "")

    @cached_property
    def step_ids(self) -> list[str]:
        return [s.id for s in self.plan.steps]

    # --- recording ---------------------------------------------------------------------------

    def write(self, t: Transition, record: RolloutRecord, *, defer: bool = False) -> str | None:
        """Write `t` with the rollout's next `record` as one status commit, which renews the
        lease this pass holds (unless `t` writes the lease itself)."""
        lease_s = self.engine.lease_for(self.plan)
        return self.engine.commit(
            self.status, t, record, renew=self.status.lease, lease_s=lease_s, defer=defer
        )

    def transition(
        self, subject: str, *, node: str | None = None, phase: str | None = None
    ) -> Transition:
        """A status commit of this rollout's spec commit, to be filled and written."""
        spec_commit = self.record.spec_commit
        return Transition(
            self.engine.fleet_name, subject, spec_commit=spec_commit, node=node, phase=phase
        )

    def transition_of(self, subject: str, step: Step, outcome: Outcome) -> Transition:
        """The status commit of a step's `outcome`: its readiness documents and bookmark."""
        phase = outcome.host_phase or self.record.phase
        t = self.transition(subject, node=",".join(step.hosts), phase=phase)
        for doc in outcome.readiness.values():
            t.readiness(doc)
        if outcome.bookmark is not None:
            t.bookmark(outcome.bookmark)
        return t

    def event(self, kind: EventKind, message: str, **fields: object) -> None:
        """Broadcast an event about this rollout's spec commit."""
        self.engine.event(kind, message, spec_commit=self.record.spec_commit, **fields)

    # --- where the rollout stands ------------------------------------------------------------

    def next_step(self) -> Step | None:
        """The first step of the plan not done yet (None: the rollout is complete)."""
        return next((s for s in self.plan.steps if s.id not in self.record.done_steps), None)

    def next_hosts(self, step: Step) -> list[str]:
        """The hosts of the next untouched bookmark after `step`, if any."""
        after = self.plan.steps[self.plan.steps.index(step) + 1 :]
        done = self.record.done_steps
        following = (s for s in after if s.action == "bookmark" and s.id not in done)
        return next((s.hosts for s in following), [])

    def untouched(self, step: Step) -> bool:
        """Is no step of `step`'s hosts done yet?"""
        done = self.record.done_steps
        return not any(s.id in done for s in self.plan.steps if s.hosts == step.hosts)

    def upgraded(self) -> list[str]:
        """The hosts whose verify step is done."""
        done = self.record.done_steps
        return [
            h for s in self.plan.steps if s.action == "verify" and s.id in done for h in s.hosts
        ]

    def verified(self, also: Sequence[str] = ()) -> list[str]:
        """Upgraded hosts (and `also`) whose recorded readiness is of this rollout's commit."""
        nodes = self.status.nodes
        return [
            h
            for h in dict.fromkeys([*self.upgraded(), *also])
            if h in nodes and nodes[h].spec_commit == self.record.spec_commit
        ]

    def golden(self, *views: Mapping[str, Readiness]) -> Readiness | None:
        """The readiness that carries the golden fingerprint: fresh if a host still has it,
        else as recorded when the first host of this rollout was verified."""
        if self.record.golden_fingerprint is None:
            return None
        for nodes in views:
            for name in self.plan.order:
                doc = nodes.get(name)
                if doc is not None and doc.fingerprint == self.record.golden_fingerprint:
                    return doc
        return None
