"""A step that went red: freeze the fleet, then restore the host from its bookmark.

Why: a red outcome (a doctor error, a gateway never ready, an install that did not converge,
a canary analysis that failed) is data, not an exception. The pass that sees it records the
failure in one commit: the fleet is frozen (no reconciler widens traffic until a new spec
commit), the spec commit is remembered as failed, and the host is marked Failed. The next
passes restore each Failed host from the bookmark taken before it changed; the last restore
releases the lease.
"""

from __future__ import annotations

from reconciler.errors import PermanentError
from reconciler.record.documents import Freeze
from reconciler.rollout.passcontext import Pass, PassResult
from reconciler.rollout.planner import Step
from reconciler.rollout.steps import Outcome


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
