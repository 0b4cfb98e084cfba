"""Gates: may traffic widen now? Pure checks over observed readiness, each with a reason.

The runbook's stop rules, made explicit: never widen while the host is red, while any upgraded
peer's fingerprint differs from the golden one (the first host upgraded in this rollout), while
the installed tree differs from the lock, or while the fleet is frozen. A refusal names the
hosts and the fields that disagree, so the operator knows where to look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.desired.lock import Lock
from reconciler.hosts.compare import differences
from reconciler.record.documents import Freeze, Installed, Readiness


def availability_refusal(
    out: Mapping[str, str], taking: Iterable[str], max_unavailable: int
) -> str | None:
    """Why taking the hosts `taking` out of service now would exceed `rollout.maxUnavailable`,
    given the hosts already `out` (host -> why), or None. A host being taken that is itself
    out costs nothing more."""
    taken = [h for h in taking if h not in out]
    if len(out) + len(taken) <= max_unavailable:
        return None
    down = "; ".join(f"{h}: {why}" for h, why in sorted(out.items()))
    return (
        f"maxUnavailable {max_unavailable} reached: {len(out)} host"
        f"{'s' * (len(out) != 1)} already out of service ({down})"
    )


def out_of_service_observed(
    desired: Mapping[str, Mapping[str, int]], nodes: Mapping[str, Readiness]
) -> dict[str, str]:
    """Hosts the status branch last saw out of service, and why: a gateway not ready, or a
    load balancer weight of 0 where the spec wants more. `desired`: host -> profile ->
    desired weight."""
    out = {}
    for host, doc in nodes.items():
        wanted = desired.get(host, {})
        why = [f"gateway {p.profile} not ready" for p in doc.profiles if not p.readyz]
        why += [
            f"profile {p.profile} at weight 0"
            for p in doc.profiles
            if p.lb_weight == 0 and wanted.get(p.profile, 0) > 0
        ]
        if why:
            out[host] = f"{'; '.join(why)} (observed {doc.observed_at})"
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"plugins": {"a": "1"}} -> {"plugins.a": "1"}, so differences can be named by field."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differing_fields(a: Readiness, b: Readiness) -> list[str]:
    """The fingerprint inputs on which two hosts disagree, as `field: a-value vs b-value`."""
    fa, fb = flatten(getattr(a, "basis", {}) or {}), flatten(getattr(b, "basis", {}) or {})
    return [
        f"{key}: {fa.get(key)!r} vs {fb.get(key)!r}"
        for key in sorted(set(fa) | set(fb))
        if fa.get(key) != fb.get(key)
    ]


def disagreements(
    nodes: Mapping[str, Readiness], hosts: Iterable[str], golden: Readiness | None
) -> dict[str, list[str]]:
    """Hosts among `hosts` whose fingerprint differs from the golden one, with the fields."""
    if golden is None:
        return {}
    out = {}
    for host in hosts:
        doc = nodes.get(host)
        if doc is not None and doc.fingerprint != golden.fingerprint:
            out[host] = differing_fields(golden, doc) or ["fingerprint"]
    return out


def lock_differences(doc: Readiness, lock: Lock | None) -> list[str]:
    """How a host's installed tree differs from the lock (`tree_vs_lock`); empty when it
    matches."""
    return tree_vs_lock(doc.installed, lock)


def tree_vs_lock(tree: Installed, lock: Lock | None) -> list[str]:
    """How an installed tree differs from the lock (`compare.differences`); empty when it
    matches, or when there is no lock."""
    return list(differences(tree, lock.versions())) if lock is not None else []


def ramp_refusals(
    host: str,
    nodes: Mapping[str, Readiness],
    *,
    upgraded: Iterable[str],
    golden: Readiness | None,
    lock: Lock | None,
    freeze: Freeze | None,
) -> list[str]:
    """Every reason not to raise `host`'s weight now; empty means go."""
    refusals = []
    if freeze is not None:
        refusals.append(f"fleet frozen: {freeze.reason}")
    doc = nodes.get(host)
    if doc is None:
        return [*refusals, f"{host}: no readiness observed"]
    if not doc.green:
        refusals.append(f"{host} is not green: {'; '.join(doc.reasons) or 'red'}")
    refusals += [f"{host}: {w}" for w in lock_differences(doc, lock)]
    for peer, fields in disagreements(nodes, [*upgraded, host], golden).items():
        who = golden.host if golden is not None else "golden"
        refusals.append(f"{peer} disagrees with {who} (golden): {', '.join(fields)}")
    return refusals
