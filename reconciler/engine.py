"""The reconcile pass: observe -> plan -> act one step -> record -> requeue.

This is the only module that joins the pure planner with I/O. Like a controller-runtime
reconciler, a pass reads everything fresh (the spec branch, the status branch, the hosts it is
about to touch), does at most one step, records it as one status commit, and says when it wants
to run again. Progress lives on the status branch, never in memory, so a reconciler killed at
any point resumes from the branch and repeats at most one idempotent step.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from reconciler import lease as leases
from reconciler import planner, source, speccache, windows
from reconciler.analysis import Verdict, analyse, host_counters
from reconciler.documents import (
    Freeze,
    HostStatus,
    Installed,
    Lease,
    Readiness,
    RolloutPhase,
    RolloutRecord,
    with_lb_weights,
)
from reconciler.errors import PermanentError, SpecError, TemporaryError
from reconciler.gates import availability_refusal, matches_lock, ramp_refusals, tree_vs_lock
from reconciler.gitstore import GitStore, StatusRewritten
from reconciler.lb import LoadBalancer, ServerStats, apply_weights
from reconciler.notify import Event, EventKind, Notifier
from reconciler.passcontext import Pass, PassResult
from reconciler.planner import Plan, Step
from reconciler.readahead import ReadAhead
from reconciler.signatures import SignaturePolicy
from reconciler.spec import Fleet, Host, seconds
from reconciler.status import FleetStatus, Transition, read_status, write
from reconciler.steps import Executor, HostAgent, Outcome
from reconciler.validate import LoadedSpec, load

__all__ = ["Engine", "Failpoints", "PassResult", "utcnow"]

log = logging.getLogger(__name__)
V = TypeVar("V")
SPEC_CACHE = 8  # loaded specs kept (commits are immutable)
SETTLED = ("Complete", "Failed", "Invalid", "Idle")


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
        self.store.fetch()
        status = read_status(self.store, self.fleet_name)
        self._check_history(status)
        head = self.store.spec_head()
        if head is None:
            return PassResult("Idle", f"branch {self.store.branch} not found", None)
        head_id = str(head.id)
        unsigned = self._unsigned(head_id)
        if unsigned is not None:  # recorded like an invalid spec: the last good state stays
            return invalid(self, status, head_id, [unsigned])
        spec, problems = self.load(head_id)
        record = status.rollout
        if spec is None:
            return invalid(self, status, head_id, problems)
        if record is None or record.spec_commit != head_id:
            if record is not None and head_id in record.failed_commits:
                return PassResult(
                    "Failed", f"{head_id[:12]} failed before; waiting for a new commit", None
                )
            return start(self, status, spec, head_id)
        return self._continue(status, spec, record)

    def _continue(self, status: FleetStatus, spec: LoadedSpec, record: RolloutRecord) -> PassResult:
        failed = [h for h, s in record.hosts.items() if s.phase == "Failed"]
        if record.phase in SETTLED and not (record.phase == "Failed" and failed):
            return watch(self, status, spec, record)
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
            return restore(p, failed[0])
        held = by_freeze_or_window(p)
        if held is not None:
            return held
        step = p.next_step()
        if step is None:
            return complete(p)
        return self._step(p, step)

    def _step(self, p: Pass, step: Step) -> PassResult:
        """Run `step` (unless a gate, a soak or the fleet's availability holds it), with what
        the next steps read started meanwhile, and record it."""
        ex = p.executor
        peers: list[str] = []
        if step.action == "verify":  # while this host becomes ready
            ex.read_ahead(p.next_hosts(step), p.status.nodes)
            peers = [h for h in p.verified() if h not in step.hosts]
        if step.action in PRE_RAMP and p.untouched(step) and p.spec.lock is not None:
            ex.start_release_reads(step.hosts, p.status.nodes)  # unless the last verify did
            docs = ex.take_or_observe(step.hosts)  # the bookmark step reuses these
            skipped = skip_if_converged(p, step, docs)
            if skipped is not None:
                return skipped
        if step.action == "ramp":
            held = soak_or_gate(p, step)
            if held is not None:
                return held
        if step.action == "drain" and p.fleet.rollout.strategy == "rolling":
            held = before_drain(p, step)
            if held is not None:
                return held
        self.failpoints.hit(f"{step.id}:before")
        outcome = ex.run(step, seq=p.status.next_seq, peers=peers)
        self.failpoints.hit(f"{step.id}:after")
        if outcome.red is not None:
            return fail(p, step, outcome)
        return record_step(p, step, outcome)

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
            ahead=self._read_ahead(spec, agent),
            poll_s=self.poll_s,
            recorded_points=functools.partial(status.recovery_points, self.store),
        )

    def _read_ahead(self, spec: LoadedSpec, agent: HostAgent) -> ReadAhead:
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


# --- specchange ----------------------------------------------------------------------------------


def start(engine: Engine, status: FleetStatus, spec: LoadedSpec, head: str) -> PassResult:
    """Start the rollout of the spec at `head`, in one commit."""
    old = status.rollout
    # Plan from what the fleet last converged to, and only when it did converge: after a
    # failed rollout some hosts moved and some did not, so every host gets the full plan
    # and the ones already at the new desired state are skipped when observed.
    applied = old.applied_commit if old else None
    converged = old is not None and old.phase == "Complete" and applied == old.spec_commit
    base = engine.fleet_at(applied) if applied and converged else None
    down = _down_at_start(engine, status, spec, head)
    plan = engine.plan(spec, head, base, applied if base else None, first=sorted(down))
    record = RolloutRecord(
        fleet=engine.fleet_name,
        phase="Progressing" if plan.steps else "Complete",
        spec_commit=head,
        base_commit=applied if base else None,
        applied_commit=head if not plan.steps else applied,
        target=plan.target,
        plan_sha256=plan.sha256,
        current_step=plan.steps[0].id if plan.steps else None,
        hosts={h: HostStatus() for h in plan.order},
        failed_commits=old.failed_commits if old else [],
        repair_first=sorted(down),
        message=f"{len(plan.steps)} steps",
        updated_at=engine.timestamp(),
    )
    repair = f"; out of service, repaired first: {_listing(down)}" if down else ""
    t = Transition(
        engine.fleet_name,
        f"rollout {head[:12]} started: {_summary(plan)}{repair}",
        spec_commit=head,
        phase=record.phase,
    )
    if (
        status.freeze is not None
        and status.freeze.spec_commit
        and status.freeze.spec_commit != head
    ):
        t.put("freeze.json", None)
        t.subject += " (freeze of the failed commit lifted)"
    now = engine.clock()
    if plan.steps and not leases.held_by_other(status.lease, engine.instance, now):
        duration = engine.lease_for(plan)
        lease = leases.renewed(status.lease, engine.fleet_name, engine.instance, now, duration)
        t.put("lease.json", lease)  # taken with the start: not a commit of its own
        if plan.steps[0].action == "bookmark":  # overlaps this commit's push
            engine.executor(status, spec, head).read_ahead(plan.steps[0].hosts, status.nodes)
    commit = engine.commit(status, t, record)
    return PassResult(record.phase, t.subject, 0.0, acted=True, commit=commit)


def invalid(engine: Engine, status: FleetStatus, head: str, problems: list[str]) -> PassResult:
    """Record once that the spec at `head` cannot be applied (invalid, or not signed by a
    trusted key), and why; the rollout in hand, if any, stays as it is."""
    record = status.rollout
    listing = "".join(f"\n  {p}" for p in problems)
    if record is not None and record.invalid is not None and record.invalid.commit == head:
        message = f"{head[:12]} is invalid; last good state stays{listing}"
        return PassResult("Invalid", message, None)
    base = record or RolloutRecord(
        fleet=engine.fleet_name, phase="Invalid", updated_at=engine.timestamp()
    )
    new = base.refused(head, problems)
    t = Transition(
        engine.fleet_name,
        f"spec {head[:12]} is invalid ({len(problems)} problems); nothing applied",
        spec_commit=head,
        phase=new.phase,
    )
    commit = engine.commit(status, t, new)
    _sinks_of_last_good(engine, record)
    engine.event(
        "failure",
        f"spec {head[:12]} is invalid: {problems[0] if problems else ''}",
        spec_commit=head,
        status_commit=commit,
    )
    return PassResult(new.phase, t.subject + listing, None, commit=commit)


def _sinks_of_last_good(engine: Engine, record: RolloutRecord | None) -> None:
    """A pass that refuses its head loads no spec, so nothing configured the broadcast
    sinks yet (a fresh process): take them from the last good spec, never the refused one."""
    configure = getattr(engine.notifier, "configure", None)
    good = (record.applied_commit or record.spec_commit) if record is not None else None
    if good is None or not callable(configure):
        return
    try:
        spec = engine.load(good)[0]
    except Exception:  # a broadcast must never break the pass
        log.exception("cannot read the broadcast sinks of %s", good)
        return
    if spec is not None:
        configure(spec)


def _down_at_start(
    engine: Engine, status: FleetStatus, spec: LoadedSpec, head: str
) -> dict[str, str]:
    """Hosts out of service as a rolling rollout starts (it repairs them first)."""
    if spec.fleet.rollout.strategy != "rolling":
        return {}
    ex = engine.executor(status, spec, head)
    try:
        return ex.out_of_service([h.name for h in spec.fleet.hosts])
    except TemporaryError as err:  # the load balancer: asked again before every drain
        log.warning("%s: hosts out of service unknown at the start: %s", engine.fleet_name, err)
        return {}


def _summary(plan: Plan) -> str:
    changes = ", ".join(
        f"{c.subject} {c.before or '-'} -> {c.after or '-'}" for c in plan.changes[:4]
    )
    return f"{changes or 'no changes'} ({len(plan.steps)} steps)"


def _listing(reasons: Mapping[str, str]) -> str:
    return "; ".join(f"{host} ({why})" for host, why in sorted(reasons.items()))


# --- holds ---------------------------------------------------------------------------------------


def by_freeze_or_window(p: Pass) -> PassResult | None:
    """A freeze or a closed maintenance window holds the rollout where it is."""
    status, now, poll_s = p.status, p.now, p.engine.poll_s
    if status.freeze is not None:
        reason = f"frozen: {status.freeze.reason}"
        return hold(p, "Frozen", reason, poll_s * 10)
    if not windows.is_open(p.fleet.windows, now):
        opens = windows.next_open(p.fleet.windows, now)
        wait = (opens - now).total_seconds() if opens else 3600.0
        when = opens.isoformat() if opens else "not within 8 days"
        message = f"outside maintenance windows; next opens {when}"
        return hold(p, "Paused", message, wait)
    return None


def hold(p: Pass, phase: RolloutPhase, message: str, wait: float) -> PassResult:
    """Hold in `phase` for `message`, asking again after `wait` seconds; recorded once."""
    record = p.record
    if record.phase == phase and record.message == message:
        return PassResult(phase, message, wait)
    commit = p.write(p.transition(message, phase=phase), record.held(phase, message))
    return PassResult(phase, message, wait, commit=commit)


def before_drain(p: Pass, step: Step) -> PassResult | None:
    """Hold before a drain that would put more hosts out of service than
    `rollout.maxUnavailable`, counting those already out whatever took them out."""
    others = [h.name for h in p.fleet.hosts if h.name not in step.hosts]
    out = p.executor.out_of_service(others)
    refusal = availability_refusal(out, step.hosts, p.fleet.rollout.max_unavailable)
    if refusal is None:
        return None
    message = f"{step.id}: holding before the drain: {refusal}"
    return _gate_held(p, step, message, message, {})


def ramp_gates(p: Pass, step: Step) -> PassResult | None:
    """Hold a ramp while a gate refuses to widen the traffic of `step`'s host."""
    # Hosts verified in this rollout (the host to widen, its upgraded peers) keep their
    # recorded readiness unless a cheap check (the tree, readiness and the running
    # versions) finds it stale; then they are observed in full. So a ramp costs about the
    # same at the tenth host as at the first.
    ex, status = p.executor, p.status
    upgraded = p.upgraded()
    verified = {h: status.nodes[h] for h in p.verified(step.hosts)}
    fresh = ex.observe([h for h in [*step.hosts, *upgraded] if h not in verified])
    nodes = {**status.nodes, **ex.recheck(verified), **fresh}
    golden = p.golden(nodes, status.nodes)
    refusals = [
        r
        for h in step.hosts
        for r in ramp_refusals(
            h, nodes, upgraded=upgraded, golden=golden, lock=p.spec.lock, freeze=status.freeze
        )
    ]
    if not refusals:
        return None
    message = f"{step.id}: weight held: " + "; ".join(refusals)
    judged = {name: nodes[name] for name in {*upgraded, *step.hosts}}
    return _gate_held(p, step, message, message[:200], judged)


def _gate_held(
    p: Pass, step: Step, message: str, subject: str, judged: Mapping[str, Readiness]
) -> PassResult:
    """A gate holds `step` for `message`: Paused, recorded once (a commit titled `subject`,
    with the readiness the gate `judged`) and broadcast."""
    wait = p.engine.poll_s * 10
    if p.record.phase == "Paused" and p.record.message == message:
        return PassResult("Paused", message, wait)
    t = p.transition(subject, node=step.hosts[0], phase="Paused")
    for doc in judged.values():
        t.readiness(doc)
    commit = p.write(t, p.record.paused(message))
    p.event("gate", message, host=step.hosts[0], status_commit=commit)
    return PassResult("Paused", message, wait, commit=commit)


# --- failure -------------------------------------------------------------------------------------


def fail(p: Pass, step: Step, outcome: Outcome) -> PassResult:
    """Record `step`'s red `outcome`: the fleet frozen, its hosts Failed (restored next) or,
    for a bookmark that could not be taken, RolledBack (nothing on them changed)."""
    record = p.record
    reason = outcome.red or "red"
    # A bookmark that could not be taken (no room for the recovery point, a backup the
    # product refused) changed nothing on the host: there is nothing to restore.
    untouched = step.action == "bookmark"
    message = f"{outcome.subject}: {reason}"
    freeze = Freeze(
        fleet=p.engine.fleet_name,
        reason=message[:500],
        host=step.hosts[0],
        spec_commit=record.spec_commit,
        created_at=p.engine.timestamp(),
    )
    then = "nothing on the host changed" if untouched else "restoring from bookmark"
    t = p.transition_of(f"{outcome.subject}; {then}, fleet frozen", step, outcome)
    t.phase = "Failed"
    t.put("freeze.json", freeze)
    if untouched:
        t.put("lease.json", None)  # nothing left to act on
    new = record.failed(step.hosts, "RolledBack" if untouched else "Failed", message)
    commit = p.write(t, new)
    first = next(
        (
            f"{f.check_id} ({f.severity}): {f.message}"
            for d in outcome.readiness.values()
            for pr in d.profiles
            for f in (*pr.doctor, *pr.post_upgrade)
            if f.severity == "error"
        ),
        reason,
    )
    p.event(
        "failure",
        message,
        host=step.hosts[0],
        phase="Failed",
        finding=first,
        versions=record.target,
        status_commit=commit,
    )
    return PassResult("Failed", message, 0.0, acted=True, commit=commit)


def restore(p: Pass, host_name: str) -> PassResult:
    """Put a Failed host back as the bookmark of this rollout recorded it."""
    record, status, store = p.record, p.status, p.engine.store
    bookmark = status.bookmark_for(store, host_name, record.spec_commit or "")
    bookmark = bookmark or status.bookmark_for(store, "fleet", record.spec_commit or "")
    if bookmark is None:
        raise PermanentError(
            f"{host_name}: no bookmark for {record.spec_commit}; cannot restore safely"
        )
    outcome = p.executor.restore(p.fleet.host(host_name), bookmark)
    t = p.transition(outcome.subject, node=host_name, phase="RolledBack")
    for doc in outcome.readiness.values():
        t.readiness(doc)
    new = record.restored(host_name, outcome.subject)
    if not any(s.phase == "Failed" for s in new.hosts.values()):
        t.put("lease.json", None)  # nothing left to act on: release the lease
    commit = p.write(t, new)
    return PassResult("Failed", outcome.subject, 0.0, acted=True, commit=commit)


# --- progress ------------------------------------------------------------------------------------


PRE_RAMP = ("bookmark", "drain", "preflight", "install", "restart", "verify")
"""A host's steps before its weight goes up: a host already converged skips them."""
SOAK_CHECK_S = 5.0
"""How often a soak looks at the LB's counters (analysis, weights), not only at its end."""


def record_step(p: Pass, step: Step, outcome: Outcome) -> PassResult:
    """Record a step that went well; a ramp that soaks stays the current step."""
    soaking = step.action == "ramp" and step.soak_s > 0
    if soaking:
        until = p.engine.clock() + timedelta(seconds=step.soak_s)
        baseline = host_counters(p.executor.lb.stats(), step.weights)
        new = p.record.soaking(
            step.id,
            until=leases.stamp(until),
            baseline={s: _counters(c) for s, c in baseline.items()},
            hosts=step.hosts,
            host_phase=outcome.host_phase,
            percent=step.percent,
            message=outcome.subject,
        )
        subject = f"{outcome.subject}, soaking {step.soak_s:.0f}s"
    else:
        verified = step.action == "verify" and bool(outcome.readiness)
        new = p.record.step_done(
            step.id,
            p.step_ids,
            hosts=step.hosts,
            host_phase=outcome.host_phase,
            percent=step.percent,
            message=outcome.subject,
            golden=next(iter(outcome.readiness.values())).fingerprint if verified else None,
        )
        subject = outcome.subject
    t = p.transition_of(subject, step, outcome)
    nodes = p.status.nodes
    for name in step.hosts if outcome.weights else ():
        if name in nodes and name not in outcome.readiness:
            t.readiness(_reweighed(p.fleet.host(name), nodes[name], outcome.weights))
    # A step's record is pushed while the next step runs: a reconciler that dies with it
    # in flight redoes an idempotent step. Not the bookmark: the way back must be on the
    # remote before anything on the host changes.
    defer = step.action != "bookmark"
    commit = p.write(t, new, defer=defer)
    failpoints = p.engine.failpoints
    if f"{step.id}:recorded" in failpoints.points:
        p.engine.store.flush()  # "recorded" means on the remote
    failpoints.hit(f"{step.id}:recorded")
    # A soak looks at the LB every SOAK_CHECK_S (analysis, weights), not only at its end.
    wait = min(step.soak_s, SOAK_CHECK_S) if soaking else 0.0
    left = [s for s in p.plan.steps if s.id not in new.done_steps]
    steps = len(p.plan.steps)
    progress = (steps - len(left), steps, planner.expected_duration(left))
    return PassResult("Progressing", subject, wait, acted=True, commit=commit, progress=progress)


def complete(p: Pass) -> PassResult:
    """Every step is done: the fleet converged to this spec commit; the lease is released."""
    record = p.record
    target = record.target.get("openclaw", "?")
    subject = f"rollout {str(record.spec_commit)[:12]} complete: fleet on openclaw {target}"
    t = p.transition(subject, phase="Complete")
    t.put("lease.json", None)
    commit = p.write(t, record.completed(subject))
    p.event("success", subject, versions=record.target, status_commit=commit)
    return PassResult("Complete", subject, None, acted=True, commit=commit)


def skip_if_converged(p: Pass, step: Step, docs: Mapping[str, Readiness]) -> PassResult | None:
    """Hosts already on the target and green (a self-heal, a rollout after a failed one) skip
    their steps up to the weights they already have."""
    if not all(d.green and not matches_lock(d, p.spec.lock) for d in docs.values()):
        return None
    mine = [s for s in p.plan.steps if s.hosts == step.hosts]
    ramps = [s for s in mine if s.action == "ramp"]
    weights = p.executor.lb.weights()
    in_place = all(weights.get(k) == w for k, w in ramps[-1].weights.items()) if ramps else True
    skip = [s.id for s in mine if s.action in PRE_RAMP] + [s.id for s in ramps[:-1]]
    if in_place:
        skip += [s.id for s in ramps[-1:]]
    core = next(iter(docs.values())).installed.core
    who = step.hosts[0] if len(step.hosts) == 1 else "fleet"
    subject = f"{who}: already on openclaw {core} and green; nothing to install"
    t = p.transition(subject, node=",".join(step.hosts), phase="Verified")
    for doc in docs.values():
        t.readiness(doc)
    golden = next(iter(docs.values())).fingerprint
    new = p.record.converged(skip, p.step_ids, hosts=step.hosts, message=subject, golden=golden)
    commit = p.write(t, new)
    return PassResult("Progressing", subject, 0.0, acted=True, commit=commit)


def _reweighed(host: Host, doc: Readiness, weights: Mapping[str, int]) -> Readiness:
    """A host's last readiness with the LB weights this step set (no new observation)."""
    by_profile = {
        p.key(): weights[planner.server_name(host, p)]
        for p in host.profiles
        if planner.server_name(host, p) in weights
    }
    return with_lb_weights(doc, by_profile)


def _counters(stats: ServerStats) -> dict[str, int]:
    return {
        "weight": stats.weight,
        "sessions": stats.sessions,
        "requests": stats.requests,
        "responses_5xx": stats.responses_5xx,
    }


# --- soak ----------------------------------------------------------------------------------------


def soak_or_gate(p: Pass, step: Step) -> PassResult | None:
    """Before a ramp: judge its soak while it soaks, else its gates (None: go on)."""
    record, ex = p.record, p.executor
    if not (record.current_step == step.id and record.soak_until):
        return ramp_gates(p, step)
    left = (leases.parse_time(record.soak_until) - p.engine.clock()).total_seconds()
    verdict = _analyse(p, step, final=left <= 0)
    if not verdict.ok:
        # Pull traffic from the failed canary at once (like a red doctor, whose host is
        # still drained): the restore reinstalls and restarts it at weight 0.
        pulled = dict.fromkeys(step.weights, 0)
        apply_weights(ex.lb, pulled)
        red = Outcome(
            subject=f"{step.hosts[0]}: canary analysis failed, weight 0",
            red=verdict.reason,
            weights=pulled,
        )
        return fail(p, step, red)
    lb_weights = ex.lb.weights()
    moved = {s: lb_weights.get(s) for s, w in step.weights.items() if lb_weights.get(s) != w}
    if moved:
        # The LB lost the step's weights mid-soak (restarted: back to its config's, or
        # set by hand), so the host did not soak at this step: set them again, soak anew.
        return _resoak(p, step, moved)
    if left > 0:
        wait = min(left, SOAK_CHECK_S)
        return PassResult("Progressing", f"{step.id}: soaking, {left:.0f}s left", wait)
    analysis = p.fleet.rollout.analysis
    if verdict.inconclusive and analysis.inconclusive == "hold":
        message = (
            f"{step.id}: soak at {step.percent}% inconclusive (fewer than "
            f"{max(analysis.min_requests, 1)} requests since it "
            "began); holding until enough came (analysis.inconclusive: hold)"
        )
        return hold(p, "Paused", message, SOAK_CHECK_S)
    judged = "inconclusive, passed on" if verdict.inconclusive else "passed"
    subject = f"{step.hosts[0]}: soak at {step.percent}% {judged} ({verdict.reason})"
    t = p.transition(subject, node=step.hosts[0], phase="Ramping")
    commit = p.write(t, record.soak_passed(step.id, p.step_ids))
    return PassResult("Progressing", subject, 0.0, acted=True, commit=commit)


def _resoak(p: Pass, step: Step, moved: Mapping[str, int | None]) -> PassResult:
    outcome = p.executor.run(step, seq=p.status.next_seq)
    if outcome.red is not None:
        return fail(p, step, outcome)
    found = ", ".join(f"{s}={w}" for s, w in sorted(moved.items()))
    subject = f"{outcome.subject} re-applied (the LB had {found})"
    log.warning("%s", subject)
    return record_step(p, step, replace(outcome, subject=subject))


def _analyse(p: Pass, step: Step, *, final: bool) -> Verdict:
    """Canary analysis over the soak so far, from the LB's counters (like Flagger)."""
    a = p.fleet.rollout.analysis
    before = {
        s: ServerStats(
            server=s,
            weight=c.get("weight", 0),
            sessions=c.get("sessions", 0),
            requests=c.get("requests", 0),
            responses_5xx=c.get("responses_5xx", 0),
        )
        for s, c in p.record.soak_baseline.items()
    }
    after = host_counters(p.executor.lb.stats(), step.weights)
    verdict = analyse(
        before, after, max_5xx_ratio=a.max_5xx_ratio, min_requests=a.min_requests,
        fail_on_inconclusive=a.inconclusive == "fail",
    )  # fmt: skip
    if not final and verdict.inconclusive:
        return Verdict(
            True, verdict.requests, verdict.errors_5xx, verdict.ratio, "so far", True, ()
        )
    return verdict


# --- drift ---------------------------------------------------------------------------------------


def watch(
    engine: Engine, status: FleetStatus, spec: LoadedSpec, record: RolloutRecord
) -> PassResult:
    """A settled fleet's pass: a Complete one is checked for drift, any other waits for a
    new spec commit."""
    if record.phase != "Complete" or spec.lock is None:
        return PassResult(record.phase, record.message, None)
    # Drift is defined over the tree and the weights, so that is what a steady pass reads
    # (one command per host); only a host that drifted is observed in full, for the record.
    ex = engine.executor(status, spec, record.spec_commit or "")
    trees = ex.trees([h.name for h in spec.fleet.hosts])
    weights = ex.lb.weights()
    drift = {
        name: problems
        for name, tree in trees.items()
        if (problems := drift_of(spec.fleet.host(name), tree, spec, weights))
    }
    if not drift:
        return PassResult("Complete", record.message, None)
    nodes = ex.observe(list(drift))
    message = "drift: " + "; ".join(f"{h}: {', '.join(p)}" for h, p in sorted(drift.items()))
    if spec.fleet.rollout.self_heal:
        return _heal(engine, status, spec, record, drift, nodes, message)
    if record.message == message:
        return PassResult("Complete", message, None)
    t = Transition(
        engine.fleet_name, message[:200], spec_commit=record.spec_commit, phase="Complete"
    )
    for name in drift:
        t.readiness(nodes[name])
    commit = engine.commit(status, t, record.drifted(message))
    engine.event("drift", message, spec_commit=record.spec_commit, status_commit=commit)
    return PassResult("Complete", message, None, commit=commit)


def _heal(
    engine: Engine,
    status: FleetStatus,
    spec: LoadedSpec,
    record: RolloutRecord,
    drift: Mapping[str, list[str]],
    nodes: Mapping[str, Readiness],
    message: str,
) -> PassResult:
    """Start over at the same spec commit with the full plan; converged hosts are skipped."""
    plan = engine.plan(spec, record.spec_commit or "", None, None)
    first = plan.steps[0].id if plan.steps else None
    healing = record.healing(plan.sha256, first, message)
    t = Transition(
        engine.fleet_name,
        f"self-heal: {message}"[:200],
        spec_commit=record.spec_commit,
        phase="Progressing",
    )
    for name in drift:
        t.readiness(nodes[name])
    commit = engine.commit(status, t, healing)
    engine.event(
        "drift", f"self-heal: {message}", spec_commit=record.spec_commit, status_commit=commit
    )
    return PassResult("Progressing", t.subject, 0.0, acted=True, commit=commit)


def drift_of(
    host: Host, tree: Installed | str, spec: LoadedSpec, weights: Mapping[str, int]
) -> list[str]:
    """How a host differs from the desired state: its tree against the lock, its weights."""
    problems = [tree] if isinstance(tree, str) else tree_vs_lock(tree, spec.lock)
    problems += [
        f"weight of {server} is {weights.get(server)}, desired {weight}"
        for server, weight in planner.host_weights(host, 100).items()
        if weights.get(server) != weight
    ]
    return problems
