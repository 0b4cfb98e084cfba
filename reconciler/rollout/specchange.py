"""A new head on the spec branch: start its rollout, or record why it cannot be applied.

Why: a rollout begins when the spec branch moves. A head that is valid (and signed, when a
signature policy is set) starts a rollout in one commit: the record, its plan (from what the
fleet last converged to), the lease, and the first host's reads started while it is pushed;
hosts already out of service are repaired first. A head that is not is recorded as invalid
once, nothing of it is applied, and the last good state stays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from reconciler.desired.validate import LoadedSpec
from reconciler.errors import TemporaryError
from reconciler.record.documents import HostStatus, RolloutRecord
from reconciler.record.status import FleetStatus, Transition
from reconciler.rollout import lease as leases
from reconciler.rollout.passcontext import PassResult
from reconciler.rollout.planner import Plan

if TYPE_CHECKING:
    from reconciler.rollout.passcontext import Driver

log = logging.getLogger(__name__)


def start(engine: Driver, status: FleetStatus, spec: LoadedSpec, head: str) -> PassResult:
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


def invalid(engine: Driver, status: FleetStatus, head: str, problems: list[str]) -> PassResult:
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


def _sinks_of_last_good(engine: Driver, record: RolloutRecord | None) -> None:
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
    engine: Driver, status: FleetStatus, spec: LoadedSpec, head: str
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
