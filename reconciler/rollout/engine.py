"""The reconcile pass: observe -> plan -> act one step -> record -> requeue.

Like a controller-runtime reconciler, a pass reads everything fresh (the spec branch, the
status branch, the hosts it is about to touch), does at most one step, records it as one
status commit, and says when it wants to run again. Progress lives on the status branch, never
in memory, so a reconciler killed at any point resumes from the branch and repeats at most one
idempotent step.

This module drives a pass, top to bottom (`Engine.reconcile`): which head, whether it may be
applied, whether this instance holds the lease, which step is next; and it holds what every
part shares (loading specs, writing a status commit, broadcasting). The parts, one module each:

- `specchange`: a new spec head starts a rollout, or is recorded as invalid;
- `holds`: a freeze, a closed window, availability or a ramp gate holds the rollout;
- `soak`: a ramp that soaks, judged by canary analysis;
- `progress`: a step done (or hosts found converged) recorded, the rollout completed;
- `failure`: a red step freezes the fleet, its hosts are restored from their bookmarks;
- `drift`: a Complete fleet watched for drift, and self-healed;
- `passcontext`: `Pass`, what one pass over a rollout in progress reads, and `PassResult`;
- `steps` (the executor: what each step does on hosts) and `readahead` (reads started early).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from reconciler.desired import source, speccache
from reconciler.desired.signatures import SignaturePolicy
from reconciler.desired.spec import Fleet, seconds
from reconciler.desired.validate import LoadedSpec, load
from reconciler.errors import PermanentError, SpecError
from reconciler.lb import LoadBalancer
from reconciler.record.documents import Lease, RolloutRecord
from reconciler.record.gitstore import GitStore, StatusRewritten
from reconciler.record.status import FleetStatus, Transition, read_status, write
from reconciler.rollout import drift, failure, holds, planner, progress, soak, specchange
from reconciler.rollout import lease as leases
from reconciler.rollout.events import Event, EventKind, Notifier
from reconciler.rollout.passcontext import Failpoints, Pass, PassResult
from reconciler.rollout.planner import Plan, Step
from reconciler.rollout.readahead import ReadAhead
from reconciler.rollout.steps import Executor, HostAgent

__all__ = ["Engine", "Failpoints", "PassResult", "utcnow"]

log = logging.getLogger(__name__)
V = TypeVar("V")
SPEC_CACHE = 8  # loaded specs kept (commits are immutable)
SETTLED = ("Complete", "Failed", "Invalid", "Idle")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Engine:
    """Reconciles one fleet of one spec repository."""

    store: GitStore
    fleet_name: str
    agent_for: Callable[[LoadedSpec, str], HostAgent]
    lb_for: Callable[[Fleet], LoadBalancer]
    notifier: Notifier
    instance: str
    lease_s: float = 120.0
    poll_s: float = 1.0
    clock: Callable[[], datetime] = utcnow
    failpoints: Failpoints = field(default_factory=Failpoints.from_env)
    spec_cache: Path | None = None  # validated specs on disk (speccache), for short-lived runs
    signatures: SignaturePolicy | None = None  # set: only a head signed by a trusted key applies
    close_agents: Callable[[], None] | None = None  # stops what agents run (see close)
    _signed: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)
    _ahead: tuple[HostAgent, ReadAhead] | None = field(default=None, init=False, repr=False)
    _specs: dict[str, tuple[LoadedSpec | None, list[str]]] = field(
        default_factory=dict, init=False, repr=False
    )

    # --- the pass ------------------------------------------------------------------------

    def reconcile(self) -> PassResult:
        """One pass: read both branches, then start the head's rollout, refuse the head, or
        go on with the rollout in hand."""
        self.store.fetch()
        status = read_status(self.store, self.fleet_name)
        self._check_history(status)
        head = self.store.spec_head()
        if head is None:
            return PassResult("Idle", f"branch {self.store.branch} not found", None)
        head_id = str(head.id)
        unsigned = self._unsigned(head_id)
        if unsigned is not None:  # recorded like an invalid spec: the last good state stays
            return specchange.invalid(self, status, head_id, [unsigned])
        spec, problems = self.load(head_id)
        record = status.rollout
        if spec is None:
            return specchange.invalid(self, status, head_id, problems)
        if record is None or record.spec_commit != head_id:
            if record is not None and head_id in record.failed_commits:
                return PassResult(
                    "Failed", f"{head_id[:12]} failed before; waiting for a new commit", None
                )
            return specchange.start(self, status, spec, head_id)
        return self._continue(status, spec, record)

    def _continue(self, status: FleetStatus, spec: LoadedSpec, record: RolloutRecord) -> PassResult:
        """The rollout of the head in hand: watched once settled, else (holding the lease)
        restored, held, stepped or completed."""
        failed = [h for h, s in record.hosts.items() if s.phase == "Failed"]
        if record.phase in SETTLED and not (record.phase == "Failed" and failed):
            return drift.watch(self, status, spec, record)
        now = self.clock()
        if leases.held_by_other(status.lease, self.instance, now):
            assert status.lease is not None
            wait = (leases.parse_time(status.lease.expires_at) - now).total_seconds()
            message = f"standing by: {status.lease.holder} holds the lease"
            return PassResult(record.phase, message, min(max(wait, 0.1), self.poll_s * 5))
        base = self.fleet_at(record.base_commit) if record.base_commit else None
        plan = self.plan(
            spec, record.spec_commit or "", base, record.base_commit, record.repair_first
        )
        if plan.sha256 != record.plan_sha256:
            raise PermanentError(
                f"plan of {record.spec_commit} changed under the rollout "
                f"({plan.sha256[:12]} != {record.plan_sha256})"
            )
        lease_s = self.lease_for(plan)
        if leases.needs_renewal(status.lease, self.instance, now, lease_s):
            return self._renew_lease(status, record, lease_s)
        p = Pass(self, status, spec, record, plan, now)  # from here on, this pass holds the lease
        if failed:  # a restore is never held by the freeze its own failure wrote
            return failure.restore(p, failed[0])
        held = holds.by_freeze_or_window(p)
        if held is not None:
            return held
        step = p.next_step()
        if step is None:
            return progress.complete(p)
        return self._step(p, step)

    def _step(self, p: Pass, step: Step) -> PassResult:
        """Run `step` (unless a gate, a soak or the fleet's availability holds it), with what
        the next steps read started meanwhile, and record it."""
        ex = p.executor
        peers: list[str] = []
        if step.action == "verify":  # while this host becomes ready
            ex.read_ahead(p.next_hosts(step), p.status.nodes)
            peers = [h for h in p.verified() if h not in step.hosts]
        if step.action in progress.PRE_RAMP and p.untouched(step) and p.spec.lock is not None:
            ex.start_release_reads(step.hosts, p.status.nodes)  # unless the last verify did
            docs = ex.take_or_observe(step.hosts)  # the bookmark step reuses these
            skipped = progress.skip_if_converged(p, step, docs)
            if skipped is not None:
                return skipped
        if step.action == "ramp":
            held = soak.soak_or_gate(p, step)
            if held is not None:
                return held
        if step.action == "drain" and p.fleet.rollout.strategy == "rolling":
            held = holds.before_drain(p, step)
            if held is not None:
                return held
        self.failpoints.hit(f"{step.id}:before")
        outcome = ex.run(step, seq=p.status.next_seq, peers=peers)
        self.failpoints.hit(f"{step.id}:after")
        if outcome.red is not None:
            return failure.fail(p, step, outcome)
        return progress.record_step(p, step, outcome)

    def close(self) -> None:
        """At the end of a run: stop what runs ahead on hosts (reads ahead, registry reads),
        then let the status pushes in flight reach the remote."""
        if self._ahead is not None:
            self._ahead[1].close()
            self._ahead = None
        if self.close_agents is not None:
            self.close_agents()
        self.store.close()

    def release(self) -> str | None:
        """Give the lease back (on shutdown), so a standby can take over at once."""
        self.store.fetch()
        status = read_status(self.store, self.fleet_name)
        if status.lease is None or status.lease.holder != self.instance:
            return None
        record = status.rollout
        t = Transition(
            self.fleet_name,
            f"lease released by {self.instance} (shutting down)",
            spec_commit=record.spec_commit if record else None,
            phase=record.phase if record else None,
        )
        t.reconciler = self.instance
        t.put("lease.json", None)
        return write(self.store, status, t)

    def _check_history(self, status: FleetStatus) -> None:
        """Refuse to act on a status branch that was rewritten (force-pushed) under us."""
        seen = self.store.repo.references.get(f"refs/reconciler/seen/{self.store.status_branch}")
        # Only what the remote confirmed is remembered: a push still in flight may not arrive.
        confirmed = self.store.remote_status_head()
        if status.commit is None or seen is None:
            if confirmed is not None:
                self._remember(str(confirmed.id))
            return
        if not self.store.is_ancestor(str(seen.target), str(status.commit.id)):
            raise StatusRewritten(
                f"status branch {self.store.status_branch} was rewritten: {str(seen.target)[:12]} "
                f"is no longer an ancestor of {str(status.commit.id)[:12]}; refusing to act. "
                "Restore the branch or delete the cache to accept the new history."
            )
        if confirmed is not None:
            self._remember(str(confirmed.id))

    def _remember(self, commit: str) -> None:
        name = f"refs/reconciler/seen/{self.store.status_branch}"
        self.store.set_local_ref(name, commit, consequence="nothing was applied")

    def _renew_lease(
        self, status: FleetStatus, record: RolloutRecord, lease_s: float
    ) -> PassResult:
        now = self.clock()
        lease = leases.renewed(status.lease, self.fleet_name, self.instance, now, lease_s)
        taken = status.lease is None or status.lease.holder != self.instance
        subject = (
            f"lease {'taken' if taken else 'renewed'} by {self.instance} until {lease.expires_at}"
        )
        t = Transition(self.fleet_name, subject, spec_commit=record.spec_commit, phase=record.phase)
        t.put("lease.json", lease)
        t.reconciler = self.instance
        commit = write(self.store, status, t, force=True)
        return PassResult(record.phase, subject, 0.0, acted=True, commit=commit)

    # --- specs and plans -----------------------------------------------------------------

    def _unsigned(self, commit: str) -> str | None:
        """Why the signature policy refuses `commit` (None: no policy, or a trusted signature);
        memoized, since a commit never changes."""
        policy = self.signatures
        if policy is None:
            return None
        return _memo(self._signed, commit, lambda: policy.verify(self.store.repo, commit).problem)

    def load(self, commit: str) -> tuple[LoadedSpec | None, list[str]]:
        """The fleet's spec at `commit`, or why there is none; memoized, since a commit never
        changes."""
        return _memo(self._specs, commit, lambda: self._load_uncached(commit))

    def _load_uncached(self, commit: str) -> tuple[LoadedSpec | None, list[str]]:
        cache = self.spec_cache
        kept = speccache.get(cache, commit, self.fleet_name) if cache else None
        if kept is not None:
            return kept, []
        _, files = source.read_commit(self.store.repo, commit)
        problems: list[str] = []
        for f in files:
            try:
                spec = load(f)
            except SpecError as exc:
                problems += [p.render() for p in exc.problems]
                continue
            if spec.fleet.name == self.fleet_name:
                if cache is not None:
                    speccache.put(cache, commit, self.fleet_name, spec)
                return spec, []
        return None, problems or [f"no fleet named {self.fleet_name!r} at {commit[:12]}"]

    def fleet_at(self, commit: str) -> Fleet | None:
        spec, _ = self.load(commit)
        return spec.fleet if spec else None

    def plan(
        self,
        spec: LoadedSpec,
        head: str,
        base: Fleet | None,
        base_commit: str | None,
        first: Sequence[str] = (),
    ) -> Plan:
        return planner.plan(
            spec.fleet, spec.lock, base=base, base_commit=base_commit, head_commit=head,
            first=first,
        )  # fmt: skip

    def lease_for(self, plan: Plan) -> float:
        """A lease outlives the longest step, so a holder is never mid-step when it expires."""
        return self.lease_s + max((s.timeout_s for s in plan.steps), default=0.0)

    # --- what every part of a pass shares --------------------------------------------------

    def timestamp(self) -> str:
        return leases.stamp(self.clock())

    def executor(self, status: FleetStatus, spec: LoadedSpec, commit: str) -> Executor:
        """An executor for the hosts of `spec` at `commit`, going back onto the recovery
        points `status` recorded."""
        agent = self.agent_for(spec, commit)
        return Executor(
            fleet=spec.fleet,
            lock=spec.lock,
            spec_commit=commit,
            agent=agent,
            lb=self.lb_for(spec.fleet),
            now=self.timestamp,
            ahead=self._read_ahead_for(spec, agent),
            poll_s=self.poll_s,
            recorded_points=functools.partial(status.recovery_points, self.store),
        )

    def _read_ahead_for(self, spec: LoadedSpec, agent: HostAgent) -> ReadAhead:
        """The reads started early on the hosts of `agent`: one `ReadAhead` per agent (one
        spec commit), so what one pass starts a later pass takes."""
        if self._ahead is None or self._ahead[0] is not agent:
            if self._ahead is not None:
                self._ahead[1].close()
            wait = 2 * seconds(spec.fleet.ssh.command_timeout)
            self._ahead = (agent, ReadAhead(wait_s=wait))
        return self._ahead[1]

    def commit(
        self,
        status: FleetStatus,
        t: Transition,
        record: RolloutRecord,
        *,
        renew: Lease | None = None,
        lease_s: float = 0.0,
        defer: bool = False,
    ) -> str | None:
        """Write `t` with the rollout's `record` as one status commit over `status` (None:
        nothing material changed). `renew`: the lease the pass holds, renewed for `lease_s` by
        the same commit unless `t` writes the lease itself. `defer`: push in the background."""
        t.reconciler = self.instance
        if renew is not None and "lease.json" not in " ".join(t.files):
            # Every step commit of the holder renews its lease: one commit, not two.
            now = self.clock()
            t.put("lease.json", leases.renewed(renew, self.fleet_name, self.instance, now, lease_s))
        t.put("rollout.json", record.stamped(self.timestamp()))
        return write(self.store, status, t, defer=defer)

    def event(self, kind: EventKind, message: str, **fields: object) -> None:
        """Broadcast an event; a broadcast never breaks the pass."""
        try:
            self.notifier.notify(
                Event(
                    kind=kind, fleet=self.fleet_name, message=message, at=self.timestamp(), **fields
                )
            )
        except Exception:  # a broadcast must never break the pass
            log.exception("notify failed")


def _memo(cache: dict[str, V], key: str, make: Callable[[], V]) -> V:
    """`make()` kept under `key` (commits are immutable), the oldest of SPEC_CACHE dropped."""
    if key not in cache:
        if len(cache) >= SPEC_CACHE:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]
