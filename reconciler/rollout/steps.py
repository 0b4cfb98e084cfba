"""What each plan step does to hosts and the load balancer, and what it reports back.

The executor runs exactly the step the engine hands it, idempotently: running a step twice
(after a crash between acting and recording) ends in the same state as running it once. A step
never writes to git; it returns an `Outcome` that the engine records. A red outcome is not an
exception: it is data, and the engine answers it by restoring the host from its bookmark.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from reconciler import lb as lbmod
from reconciler.desired import versions
from reconciler.desired.lock import Lock
from reconciler.desired.spec import Fleet, Host, Pin, seconds
from reconciler.errors import HostError, PermanentError, TemporaryError
from reconciler.hosts import productfacts
from reconciler.hosts.agent import InstalledAndLive
from reconciler.hosts.compare import core_node_refusal, differences, disk_refusal
from reconciler.hosts.operations import READY_POLL_S
from reconciler.hosts.readiness import PRODUCT_ERRORS, Doctors
from reconciler.hosts.recovery import Restored
from reconciler.record.documents import (
    Bookmark,
    Installed,
    Readiness,
    RecoveryPoint,
    reweighed,
)
from reconciler.rollout.gates import lock_differences
from reconciler.rollout.planner import Step, host_weights
from reconciler.rollout.readahead import ReadAhead

log = logging.getLogger(__name__)
T = TypeVar("T")
REGISTRY_GRACE_S = 30.0
"""How long a preflight waits for a registry that does not answer before the host is red."""
REGISTRY_RETRY_S = 2.0
FRESH_S = 1.0
"""An observation that finished this recently is as current as one made now."""
OUT_STATES = ("MAINT", "DOWN", "DRAIN", "NOLB")
"""Load balancer server states (HAProxy's `show stat` status) that take no new traffic."""
READY_WAIT_S = 10.0
"""Longest single wait for readiness on the host, so the deadline is checked in between."""


class HostAgent(Protocol):
    """Everything the engine does on a host, over its transport: the host's verbs, each
    read or done when asked (reads started early are the executor's `ReadAhead`)."""

    def observe(
        self,
        host: Host,
        *,
        lb_weights: Mapping[str, int],
        use_lock: bool = True,
        doctors: Doctors | None = None,
        seen: productfacts.TreeAndProbes | None = None,
    ) -> Readiness:
        """Readiness of `host`; with `use_lock=False` the tree is not judged against the lock
        (a host restored to its bookmark runs the prior versions on purpose); `doctors`: the
        doctor runs `start_doctors` began, used instead of running doctor again; `seen`: the
        tree and probes `await_ready` just read, used instead of reading them again."""
        ...

    def await_ready(self, host: Host, *, wait_s: float) -> productfacts.TreeAndProbes | None:
        """A glance taken once every profile is ready or after `wait_s` (polled on the host);
        None when it cannot be read for a reason about the product."""
        ...

    def start_doctors(self, host: Host) -> Doctors:
        """Start both doctors of every profile in the background."""
        ...

    def node_version(self, host: Host) -> str: ...

    def free_disk_mb(self, host: Host) -> int: ...

    def prefetch(self, host: Host) -> None:
        """Start reading, in the background, what the install's preflight will ask the
        registry (a hint: nothing depends on it having run)."""
        ...

    def registry_reachable(self, host: Host) -> bool: ...

    def install(
        self, host: Host, pins: list[Pin], *, prefer_offline: bool, managed: bool = False
    ) -> tuple[Installed, list[str]]:
        """The verified install, and the npm copies of plugins beside the core it removed."""
        ...

    def restart(self, host: Host, *, stopped: bool = False) -> None:
        """Restart every profile (`stopped`: start them after `recover` stopped them)."""
        ...

    def take_recovery_points(
        self, host: Host, *, seq: int, installed: Installed
    ) -> list[RecoveryPoint]:
        """Refuse unless the disk has room, then one verified backup per profile (pruned to
        the spec's number)."""
        ...

    def recovery_points_present(self, host: Host, points: list[RecoveryPoint]) -> str | None:
        """None when every point is on the host as recorded, else why not."""
        ...

    def recover(
        self, host: Host, points: list[RecoveryPoint], pins: list[Pin], *, prefer_offline: bool
    ) -> Restored:
        """Back onto recovery points, ending on `pins` (refused like an install when the
        preflight refuses); the gateways are left stopped."""
        ...

    def installed(self, host: Host) -> Installed:
        """The installed tree alone (cheap: one read)."""
        ...

    def glance(self, host: Host) -> InstalledAndLive:
        """The installed tree and, per profile, whether /readyz answers 200 and which version
        runs, from one command."""
        ...

    def skill_links(self, host: Host) -> dict[str, str]: ...

    def restore_skill_links(self, host: Host, links: Mapping[str, str]) -> list[str]:
        """Make the links a bookmark recorded; returns those refused (and why): a path or
        target outside the product's state is never made."""
        ...


@dataclass(frozen=True)
class Outcome:
    """The result of one step, for the engine to record."""

    subject: str
    host_phase: str | None = None
    red: str | None = None
    readiness: dict[str, Readiness] = field(default_factory=dict)
    bookmark: Bookmark | None = None
    weights: dict[str, int] = field(default_factory=dict)


@dataclass
class Executor:
    """Runs steps for one fleet at one spec commit."""

    fleet: Fleet
    lock: Lock | None
    spec_commit: str
    agent: HostAgent
    lb: lbmod.LoadBalancer
    now: Callable[[], str]
    ahead: ReadAhead = field(default_factory=ReadAhead)
    """The reads started early on these hosts (the engine keeps one per spec commit: what one
    pass starts, a later one takes), and the last observation of each host."""
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = 1.0
    ready_poll_s: float = READY_POLL_S
    recorded_points: Callable[[str], list[RecoveryPoint]] = lambda _host: []
    """The recovery points the status branch recorded for a host, newest first (a downgrade
    goes back onto one taken on the release it returns to)."""
    observed: dict[str, Readiness] = field(default_factory=dict, init=False)
    """Readiness `take_or_observe` found fresh in this pass (the skip check's), so the
    bookmark step does not observe the same hosts twice."""

    def run(self, step: Step, *, seq: int, peers: Sequence[str] = ()) -> Outcome:
        """Run one step. A permanent host error (engines.node refused, install did not
        verify, gateway never ready) is a red outcome; temporary errors propagate and the
        pass is retried with backoff. `peers`, for a verify: the hosts the ramp gate after
        it rechecks, glanced in the background as soon as this host is ready."""
        handler: Callable[[Step, int], Outcome] = getattr(self, f"_{step.action}")
        try:
            result = self._verify(step, peers) if step.action == "verify" else handler(step, seq)
        except PermanentError as exc:
            return Outcome(subject=f"{_who(step)}: {step.action} failed", red=str(exc))
        return result

    def out_of_service(self, names: list[str]) -> dict[str, str]:
        """The hosts among `names` that serve no traffic now, and why, whatever took them out:
        the load balancer's own state (MAINT, DOWN, DRAIN), a weight of 0 where the spec wants
        more, a gateway that is not ready, a host that cannot be reached."""
        stats, weights = self.lb.stats(), self.lb.weights()

        def why(name: str) -> str:
            host = self.fleet.host(name)
            reasons = []
            for server, wanted in host_weights(host, 100).items():
                state = stats[server].status.upper() if server in stats else "UP"
                if state.startswith(OUT_STATES):
                    reasons.append(f"load balancer server {server} is {state}")
                elif wanted > 0 and weights.get(server) == 0:
                    reasons.append(f"load balancer server {server} at weight 0")
            try:
                _tree, live = self.agent.glance(host)
            except (HostError, TemporaryError) as err:
                return "; ".join([*reasons, f"cannot be observed ({err})"])
            down = sorted(profile for profile, (ready, _running) in live.items() if not ready)
            reasons += [f"gateway {', '.join(down)} not ready"] if down else []
            return "; ".join(reasons)

        return {name: reason for name, reason in _each(names, why).items() if reason}

    def observe(self, names: list[str]) -> dict[str, Readiness]:
        """Fresh readiness of several hosts, observed in parallel."""
        weights = self.lb.weights()
        return _each(names, lambda n: self._observe(self.fleet.host(n), lb_weights=weights))

    def _observe(self, host: Host, **how: Any) -> Readiness:
        """`agent.observe(host, **how)`, remembered as this process's last observation of the
        host (see `recheck`)."""
        return self.ahead.note(self.agent.observe(host, **how))

    # --- the read-ahead: what to read early, and when to take it ---------------------------

    def read_ahead(self, names: list[str], recorded: Mapping[str, Readiness]) -> None:
        """Start, in the background, what the bookmark and the install of `names` will read:
        their readiness (taken by `take_or_observe` if it is still young then) and their
        registry facts (see `start_release_reads`). Only reads."""
        if not names or self.lock is None:
            return
        # A hint: on an LB error the step itself reads the LB and says what is wrong.
        with contextlib.suppress(lbmod.LBError):
            weights = self.lb.weights()
            for name in names:
                host = self.fleet.host(name)
                self.ahead.start_observing(
                    name, functools.partial(self._observe, host, lb_weights=weights)
                )
        self.start_release_reads(names, recorded)

    def start_release_reads(self, names: list[str], recorded: Mapping[str, Readiness]) -> None:
        """Start the registry reads of the hosts whose `recorded` tree says an install is
        coming (a hint: the install asks itself what was not read by then)."""
        for name in names:
            if name not in recorded or lock_differences(recorded[name], self.lock):
                self.agent.prefetch(self.fleet.host(name))

    def take_or_observe(self, names: list[str]) -> dict[str, Readiness]:
        """Fresh readiness of several hosts: the observation `read_ahead` started if it
        finished within FRESH_S, else one made now (an older one may hide a doctor, health or
        weight that changed since, and the skip check and the bookmark rest on all of them).
        Kept in `observed` for this pass's bookmark step."""
        taken = {n: self.ahead.take_observation(n, within_s=FRESH_S) for n in names}
        young = {n: doc for n, doc in taken.items() if doc is not None}
        rest = [n for n in names if n not in young]
        docs = {**young, **(self.observe(rest) if rest else {})}
        self.observed = {n: docs[n] for n in names}
        return self.observed

    def trees(self, names: list[str]) -> dict[str, Installed | str]:
        """The installed tree of several hosts (one read each, in parallel), or why it could
        not be read for a reason about the product (a host that cannot be reached raises)."""

        def read(name: str) -> Installed | str:
            try:
                return self.agent.installed(self.fleet.host(name))
            except PRODUCT_ERRORS as exc:
                return f"cannot read the installed tree: {exc}"

        return _each(names, read)

    def recheck(self, recorded: Mapping[str, Readiness]) -> dict[str, Readiness]:
        """Hosts verified earlier, cheaply: the recorded readiness while it is current (this
        process observed it just now) or a glance (one process: the tree, the probes) finds
        their tree and running versions what it says, else a fresh one."""

        def check(name: str) -> Readiness:
            host, doc = self.fleet.host(name), recorded[name]
            if self.ahead.observed_within(doc, FRESH_S):
                return doc
            running = {p.profile: (p.readyz, p.running_version) for p in doc.profiles}
            try:
                glanced = self.ahead.take_glance(name, within_s=FRESH_S)
                tree, live = glanced if glanced is not None else self.agent.glance(host)
                same = live == running and productfacts.tree_agrees(tree, doc.installed)
                # A glance reads npm's tree; plugins are the product's tracked installs.
                same = same and self.agent.installed(host).plugins == doc.installed.plugins
            except PRODUCT_ERRORS:  # the tree cannot be read: the full observation says why
                same = False
            return doc if same else self._observe(host, lb_weights=self.lb.weights())

        return _each(list(recorded), check)

    def _hosts(self, step: Step) -> list[Host]:
        return [self.fleet.host(name) for name in step.hosts]

    def _short(self) -> str:
        return self.spec_commit[:12]

    # --- steps ---------------------------------------------------------------------------

    def _bookmark(self, step: Step, seq: int) -> Outcome:
        weights = self.lb.weights()
        fresh = [h for h in step.hosts if h not in self.observed]
        docs = {h: self.observed[h] for h in step.hosts if h in self.observed}
        docs |= self.observe(fresh) if fresh else {}
        host = self._hosts(step)[0]
        points = [
            point
            for h in self._hosts(step)
            if docs[h.name].installed.core is not None  # a fresh host has nothing to keep
            for point in self.agent.take_recovery_points(
                h, seq=seq, installed=docs[h.name].installed
            )
        ]
        bookmark = Bookmark(
            seq=seq,
            fleet=self.fleet.name,
            host=host.name if len(step.hosts) == 1 else "fleet",
            phase="pre-upgrade",
            spec_commit=self.spec_commit,
            created_at=self.now(),
            lb_weights=weights,
            installed=docs[host.name].installed,
            lock_sha256=self.lock.sha256 if self.lock else None,
            readiness_sha256={h: d.readiness_sha256 for h, d in docs.items()},
            skill_links=self.agent.skill_links(host),
            hosts={h: d.installed for h, d in docs.items()},
            return_weights=_return_weights(weights, self._hosts(step)),
            recovery_points=points,
        )
        core = docs[host.name].installed.core or "nothing"
        mine = _fmt(weights, step, self.fleet)
        size = sum(p.size_bytes for p in points) / 1024
        return Outcome(
            subject=f"{_who(step)}: bookmarked (openclaw {core}, weights {mine}, "
            f"{len(points)} recovery point{'s' * (len(points) != 1)}, {size:.0f} KiB)",
            host_phase="Bookmarked",
            readiness=docs,
            bookmark=bookmark,
        )

    def _drain(self, step: Step, seq: int) -> Outcome:
        drained = lbmod.drain(
            self.lb, step.weights, timeout=step.timeout_s, poll=self.poll_s, sleep=self.sleep
        )
        note = "drained" if drained else f"drain timed out after {step.timeout_s:.0f}s, proceeding"
        return Outcome(
            subject=f"{_who(step)}: {note} (weight 0)",
            host_phase="Drained",
            weights=dict(step.weights),
        )

    def _preflight(self, step: Step, seq: int) -> Outcome:
        """The plan's `preflight` step, on drained hosts: the core's engines.node, the free
        disk, the registry. The install then runs its own (`operations.install_preflight`)."""
        problems = []
        for host in self._hosts(step):
            with ThreadPoolExecutor(2, thread_name_prefix=f"preflight-{host.name}") as pool:
                asked = pool.submit(self.agent.node_version, host)
                free = pool.submit(self.agent.free_disk_mb, host).result()
                node = asked.result()
            refusals = [core_node_refusal(node, self.lock), disk_refusal(self.fleet, free)]
            problems += [f"{host.name}: {why}" for why in refusals if why]
            if not self._registry_reachable(host, REGISTRY_GRACE_S):
                problems.append(f"{host.name}: registry {self.fleet.openclaw.registry} unreachable")
        if problems:
            return Outcome(subject=f"{_who(step)}: preflight refused", red="; ".join(problems))
        return Outcome(subject=f"{_who(step)}: preflight passed", host_phase="Preflighted")

    def _registry_reachable(self, host: Host, grace_s: float) -> bool:
        """Reachable now, or within `grace_s`: a registry that blinks (a restart, a deploy)
        is waited out here, with the host already drained, instead of failing the commit."""
        deadline = time.monotonic() + grace_s
        while not self.agent.registry_reachable(host):
            if time.monotonic() >= deadline:
                return False
            log.warning(
                "%s: registry %s unreachable; asking again in %gs (for up to %gs)",
                host.name,
                self.fleet.openclaw.registry,
                REGISTRY_RETRY_S,
                grace_s,
            )
            self.sleep(REGISTRY_RETRY_S)
        return True

    def _install(self, step: Step, seq: int) -> Outcome:
        notes = []
        for host in self._hosts(step):
            downgrade, points = self._downgrade_of(host, step.packages)
            if points:
                # The older release would refuse the newer state: back onto the state it wrote.
                restored = self.agent.recover(host, points, step.packages, prefer_offline=False)
                self.agent.restart(host, stopped=True)  # the restart step restarts it again
                installed = self.agent.installed(host)
                notes.append(f"{host.name}: {restored.summary()}")
            else:
                # A downgrade with no recovery point takes the product's managed path, which
                # refuses (in its own words) when the older release cannot run on the state.
                installed, removed = self.agent.install(
                    host, step.packages, prefer_offline=False, managed=downgrade
                )
                # hosts set up with `npm i -g` plugins, which the product never loaded
                notes += [f"removed npm copy of a plugin beside the core: {c}" for c in removed]
            wrong = _pins_differ(installed, step.packages)
            if wrong:
                return Outcome(subject=f"{host.name}: install did not converge", red=wrong)
        target = step.packages[0].version if step.packages else "?"
        subject = "; ".join([f"{_who(step)}: installed openclaw {target}", *notes])
        return Outcome(subject=subject, host_phase="Installed")

    def _downgrade_of(self, host: Host, pins: list[Pin]) -> tuple[bool, list[RecoveryPoint]]:
        """Is this a downgrade of the core, and the newest recovery point set (one per
        profile) still on the host that was taken on the target release."""
        target = next((p.version for p in pins if p.name == "openclaw"), None)
        seen = self.observed.get(host.name)
        current = seen.installed if seen is not None else self.agent.installed(host)
        if target is None or current.core is None or versions.compare(target, current.core) >= 0:
            return False, []
        profiles = {p.key() for p in host.profiles}
        by_seq: dict[int, list[RecoveryPoint]] = {}
        for point in self.recorded_points(host.name):
            if point.installed.core == target:
                by_seq.setdefault(point.seq, []).append(point)
        for seq in sorted(by_seq, reverse=True):
            points = by_seq[seq]
            if {p.profile for p in points} == profiles:
                gone = self.agent.recovery_points_present(host, points)
                if gone is None:
                    return True, points
                log.info("%s: not returning to recovery point %d: %s", host.name, seq, gone)
        return True, []

    def _restart(self, step: Step, seq: int) -> Outcome:
        for host in self._hosts(step):
            self.agent.restart(host)
        return Outcome(subject=f"{_who(step)}: restarted", host_phase="Restarted")

    def _verify(self, step: Step, peers: Sequence[str]) -> Outcome:
        docs = {}
        for host in self._hosts(step):
            doc = self._wait_green(host, step.timeout_s, peers=peers)
            docs[host.name] = doc
            if not doc.green:
                return Outcome(
                    subject=f"{host.name}: red after upgrade",
                    red="; ".join(doc.reasons) or "not green",
                    readiness=docs,
                )
        core = next(iter(docs.values())).installed.core
        return Outcome(
            subject=f"{_who(step)}: openclaw {core} running, doctor green, ready",
            host_phase="Verified",
            readiness=docs,
        )

    def _wait_green(
        self, host: Host, timeout: float, *, use_lock: bool = True, peers: Sequence[str] = ()
    ) -> Readiness:
        """Wait (on the host) until every profile is ready, then observe everything, with the
        doctors started at once; again until green or the deadline (when the last full
        observation says why not). Once it is ready, `peers` are glanced in the background."""
        deadline = time.monotonic() + timeout
        doctors = self.agent.start_doctors(host)  # they need no ready gateway: run meanwhile
        while True:
            wait = min(max(deadline - time.monotonic(), 0.0), READY_WAIT_S)
            seen = self.agent.await_ready(host, wait_s=wait)  # None: the observation says why
            ready = seen is not None and all(p.readyz.ok for p in seen.probes)
            for peer in peers if ready else ():
                self.ahead.start_glance(
                    peer, functools.partial(self.agent.glance, self.fleet.host(peer))
                )
            if ready or time.monotonic() >= deadline:
                weights = self.lb.weights()
                doc = self._observe(
                    host, lb_weights=weights, use_lock=use_lock, doctors=doctors, seen=seen
                )
                if doc.green and (not use_lock or not lock_differences(doc, self.lock)):
                    return doc
                if time.monotonic() >= deadline:
                    return doc
                doctors = self.agent.start_doctors(host)  # the next try gets fresh ones
            self.sleep(self.ready_poll_s)

    def _ramp(self, step: Step, seq: int) -> Outcome:
        lbmod.apply_weights(self.lb, step.weights)
        return Outcome(
            subject=f"{_who(step)}: weight {step.percent}%",
            host_phase="Done" if step.percent == 100 else "Ramping",
            weights=dict(step.weights),
        )

    def _retire(self, step: Step, seq: int) -> Outcome:
        servers = [
            s for s in self.lb.weights() if s == step.hosts[0] or s.startswith(step.hosts[0] + "-")
        ]
        lbmod.apply_weights(self.lb, dict.fromkeys(servers, 0))
        return Outcome(
            subject=f"{step.hosts[0]}: removed from the fleet (weight 0)", host_phase="Done"
        )

    # --- restore -------------------------------------------------------------------------

    def restore(self, host: Host, bookmark: Bookmark) -> Outcome:
        """Put a host back as its bookmark recorded it: onto its recovery points when the host
        changed since (the state the older release needs, see `reconciler.hosts.recovery`), else
        versions and skill links; then the gates of an upgrade, then its weights."""
        prior = bookmark.hosts.get(host.name, bookmark.installed)
        pins = _pins_of(prior)
        points = [p for p in bookmark.recovery_points if p.host == host.name]
        changed = self._changed(host, pins)
        restored: Restored | None = None
        if points and changed:
            restored = self.agent.recover(host, points, pins, prefer_offline=True)
        elif changed:
            self.agent.install(host, pins, prefer_offline=True)
        refused = self.agent.restore_skill_links(host, bookmark.skill_links)
        self.agent.restart(host, stopped=restored is not None)
        timeout = seconds(self.fleet.rollout.probe_timeout)
        doc = self._wait_green(host, timeout, use_lock=False)
        where = f" ({restored.summary()})" if restored else ""
        wrong = _pins_differ(doc.installed, pins)
        if wrong:
            raise PermanentError(f"{host.name}: restore did not converge: {wrong}{where}")
        if not doc.green:
            raise PermanentError(
                f"{host.name}: still red after restoring the bookmark: "
                f"{'; '.join(doc.reasons)}{where}"
            )
        returned = bookmark.return_weights or bookmark.lb_weights
        weights = {s: returned.get(s, w) for s, w in host_weights(host, 100).items()}
        lbmod.apply_weights(self.lb, weights)
        kept_out = f"; refused skill links from the bookmark: {'; '.join(refused)}"
        return Outcome(
            subject=f"{host.name}: restored to openclaw {prior.core} "
            f"from bookmark {bookmark.seq}, weights {weights}"
            + (f"; {restored.summary()}" if restored else "")
            + (kept_out if refused else ""),
            host_phase="RolledBack",
            readiness={host.name: reweighed(host, doc, weights)},
            weights=weights,
        )

    def _changed(self, host: Host, pins: list[Pin]) -> str:
        """How the host's install differs from `pins` ('' when it does not); a host whose
        product cannot even list its plugins (an older binary over newer state) has changed."""
        try:
            return _pins_differ(self.agent.installed(host), pins)
        except HostError as err:
            if isinstance(err, TemporaryError):
                raise
            return f"install unreadable: {err}"


def _each(names: list[str], fn: Callable[[str], T]) -> dict[str, T]:
    """fn(name) for each distinct name, in parallel, in the order given."""
    unique = list(dict.fromkeys(names))
    if len(unique) <= 1:
        return {n: fn(n) for n in unique}
    with ThreadPoolExecutor(min(16, len(unique))) as pool:
        futures = {n: pool.submit(fn, n) for n in unique}
        return {n: f.result() for n, f in futures.items()}


def _pins_of(installed: Installed) -> list[Pin]:
    pins = [Pin(name="openclaw", version=installed.core)] if installed.core else []
    return pins + [Pin(name=n, version=v) for n, v in sorted(installed.plugins.items())]


def _pins_differ(installed: Installed, pins: list[Pin]) -> str:
    """How `installed` differs from `pins` (`compare.differences`); '' when it does not."""
    return "; ".join(differences(installed, {p.name: p.version for p in pins}))


def _return_weights(weights: Mapping[str, int], hosts: list[Host]) -> dict[str, int]:
    """Each server's weight now, or the spec's where it is 0: a host a failed rollout left
    drained goes back into service when it is restored."""
    return {
        server: weights.get(server) or full
        for host in hosts
        for server, full in host_weights(host, 100).items()
    }


def _who(step: Step) -> str:
    return step.hosts[0] if len(step.hosts) == 1 else "fleet"


def _fmt(weights: Mapping[str, int], step: Step, fleet: Fleet) -> str:
    mine = {s for h in step.hosts for s in host_weights(fleet.host(h), 100)}
    return ", ".join(f"{s}={w}" for s, w in sorted(weights.items()) if s in mine) or "none"
