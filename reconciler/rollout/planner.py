"""The rollout planner: a pure function from desired state to the exact steps to execute.

No I/O here, by design: the plan a reviewer reads in a PR (`reconciler plan`) is the same
object the engine executes after the merge, built by the same function from the same inputs.
Ordering and weight policies are tiny functions so each can be read and tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from reconciler.canonical import sha256_of
from reconciler.desired import versions
from reconciler.desired.lock import Lock
from reconciler.desired.spec import CORE, Fleet, Host, Model, Pin, pins, seconds, server_name
from reconciler.hosts.compare import core_node_refusal

Action = Literal["bookmark", "drain", "preflight", "install", "restart", "verify", "ramp", "retire"]
ChangeKind = Literal[
    "core", "plugin", "install", "registry", "weight", "host-added", "host-removed", "strategy"
]

# Rough costs used only for the duration estimate a reviewer sees (seconds).
ESTIMATE = {"bookmark": 2.0, "drain": 30.0, "preflight": 3.0, "install": 30.0,
            "restart": 5.0, "verify": 20.0, "ramp": 1.0, "retire": 30.0}  # fmt: skip


class Change(Model):
    """One line of the desired-state diff."""

    kind: ChangeKind
    subject: str
    before: str | None = None
    after: str | None = None


class Step(Model):
    """One action the engine takes; `id` is stable so progress can be recorded against it."""

    id: str
    action: Action
    hosts: list[str] = Field(description="hosts acted on (several only for all-at-once)")
    packages: list[Pin] = Field(default_factory=list, description="install order: core first")
    weights: dict[str, int] = Field(default_factory=dict, description="LB server -> weight")
    percent: int | None = None
    soak_s: float = 0.0
    timeout_s: float = 0.0


class Plan(Model):
    """The desired-state diff and the rollout that realises it."""

    fleet: str
    base_commit: str | None = None
    head_commit: str | None = None
    strategy: Literal["rolling", "all-at-once"]
    target: dict[str, str]
    changes: list[Change]
    order: list[str]
    max_unavailable: int = Field(1, description="rollout.maxUnavailable")
    repair_first: list[str] = Field(
        default_factory=list, description="hosts out of service, taken first (in `order`)"
    )
    steps: list[Step]
    warnings: list[str]
    expected_duration_s: float
    sha256: str = Field(description="digest of everything above: the plan's identity")

    @property
    def changed(self) -> bool:
        return bool(self.changes)


# --- policies ----------------------------------------------------------------------------------


def host_order(fleet: Fleet) -> list[Host]:
    """Explicit `rollout.order`, else by role (canary -> stable -> witness), then spec order."""
    if fleet.rollout.order:
        return [fleet.host(name) for name in fleet.rollout.order]
    rank = {role: i for i, role in enumerate(fleet.rollout.roles)}
    return sorted(fleet.hosts, key=lambda h: rank.get(h.role, len(rank)))


def repair_first(order: list[Host], first: Sequence[str]) -> list[Host]:
    """`order` with the hosts named in `first` moved to the front (each keeping its place
    relative to the others): a host already out of service is brought back before a healthy
    one is taken out."""
    down = set(first)
    return [h for h in order if h.name in down] + [h for h in order if h.name not in down]


def step_weight(desired: int, percent: int) -> int:
    """The weight at `percent` of `desired`; never 0 while a step is above 0."""
    if percent <= 0 or desired <= 0:
        return 0
    return max(1, math.floor(desired * percent / 100 + 0.5))


def host_weights(host: Host, percent: int) -> dict[str, int]:
    return {server_name(host, p): step_weight(p.weight, percent) for p in host.profiles}


# --- the diff ----------------------------------------------------------------------------------


def diff(base: Fleet | None, head: Fleet) -> list[Change]:
    """What the head commit changes relative to the base (all of it when there is no base)."""
    old_pkgs = base.packages() if base else {}
    changes = [
        Change(
            kind="core" if name == CORE else "plugin",
            subject=name,
            before=old_pkgs.get(name),
            after=version,
        )
        for name, version in head.packages().items()
        if old_pkgs.get(name) != version
    ]
    changes += [
        Change(kind="plugin", subject=name, before=version, after=None)
        for name, version in old_pkgs.items()
        if name not in head.packages()
    ]
    if base is not None:
        changes += _settings_diff(base, head)
    changes += _hosts_diff(base, head)
    return changes


def _settings_diff(base: Fleet, head: Fleet) -> list[Change]:
    pairs = [
        ("install", "openclaw.install", base.openclaw.install, head.openclaw.install),
        ("registry", "openclaw.registry", base.openclaw.registry, head.openclaw.registry),
        ("strategy", "rollout.strategy", base.rollout.strategy, head.rollout.strategy),
    ]
    return [
        Change(kind=kind, subject=subject, before=old, after=new)
        for kind, subject, old, new in pairs
        if old != new
    ]


def _weights_of(fleet: Fleet | None) -> dict[str, int]:
    if fleet is None:
        return {}
    return {server_name(h, p): p.weight for h, p in fleet.profiles()}


def _hosts_diff(base: Fleet | None, head: Fleet) -> list[Change]:
    old_hosts = {h.name for h in base.hosts} if base else set()
    new_hosts = {h.name for h in head.hosts}
    changes = [Change(kind="host-added", subject=n) for n in sorted(new_hosts - old_hosts) if base]
    changes += [Change(kind="host-removed", subject=n) for n in sorted(old_hosts - new_hosts)]
    old_w, new_w = _weights_of(base), _weights_of(head)
    changes += [
        Change(kind="weight", subject=server, before=str(old_w[server]), after=str(weight))
        for server, weight in sorted(new_w.items())
        if server in old_w and old_w[server] != weight
    ]
    return changes


# --- the rollout -------------------------------------------------------------------------------


def plan(
    head: Fleet,
    lock: Lock | None,
    *,
    base: Fleet | None = None,
    base_commit: str | None = None,
    head_commit: str | None = None,
    node_versions: Mapping[str, str] | None = None,
    first: Sequence[str] = (),
) -> Plan:
    """Build the plan that takes the fleet from `base` (as desired before) to `head`; the hosts
    in `first` (out of service when the rollout starts) are repaired before any other."""
    changes = diff(base, head)
    install = any(c.kind in ("core", "plugin", "install", "registry") for c in changes)
    new_hosts = {c.subject for c in changes if c.kind == "host-added"}
    reweighted = {c.subject for c in changes if c.kind == "weight"}
    order = repair_first(host_order(head), first)
    if head.rollout.strategy == "all-at-once":
        steps = _all_at_once(head, order, install or base is None)
    else:
        steps = []
        for host in order:
            servers = set(host_weights(host, 100))
            if install or base is None or host.name in new_hosts:
                steps += _rolling_host(head, host)
            elif servers & reweighted:
                steps.append(_ramp(head, host, 100, len(head.rollout.steps) - 1))
    steps += [_retire(c.subject) for c in changes if c.kind == "host-removed"]
    body = {
        "fleet": head.name,
        "baseCommit": base_commit,
        "headCommit": head_commit,
        "strategy": head.rollout.strategy,
        "target": head.packages(),
        "changes": [c.dump() for c in changes],
        "order": [h.name for h in order],
        "maxUnavailable": head.rollout.max_unavailable,
        "repairFirst": [h.name for h in order if h.name in set(first)],
        "steps": [s.dump() for s in steps],
        "warnings": review_warnings(head, lock, base, node_versions or {}),
        "expectedDurationS": expected_duration(steps),
    }
    return Plan.model_validate({**body, "sha256": sha256_of(body)})


def _rolling_host(fleet: Fleet, host: Host) -> list[Step]:
    r = fleet.rollout
    name = host.name
    return [
        Step(id=f"{name}/bookmark", action="bookmark", hosts=[name]),
        Step(
            id=f"{name}/drain",
            action="drain",
            hosts=[name],
            weights=host_weights(host, 0),
            percent=0,
            timeout_s=seconds(r.drain_timeout),
        ),
        Step(
            id=f"{name}/preflight",
            action="preflight",
            hosts=[name],
            packages=pins(fleet.packages()),
        ),
        Step(
            id=f"{name}/install",
            action="install",
            hosts=[name],
            packages=pins(fleet.packages()),
            timeout_s=seconds(r.install_timeout),
        ),
        Step(id=f"{name}/restart", action="restart", hosts=[name]),
        Step(
            id=f"{name}/verify", action="verify", hosts=[name], timeout_s=seconds(r.probe_timeout)
        ),
        *(_ramp(fleet, host, pct, i) for i, pct in enumerate(r.steps)),
    ]


def _ramp(fleet: Fleet, host: Host, percent: int, index: int) -> Step:
    last = index == len(fleet.rollout.steps) - 1
    return Step(
        id=f"{host.name}/ramp-{percent}",
        action="ramp",
        hosts=[host.name],
        weights=host_weights(host, percent),
        percent=percent,
        soak_s=0.0 if last else seconds(fleet.rollout.soak),
    )


def _retire(host: str) -> Step:
    return Step(id=f"{host}/retire", action="retire", hosts=[host], percent=0)


def _all_at_once(fleet: Fleet, order: list[Host], install: bool) -> list[Step]:
    r = fleet.rollout
    names = [h.name for h in order]
    everyone = {s: w for h in order for s, w in host_weights(h, 100).items()}
    if not install:
        return [
            Step(id="fleet/ramp-100", action="ramp", hosts=names, weights=everyone, percent=100)
        ]
    drained = {s: 0 for s in everyone}
    return [
        Step(id="fleet/bookmark", action="bookmark", hosts=names),
        Step(
            id="fleet/drain",
            action="drain",
            hosts=names,
            weights=drained,
            percent=0,
            timeout_s=seconds(r.drain_timeout),
        ),
        Step(
            id="fleet/preflight", action="preflight", hosts=names, packages=pins(fleet.packages())
        ),
        Step(
            id="fleet/install",
            action="install",
            hosts=names,
            packages=pins(fleet.packages()),
            timeout_s=seconds(r.install_timeout),
        ),
        Step(id="fleet/restart", action="restart", hosts=names),
        Step(id="fleet/verify", action="verify", hosts=names, timeout_s=seconds(r.probe_timeout)),
        Step(id="fleet/ramp-100", action="ramp", hosts=names, weights=everyone, percent=100),
    ]


def expected_duration(steps: list[Step]) -> float:
    return sum(ESTIMATE[s.action] + s.soak_s for s in steps)


# --- what a reviewer should know ----------------------------------------------------------------


def _analysis_warnings(fleet: Fleet) -> list[str]:
    """Canary analysis that cannot judge anything, said before it is relied on."""
    r = fleet.rollout
    if r.strategy == "all-at-once" or seconds(r.soak) == 0:
        return ["canary analysis cannot judge anything: no soak (rollout.soak is 0s)"]
    if r.analysis.min_requests == 0:
        then = {"pass": "passes", "hold": "holds", "fail": "fails"}[r.analysis.inconclusive]
        return [
            "canary analysis: minRequests is 0, so one request in a soak decides it (a soak "
            f"with none is inconclusive, and then {then})"
        ]
    return []


def review_warnings(
    head: Fleet, lock: Lock | None, base: Fleet | None, node_versions: Mapping[str, str]
) -> list[str]:
    """What a reviewer should know before merging (the plan's `warnings`); the hosts are
    checked again when the rollout reaches them (the `preflight` step, the install's own)."""
    warnings: list[str] = _analysis_warnings(head)
    core = head.openclaw.version
    if base is not None and versions.compare(core, base.openclaw.version) < 0:
        warnings.append(f"downgrade: openclaw {base.openclaw.version} -> {core} (a rollback?)")
    if lock is None:
        return [*warnings, "no lock: compatibility ranges not checked"]
    for pkg in lock.packages[1:]:
        warnings += [
            f"{pkg.name}@{pkg.version}: {label} {rng!r} excludes openclaw {core}"
            for label, rng in (
                ("peer range", pkg.peer_openclaw),
                ("pluginApi", pkg.plugin_api),
                ("minHostVersion", pkg.min_host_version),
            )
            if rng and versions.valid_range(rng) and not versions.satisfies(core, rng)
        ]
    for host, node in sorted(node_versions.items()):
        refusal = core_node_refusal(node, lock)
        warnings += [f"{host}: {refusal}"] if refusal else []
    return warnings
