"""A settled fleet, watched: drift reported once and, with `selfHeal`, converged again.

Why: once a rollout is Complete nothing acts on the fleet, but hosts change under it (an npm
install by hand, a weight set at the LB). A pass over a Complete fleet reads what drift is
defined over, each host's tree and weights (one command per host), and observes in full only
a host that drifted, for the record. Drift is recorded and broadcast once; with
`rollout.selfHeal` the rollout starts over at the same spec commit, and hosts still converged
are skipped when observed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from reconciler.desired.spec import Host
from reconciler.desired.validate import LoadedSpec
from reconciler.record.documents import Installed, Readiness, RolloutRecord
from reconciler.record.status import FleetStatus, Transition
from reconciler.rollout import planner
from reconciler.rollout.gates import tree_vs_lock
from reconciler.rollout.passcontext import PassResult

if TYPE_CHECKING:
    from reconciler.rollout.passcontext import Driver


def watch(
    engine: Driver, status: FleetStatus, spec: LoadedSpec, record: RolloutRecord
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
    engine: Driver,
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
