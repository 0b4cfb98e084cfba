"""The engine's hands on a fleet: facts, operations and readiness bound to one spec.

`FleetAgent` implements the `HostAgent` interface the executor uses, over one transport per
host (reused across passes of the same spec). The pinned host keys come from the spec commit
itself and are written to a private file the SSH transport reads; nothing else of the spec
touches the disk.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from reconciler.desired.spec import Host, Pin, seconds
from reconciler.desired.validate import LoadedSpec
from reconciler.errors import ReconcilerError
from reconciler.hosts import facts, operations, productfacts, readiness, recovery
from reconciler.hosts.connect import transport_for
from reconciler.hosts.prefetch import Prefetch
from reconciler.hosts.transport import Transport
from reconciler.record.documents import Installed, Readiness, RecoveryPoint

SKILLS_DIR = ".openclaw/skills"
SKILL_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,128}")


InstalledAndLive = tuple[Installed, dict[str, tuple[bool, str | None]]]
"""What a glance tells, digested from its `productfacts.TreeAndProbes`: the installed tree, and per
profile whether /readyz answers 200 and which version runs."""


class FleetAgent:
    """Facts and operations for every host of one loaded spec."""

    def __init__(self, spec: LoadedSpec, *, known_hosts: Path, key_file: Path | None) -> None:
        self.spec = spec
        self.fleet = spec.fleet
        self.known_hosts = known_hosts
        self.key_file = key_file
        self.spec_commit: str | None = None
        self._transports: dict[str, Transport] = {}
        self._transports_lock = threading.Lock()
        self._closed = False
        self.releases = Prefetch()
        self._doctor_pool: ThreadPoolExecutor | None = None

    @classmethod
    def for_spec(
        cls, spec: LoadedSpec, *, cache_dir: str | Path, key_file: str | Path | None = None
    ) -> FleetAgent:
        text = spec.known_hosts.text
        digest = hashlib.sha256(text).hexdigest()[:16]
        path = Path(cache_dir) / f"known_hosts-{digest}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text)
            path.chmod(0o600)
        return cls(spec, known_hosts=path, key_file=Path(key_file) if key_file else None)

    def transport(self, host: Host) -> Transport:
        with self._transports_lock:
            known = self._transports.get(host.name)
        if known is not None:
            return known
        # Built outside the lock (it may connect), since reads ahead ask from their own threads:
        # the first one kept wins, a loser is closed.
        made = transport_for(
            self.fleet, host, known_hosts_path=self.known_hosts, key_file=self.key_file
        )
        with self._transports_lock:
            kept = None if self._closed else self._transports.setdefault(host.name, made)
        if kept is not made:
            made.close()
        if kept is None:
            raise ReconcilerError(f"{host.name}: the agent is closed")
        return kept

    def close(self) -> None:
        """Stop the registry reads and doctors it started and close every connection (running
        commands then fail)."""
        self.releases.close()
        if self._doctor_pool is not None:
            self._doctor_pool.shutdown(wait=False, cancel_futures=True)
        self._doctor_pool = None
        with self._transports_lock:
            self._closed = True
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()

    def _quick(self) -> float:
        return seconds(self.fleet.ssh.command_timeout)

    # --- HostAgent -----------------------------------------------------------------------

    def observe(
        self,
        host: Host,
        *,
        lb_weights: Mapping[str, int],
        use_lock: bool = True,
        doctors: readiness.Doctors | None = None,
        seen: productfacts.TreeAndProbes | None = None,
    ) -> Readiness:
        return readiness.observe(
            self.fleet,
            host,
            self.transport(host),
            lock=self.spec.lock if use_lock else None,
            spec_commit=self.spec_commit,
            lb_weights=lb_weights,
            now=datetime.now(UTC),
            doctors=doctors,
            seen=seen,
        )

    def start_doctors(self, host: Host) -> readiness.Doctors:
        if self._doctor_pool is None:
            self._doctor_pool = ThreadPoolExecutor(
                readiness.MAX_CHANNELS, thread_name_prefix="doctor"
            )
        return readiness.start_doctors(self.fleet, host, self.transport(host), self._doctor_pool)

    def installed(self, host: Host) -> Installed:
        t = self.transport(host)
        prefix = facts.resolve_prefix(t, host, timeout=self._quick())
        return productfacts.installed_view(t, host, prefix, timeout=self._quick())

    def glance(self, host: Host) -> InstalledAndLive:
        got = self._read_glance(host)
        live = {
            p.key(): (probes.readyz.ok, probes.running_version)
            for p, probes in zip(host.profiles, got.probes, strict=True)
        }
        return got.tree.installed, live

    def await_ready(self, host: Host, *, wait_s: float) -> productfacts.TreeAndProbes | None:
        try:
            return self._read_glance(host, wait_s=wait_s)
        except readiness.PRODUCT_ERRORS:
            return None

    def _read_glance(self, host: Host, *, wait_s: float = 0.0) -> productfacts.TreeAndProbes:
        t = self.transport(host)
        prefix = facts.resolve_prefix(t, host, timeout=self._quick())
        fact = productfacts.glance(prefix, [p.port for p in host.profiles], wait_s=wait_s)
        return facts.gather(t, fact, timeout=self._quick() + wait_s)

    def node_version(self, host: Host) -> str:
        return facts.gather(self.transport(host), facts.node_version(), timeout=self._quick())

    def free_disk_mb(self, host: Host) -> int:
        t = self.transport(host)
        prefix = facts.resolve_prefix(t, host, timeout=self._quick())
        return facts.gather(t, facts.disk_free(prefix), timeout=self._quick()).free_mb

    def prefetch(self, host: Host) -> None:
        lock = self.spec.lock
        if lock is None:
            return
        registry = self.fleet.openclaw.registry
        wanted = [facts.release_ranges(registry, p.name, p.version) for p in lock.packages]
        self.releases.start(self.transport(host), wanted, timeout=self._quick())

    def registry_reachable(self, host: Host) -> bool:
        if self.releases.answered(host.name, timeout=self._quick()):
            return True  # a release fact was just read from it
        ping = facts.registry_ping(self.fleet.openclaw.registry)
        return facts.gather(self.transport(host), ping, timeout=self._quick())

    def install(
        self, host: Host, pins: list[Pin], *, prefer_offline: bool, managed: bool = False
    ) -> tuple[Installed, list[str]]:
        locked = self._locked(pins)
        removed: list[str] = []
        installed = operations.install(
            self.fleet,
            host,
            self.transport(host),
            pins,
            lock=self.spec.lock if locked else None,
            prefer_offline=prefer_offline,
            releases=self.releases,
            removed=removed,
            managed=managed,
        )
        return installed, removed

    def restart(self, host: Host, *, stopped: bool = False) -> None:
        operations.restart_host(self.fleet, host, self.transport(host), stopped=stopped)

    def take_recovery_points(
        self, host: Host, *, seq: int, installed: Installed
    ) -> list[RecoveryPoint]:
        t = self.transport(host)
        recovery.preflight(host, t, timeout=self._quick())
        return recovery.take(self.fleet, host, t, seq=seq, installed=installed)

    def recovery_points_present(self, host: Host, points: list[RecoveryPoint]) -> str | None:
        try:
            recovery.check_points(host, self.transport(host), points, timeout=self._quick())
        except recovery.RecoveryPointUnusable as err:
            return str(err)
        return None

    def recover(
        self, host: Host, points: list[RecoveryPoint], pins: list[Pin], *, prefer_offline: bool
    ) -> recovery.Restored:
        wanted = operations.wanted_versions(pins)
        return recovery.restore(
            self.fleet, host, self.transport(host), points, wanted,
            lock=self.spec.lock if self._locked(pins) else None,
            prefer_offline=prefer_offline, releases=self.releases,
        )  # fmt: skip

    def _locked(self, pins: list[Pin]) -> bool:
        """Are all `pins` the lock's (a bookmark's prior versions may not be)?"""
        lock = self.spec.lock
        return lock is not None and all(lock.versions().get(p.name) == p.version for p in pins)

    def skill_links(self, host: Host) -> dict[str, str]:
        t = self.transport(host)
        home = facts.resolve_home(t, timeout=self._quick())
        skills = posixpath.join(home, SKILLS_DIR)
        found = t.run(["find", skills, "-maxdepth", "1", "-type", "l"], timeout=self._quick())
        links = {}
        for path in found.text().splitlines():
            target = t.run(["readlink", path], timeout=self._quick())
            if target.ok and path.startswith(skills + "/"):
                links[path] = target.text().strip()
        return links

    def restore_skill_links(self, host: Host, links: Mapping[str, str]) -> list[str]:
        t = self.transport(host)
        home = facts.resolve_home(t, timeout=self._quick())
        refused = []
        for path, target in links.items():
            why = skill_link_problem(home, path, target)
            if why is not None:
                refused.append(f"{path} -> {target}: {why}")
                continue
            t.run(["ln", "-sfn", target, path], timeout=self._quick())
        return refused


def skill_link_problem(home: str, path: str, target: str) -> str | None:
    """Why a skill link read back from the status branch (which anyone who can push may
    write) must not be made, or None: the link must be a plain name directly in the skills
    directory, and its target a normalised path inside the product's state
    (`~/.openclaw` or a profile's `~/.openclaw-<name>`)."""
    skills = posixpath.join(home, SKILLS_DIR)
    name = path[len(skills) + 1 :] if path.startswith(skills + "/") else ""
    if not SKILL_NAME.fullmatch(name) or name in (".", ".."):
        return f"not a link directly in {skills}"
    state = posixpath.join(home, ".openclaw")
    if posixpath.normpath(target) != target or not (
        target.startswith(state + "/") or target.startswith(state + "-")
    ):
        return f"target outside the product's state ({state}, {state}-<profile>)"
    return None
