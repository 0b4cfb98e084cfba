"""A rollout's progress, recorded: a step done (or a ramp soaking), hosts found converged, the
rollout complete.

Why: a pass acts at most once and records what it did as one status commit, so a reconciler
killed at any point resumes from the status branch. These are the commits of a rollout that
goes well; `failure` writes those of one that does not, `holds` those of one that waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from reconciler.lb import ServerStats
from reconciler.record.documents import Readiness, reweighed
from reconciler.rollout import lease as leases
from reconciler.rollout import planner
from reconciler.rollout.analysis import host_counters
from reconciler.rollout.gates import lock_differences
from reconciler.rollout.passcontext import Pass, PassResult
from reconciler.rollout.planner import Step
from reconciler.rollout.steps import Outcome

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
            t.readiness(reweighed(p.fleet.host(name), nodes[name], outcome.weights))
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
    if not all(d.green and not lock_differences(d, p.spec.lock) for d in docs.values()):
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


def _counters(stats: ServerStats) -> dict[str, int]:
    return {
        "weight": stats.weight,
        "sessions": stats.sessions,
        "requests": stats.requests,
        "responses_5xx": stats.responses_5xx,
    }
