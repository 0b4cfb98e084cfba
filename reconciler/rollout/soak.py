"""A ramp step that soaks: canary analysis over the load balancer's counters, like Flagger.

Why: after a host's weight goes up it serves real traffic for `soak` before the next step.
While it soaks, every pass judges the LB's counters since the soak began (5xx ratio, enough
requests): a failed analysis pulls the host's traffic at once and fails the rollout; an LB
that lost the step's weights (restarted, set by hand) gets them again and the soak starts
anew; a soak that ends passes (or, inconclusive, holds or passes on as `analysis.inconclusive`
says). A ramp that does not soak, or whose soak passed, goes to its gates
(`reconciler.rollout.holds`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from reconciler.lb import ServerStats, apply_weights
from reconciler.rollout import lease as leases
from reconciler.rollout.analysis import Verdict, analyse, host_counters
from reconciler.rollout.failure import fail
from reconciler.rollout.holds import hold, ramp_gates
from reconciler.rollout.passcontext import Pass, PassResult
from reconciler.rollout.planner import Step
from reconciler.rollout.progress import SOAK_CHECK_S, record_step
from reconciler.rollout.steps import Outcome

log = logging.getLogger(__name__)


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
