"""Why a pass waits instead of acting: a freeze, a closed window, availability, a ramp gate.

Why: a rollout waits where it stands whenever going on could hurt: the fleet is frozen (a
failed rollout froze it), no maintenance window is open, a drain would take more hosts out of
service than `rollout.maxUnavailable`, or a gate refuses to widen a host's traffic (a peer red
or disagreeing, the golden fingerprint missed). A hold is recorded once (Paused or Frozen, with
its reason) and asked again on the next pass; the judging itself is `reconciler.rollout.gates`'.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.record.documents import Readiness, RolloutPhase
from reconciler.rollout import windows
from reconciler.rollout.gates import availability_refusal, ramp_refusals
from reconciler.rollout.passcontext import Pass, PassResult
from reconciler.rollout.planner import Step


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
