"""Readiness: one merged, hashed document per host, built from facts alone.

The runbook's "one readiness JSON per host": the installed tree, doctor and post-upgrade
findings, the probes, the running version, health and LB weight of every profile, a verdict
(`green`) with every reason it is not green, and two digests. The verdict is never taken from an
exit code or from doctor's `ok` (false on every healthy host because of one warning): doctor
findings count only at or above the spec's `doctorThreshold`.

`fingerprint` covers what peers on one release must share (documents.fingerprint_basis), so two
hosts on the same versions get the same one while their readiness_sha256 differ; `basis` keeps
its input in the document so a status can name the fields two hosts disagree on.

A fact that fails for a reason about the product (a missing binary, a doctor that prints
garbage or hangs) makes the host red with that reason: the document still gets written. Only
errors about reaching the host (unreachable, wrong key, refused credentials) propagate, because
then there is nothing to observe. Host-level facts and each profile's facts run concurrently over
the host's one connection; `observe_all` observes hosts in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from reconciler.canonical import sha256_of
from reconciler.desired.lock import Lock
from reconciler.desired.spec import Fleet, Host, Profile, seconds, server_name
from reconciler.errors import (
    CommandFailed,
    CommandTimeout,
    FactParseError,
    MissingBinary,
    ReconcilerError,
)
from reconciler.hosts import facts, productfacts
from reconciler.hosts.compare import core_node_refusal, differences
from reconciler.hosts.transport import Transport
from reconciler.hosts.tree import HostTree
from reconciler.record.documents import (
    SEVERITY_RANK,
    Finding,
    Installed,
    ProfileReadiness,
    Readiness,
    fingerprint_basis,
    seal_readiness,
)

T = TypeVar("T")

PRODUCT_ERRORS = (MissingBinary, FactParseError, CommandFailed, CommandTimeout)
"""Errors that describe the host's product state: recorded as reasons, not raised."""
PROFILE_FACTS = 5
MAX_CHANNELS = 8
"""Concurrent commands per host: sshd's MaxSessions defaults to 10 channels per connection."""
FLEET_WORKERS = 32


@dataclass
class _Reasons:
    """Collects why a host is not green, without repeats. Each concurrent task gets its own
    instance and they are merged in a fixed order, so the same state gives the same document."""

    items: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        if reason not in self.items:
            self.items.append(reason)

    def extend(self, other: _Reasons) -> None:
        for reason in other.items:
            self.add(reason)

    def attempt(self, what: str, fn: Callable[[], T]) -> T | None:
        """fn(), or None with a reason when it fails for a product reason."""
        try:
            return fn()
        except PRODUCT_ERRORS as exc:
            self.add(f"{what}: {exc}")
            return None


@dataclass(frozen=True)
class _ProfileFacts:
    doctor: productfacts.Doctor | None
    post_upgrade: productfacts.Doctor | None
    probes: productfacts.Probes | None
    health: productfacts.Health | None
    plugins: tuple[productfacts.Plugin, ...] | None
    reasons: _Reasons


@dataclass(frozen=True)
class _HostFacts:
    node_version: str | None
    installed: Installed
    disk: facts.DiskFree | None
    profiles: list[_ProfileFacts]
    reasons: _Reasons


def observe(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    *,
    lock: Lock | None,
    spec_commit: str | None,
    lb_weights: Mapping[str, int],
    now: datetime,
    doctors: Doctors | None = None,
    seen: productfacts.TreeAndProbes | None = None,
) -> Readiness:
    """Gather every fact of `host` and its profiles and build its sealed readiness document
    (`doctors`: both doctor runs of each profile, started earlier by `start_doctors`; `seen`:
    the tree and probes, just read by a glance)."""
    got = _gather(fleet, host, transport, doctors, seen)
    reasons = got.reasons
    profiles = []
    for profile, pf in zip(host.profiles, got.profiles, strict=True):
        reasons.extend(pf.reasons)
        profiles.append(_profile_doc(host, profile, pf, lb_weights))
    installed = productfacts.product_view(got.installed, {p.profile: p.plugins for p in profiles})
    _judge(fleet, lock, got.node_version, installed, profiles, reasons)
    lock_sha256 = lock.sha256 if lock is not None else None
    draft: dict[str, Any] = {
        "fleet": fleet.name,
        "host": host.name,
        "observedAt": rfc3339(now),
        "specCommit": spec_commit,
        "lockSha256": lock_sha256,
        "nodeVersion": got.node_version,
        "installed": installed.model_dump(mode="json", by_alias=True),  # keeps core: null
        "profiles": [p.dump() for p in profiles],
        "freeDiskMb": got.disk.free_mb if got.disk is not None else None,
    }
    return _seal(draft, reasons, fingerprint_basis(lock_sha256, installed, profiles))


def _gather(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    doctors: Doctors | None = None,
    seen: productfacts.TreeAndProbes | None = None,
) -> _HostFacts:
    """Every fact of the host, concurrently over its one connection: one read of the tree
    (which also gives Node's version and the free space), and each profile's four facts."""
    timeout = seconds(fleet.ssh.command_timeout)
    reasons = _Reasons()
    prefix = reasons.attempt(
        "npm prefix", lambda: facts.resolve_prefix(transport, host, timeout=timeout)
    )
    workers = min(1 + PROFILE_FACTS * len(host.profiles), MAX_CHANNELS)
    with ThreadPoolExecutor(workers, thread_name_prefix=f"observe-{host.name}") as pool:
        glanced = None if seen else pool.submit(_glance, transport, prefix, host, timeout)
        pending = [
            _profile_facts(
                pool, transport, p, timeout, doctors.runs.get(p.key()) if doctors else None
            )
            for p in host.profiles
        ]
        if glanced is not None:
            seen = glanced.result()
        got: HostTree | None
        probes: list[tuple[productfacts.Probes | None, _Reasons]]
        if seen is not None:
            got, probes = seen.tree, [(p, _Reasons()) for p in seen.probes]
        else:  # read apart, so that each failure says what it was
            tree = pool.submit(_tree, transport, prefix, timeout)
            probe_fs = [
                _submit(pool, transport, p, productfacts.probes(p.port), timeout)
                for p in host.profiles
            ]
            got, tree_reasons = tree.result()
            reasons.extend(tree_reasons)
            probes = [f.result() for f in probe_fs]
        disk = facts.DiskFree.of(got, "") if got is not None else None
        if disk is None and prefix is not None:  # a Node without fs.statfsSync: ask df
            disk = _df(transport, prefix, timeout, reasons)
        return _HostFacts(
            got.node_version if got else None,
            got.installed if got else Installed(core=None),
            disk,
            [p.result(pr) for p, pr in zip(pending, probes, strict=True)],
            reasons,
        )


def _glance(
    transport: Transport, prefix: str | None, host: Host, timeout: float
) -> productfacts.TreeAndProbes | None:
    """The tree and every profile's probes from one process; None when that fails for a
    product reason (the caller then reads them apart, for precise reasons)."""
    if prefix is None:
        return None
    fact = productfacts.glance(prefix, [p.port for p in host.profiles])
    try:
        return facts.gather(transport, fact, timeout=timeout)
    except PRODUCT_ERRORS:
        return None


def _one(
    transport: Transport, fact: facts.Fact[T], what: str, timeout: float
) -> tuple[T | None, _Reasons]:
    reasons = _Reasons()
    value = reasons.attempt(what, lambda: facts.gather(transport, fact, timeout=timeout))
    return value, reasons


def _df(
    transport: Transport, prefix: str, timeout: float, reasons: _Reasons
) -> facts.DiskFree | None:
    return reasons.attempt(
        "disk", lambda: facts.gather(transport, facts.disk_free(prefix), timeout=timeout)
    )


def _tree(
    transport: Transport, prefix: str | None, timeout: float
) -> tuple[HostTree | None, _Reasons]:
    if prefix is None:
        return None, _Reasons()
    return _one(transport, facts.host_tree(prefix), "npm tree", timeout)


@dataclass(frozen=True)
class _Pending:
    """A profile's four facts, in flight on the host's pool."""

    doctor: Future[tuple[productfacts.Doctor | None, _Reasons]]
    post_upgrade: Future[tuple[productfacts.Doctor | None, _Reasons]]
    health: Future[tuple[productfacts.Health | None, _Reasons]]
    plugins: Future[tuple[tuple[productfacts.Plugin, ...] | None, _Reasons]]

    def result(self, probes: tuple[productfacts.Probes | None, _Reasons]) -> _ProfileFacts:
        """The five facts, with `probes` read with the tree (see `_glance`)."""
        reasons = _Reasons()
        doctor, post, health, plugins = (
            self.doctor.result(),
            self.post_upgrade.result(),
            self.health.result(),
            self.plugins.result(),
        )
        for _, found in (doctor, post, probes, health, plugins):  # a fixed order: same doc
            reasons.extend(found)
        return _ProfileFacts(doctor[0], post[0], probes[0], health[0], plugins[0], reasons)


_DoctorRun = tuple[
    Future[tuple[productfacts.Doctor | None, _Reasons]],
    Future[tuple[productfacts.Doctor | None, _Reasons]],
]


@dataclass(frozen=True)
class Doctors:
    """Both doctor runs of every profile of a host, in flight (see `start_doctors`)."""

    runs: dict[str, _DoctorRun]


def start_doctors(
    fleet: Fleet, host: Host, transport: Transport, pool: ThreadPoolExecutor
) -> Doctors:
    """Start `doctor` and `doctor --post-upgrade` of every profile on `pool`. After a restart
    they can run while the gateway comes up: they check the install and its config, not the
    running gateway (that is what the probes and `health` are for), and a real doctor takes
    seconds, so a verify need not wait for readiness first and doctor after."""
    timeout = seconds(fleet.ssh.command_timeout)
    return Doctors({p.key(): _doctor_run(pool, transport, p, timeout) for p in host.profiles})


def _doctor_run(
    pool: ThreadPoolExecutor, transport: Transport, profile: Profile, timeout: float
) -> _DoctorRun:
    env = facts.profile_env(profile)
    return (
        _submit(pool, transport, profile, productfacts.doctor(env), timeout),
        _submit(pool, transport, profile, productfacts.post_upgrade(env), timeout),
    )


def _submit(
    pool: ThreadPoolExecutor,
    transport: Transport,
    profile: Profile,
    fact: facts.Fact[T],
    timeout: float,
) -> Future[tuple[T | None, _Reasons]]:
    """Gather one fact of `profile` on `pool`; a product failure is a reason naming both."""
    return pool.submit(_one, transport, fact, f"profile {profile.key()}: {fact.name}", timeout)


def _profile_facts(
    pool: ThreadPoolExecutor,
    transport: Transport,
    profile: Profile,
    timeout: float,
    doctors: _DoctorRun | None = None,
) -> _Pending:
    """doctor, post-upgrade doctor, health and the plugin list of one profile, started
    concurrently (the doctors only when they are not already running); its probes come with
    the tree."""
    doctor, post = doctors or _doctor_run(pool, transport, profile, timeout)
    env = facts.profile_env(profile)
    return _Pending(
        doctor=doctor,
        post_upgrade=post,
        health=_submit(pool, transport, profile, productfacts.health(env), timeout),
        plugins=_submit(pool, transport, profile, productfacts.plugins(env), timeout),
    )


def _profile_doc(
    host: Host, profile: Profile, got: _ProfileFacts, lb_weights: Mapping[str, int]
) -> ProfileReadiness:
    probes = got.probes
    return ProfileReadiness(
        profile=profile.key(),
        port=profile.port,
        doctor=list(got.doctor.findings) if got.doctor else [],
        post_upgrade=list(got.post_upgrade.findings) if got.post_upgrade else [],
        healthz=bool(probes and probes.healthz.ok),
        readyz=bool(probes and probes.readyz.ok),
        health_ok=got.health.ok if got.health and got.health.reachable else None,
        running_version=probes.running_version if probes else None,
        lb_weight=lb_weights.get(server_name(host, profile)),
        plugins=productfacts.plugin_states(got.plugins or ()),
    )


# --- the verdict --------------------------------------------------------------------------------


def _judge(
    fleet: Fleet,
    lock: Lock | None,
    node_version: str | None,
    installed: Installed,
    profiles: list[ProfileReadiness],
    reasons: _Reasons,
) -> None:
    """Add every reason the host is not green (facts that could not be read are in already)."""
    _judge_tree(installed, lock, node_version, reasons)
    threshold = SEVERITY_RANK[fleet.rollout.doctor_threshold]
    for p in profiles:
        _judge_profile(p, installed, threshold, reasons)


def _judge_tree(
    installed: Installed, lock: Lock | None, node_version: str | None, reasons: _Reasons
) -> None:
    if installed.core is None:
        reasons.add("openclaw is not installed")
    found = differences(installed, lock.versions() if lock is not None else None)
    for fault in found.faults:
        reasons.add(fault)
    for wrong in found.versions:
        reasons.add(f"differs from the lock: {wrong}")
    refusal = core_node_refusal(node_version, lock)
    if refusal is not None:
        reasons.add(refusal)


def _judge_profile(
    p: ProfileReadiness, installed: Installed, threshold: int, reasons: _Reasons
) -> None:
    where = f"profile {p.profile}"
    for source, findings in (("doctor", p.doctor), ("post-upgrade doctor", p.post_upgrade)):
        for f in _at_or_above(findings, threshold):
            detail = f": {f.message}" if f.message else ""
            reasons.add(f"{where}: {source} {f.check_id} ({f.severity}){detail}")
    if not p.readyz:
        reasons.add(f"{where}: /readyz is not 200 (port {p.port})")
    if p.health_ok is None:
        reasons.add(f"{where}: `openclaw health` could not reach the gateway")
    elif not p.health_ok:
        reasons.add(f"{where}: `openclaw health` reports not ok")
    for plugin in p.plugins:
        trouble = plugin.trouble()
        if trouble is not None:
            reasons.add(f"{where}: plugin {plugin.name}@{plugin.version} is not running: {trouble}")
    if installed.core is not None and p.running_version != installed.core:
        reasons.add(
            f"{where}: running version {p.running_version or 'unknown'} "
            f"is not the installed {installed.core}"
        )


def _at_or_above(findings: list[Finding], threshold: int) -> list[Finding]:
    return [f for f in findings if SEVERITY_RANK[f.severity] >= threshold]


def _seal(draft: dict[str, Any], reasons: _Reasons, basis: dict[str, Any]) -> Readiness:
    """Add the verdict and both digests; None values are left out (they are the defaults)."""
    full = {
        **draft,
        "schemaVersion": 1,
        "green": not reasons.items,
        "reasons": list(reasons.items),
        "basis": basis,
        "fingerprint": sha256_of(basis),
    }
    return seal_readiness({k: v for k, v in full.items() if v is not None})


def rfc3339(moment: datetime) -> str:
    """UTC, second precision, `Z` suffix."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- observing many -----------------------------------------------------------------------------


def observe_all(
    fleet: Fleet,
    transports: Mapping[str, Transport],
    *,
    lock: Lock | None,
    spec_commit: str | None,
    lb_weights: Mapping[str, int],
    now: datetime,
    max_workers: int = FLEET_WORKERS,
) -> dict[str, Readiness | ReconcilerError]:
    """Observe every host named in `transports` in parallel: its Readiness, or the typed error
    that kept it from being observed (unreachable, host key, ...), per host name."""
    hosts = [fleet.host(name) for name in transports]
    if not hosts:
        return {}
    with ThreadPoolExecutor(min(max_workers, len(hosts)), thread_name_prefix="observe") as pool:
        futures = {
            h.name: pool.submit(
                observe,
                fleet,
                h,
                transports[h.name],
                lock=lock,
                spec_commit=spec_commit,
                lb_weights=lb_weights,
                now=now,
            )
            for h in hosts
        }
        return {name: _outcome(future) for name, future in futures.items()}


def _outcome(future: Future[Readiness]) -> Readiness | ReconcilerError:
    try:
        return future.result()
    except ReconcilerError as exc:
        return exc
