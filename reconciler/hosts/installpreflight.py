"""The install's own preflight: refuse an install before it touches anything.

Not the plan's `preflight` step (in `reconciler.rollout.steps`, which runs before the
install): this is the check `operations.install` and recovery's restore run on a host just
before they change it. It exists apart because what it refuses, and why, is its own story:

* Refuse before touching anything, like OpenClaw's own updater: `node --version` against each
  release's `engines.node`, and each plugin's `peerDependencies.openclaw` and
  `openclaw.install.minHostVersion` against the core it will run with (from the lock, else from
  `npm view` on the host). npm would not refuse a peer mismatch: it silently nests a second copy
  of openclaw under the plugin (or, for an optional peer, leaves an invalid one). `--engine-strict`
  then covers the dependencies we did not check ourselves. And the lock's tarball integrity:
  npm checks a tarball against the registry's `dist.integrity`, never against our lock, so a
  locked release is refused unless the registry (as the host sees it) serves the locked value.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

from reconciler.desired.lock import Lock
from reconciler.desired.spec import CORE, Fleet, Host, seconds
from reconciler.desired.versions import satisfies
from reconciler.errors import CommandFailed, CommandTimeout, HostError, PermanentError
from reconciler.hosts import facts
from reconciler.hosts.compare import disk_refusal, node_refusal
from reconciler.hosts.transport import Transport
from reconciler.hosts.tree import HostTree


class ReleaseFacts(Protocol):
    """How `install_preflight` asks for a release's registry facts (facts.gather, or a cache)."""

    def __call__(
        self, transport: Transport, fact: facts.Fact[facts.ReleaseRanges], *, timeout: float
    ) -> facts.ReleaseRanges: ...


class NodeEngineUnsupported(HostError, PermanentError):
    """The host's Node does not satisfy a release's `engines.node`; nothing was changed."""


class PluginIncompatible(HostError, PermanentError):
    """A plugin's peer range or minHostVersion excludes the core; nothing was changed."""


class InsufficientDisk(HostError, PermanentError):
    """Less free space under the npm prefix than `rollout.minFreeDiskMb`."""


class IntegrityMismatch(HostError, PermanentError):
    """The registry serves a release whose tarball integrity is not the one the lock pins."""


def install_preflight(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    prefix: str,
    todo: Mapping[str, str],
    *,
    core: str | None,
    lock: Lock | None = None,
    prefer_offline: bool = False,
    releases: ReleaseFacts | None = None,
    seen: HostTree | None = None,
) -> None:
    """The install's own preflight (not the plan's `preflight` step, which runs before it):
    refuse before touching anything: a release whose engines.node excludes this host's
    Node, a plugin whose peer range or minHostVersion excludes `core` (npm would silently nest
    a second openclaw, or leave an invalid peer), a locked release the registry serves with
    another integrity than the lock's, too little free disk. The facts are read concurrently
    (one `npm view` per release, none for a rollback from the cache of a locked release);
    Node's version and the free space come from `seen` (a read of the tree just made) when it
    has them."""
    quick = seconds(fleet.ssh.command_timeout)
    known_node = seen.node_version if seen else None
    known_disk = facts.DiskFree.of(seen, prefix) if seen else None
    with ThreadPoolExecutor(len(todo) + 2, thread_name_prefix=f"preflight-{host.name}") as pool:
        node_f = known_node or pool.submit(
            facts.gather, transport, facts.node_version(), timeout=quick
        )
        disk_f = known_disk or pool.submit(
            facts.gather, transport, facts.disk_free(prefix), timeout=quick
        )
        range_fs = {
            name: pool.submit(
                _ranges, fleet, transport, name, v, lock, prefer_offline, quick, releases
            )
            for name, v in todo.items()
        }
        node = node_f if isinstance(node_f, str) else node_f.result()
        disk = disk_f if isinstance(disk_f, facts.DiskFree) else disk_f.result()
        ranges = {name: future.result() for name, future in range_fs.items()}
    for name, r in ranges.items():
        refusal = node_refusal(node, f"{name}@{todo[name]}", r.engines_node)
        if refusal is not None:
            raise NodeEngineUnsupported(
                host.name, f"{refusal}; refusing to install, nothing was changed"
            )
    for name, r in ranges.items():
        _check_core_ranges(host, f"{name}@{todo[name]}", r, core)
    refusal = disk_refusal(fleet, disk.free_mb, f"{disk.path} (holding {prefix})")
    if refusal is not None:
        raise InsufficientDisk(host.name, f"{refusal}; nothing was changed")


def _check_core_ranges(
    host: Host, what: str, ranges: facts.ReleaseRanges, core: str | None
) -> None:
    if core is None or what.startswith(f"{CORE}@"):
        return
    checks = {
        "peerDependencies.openclaw": ranges.peer_openclaw,
        "openclaw.compat.pluginApi": ranges.plugin_api,
        "openclaw.install.minHostVersion": ranges.min_host_version,
    }
    for label, wanted in checks.items():
        if wanted and not satisfies(core, wanted):
            raise PluginIncompatible(
                host.name,
                f"{what} declares {label} {wanted!r}, which excludes openclaw {core} (npm would "
                "install a second copy of openclaw or leave an invalid peer); nothing was changed",
            )


def _ranges(
    fleet: Fleet,
    transport: Transport,
    name: str,
    version: str,
    lock: Lock | None,
    prefer_offline: bool,
    timeout: float,
    releases: ReleaseFacts | None = None,
) -> facts.ReleaseRanges:
    """The release's ranges: from the lock when it has this release, else from the registry
    as the host sees it (from the npm cache first when `prefer_offline`).

    A locked release is also checked against the registry as the host sees it: npm verifies
    the tarball it downloads against the registry's `dist.integrity`, never against our lock,
    so the lock's integrity only protects the install if the registry serves that same value.
    (A rollback, `prefer_offline`, installs from the host's cache and skips the check.)"""
    locked = lock.package(name) if lock is not None else None
    fact = facts.release_ranges(fleet.openclaw.registry, name, version)
    if locked is not None and locked.version == version:
        if not prefer_offline:
            ask = releases or facts.gather
            served = ask(transport, fact, timeout=timeout).integrity
            hashes = {h.split("?", 1)[0] for h in (served or "").split()}
            if locked.integrity not in hashes:
                raise IntegrityMismatch(
                    transport.host,
                    f"{name}@{version}: the registry {fleet.openclaw.registry} serves "
                    f"dist.integrity {_short(served)}, openclaw.lock pins "
                    f"{_short(locked.integrity)}; npm would install the registry's tarball, so "
                    "refusing to install; nothing was changed",
                )
        return facts.ReleaseRanges(
            engines_node=locked.engines_node,
            peer_openclaw=locked.peer_openclaw,
            plugin_api=locked.plugin_api,
            min_host_version=locked.min_host_version,
            integrity=locked.integrity,
        )
    if not prefer_offline:
        return (releases or facts.gather)(transport, fact, timeout=timeout)
    try:
        offline = replace(fact, argv=(*fact.argv, "--prefer-offline"))
        return facts.gather(transport, offline, timeout=timeout)
    except (CommandFailed, CommandTimeout):
        # A rollback reinstalls versions this host ran before; a registry outage must not
        # block it (npm caches only the abbreviated metadata `npm view` does not read), so the
        # ranges stay unknown and npm's --engine-strict is the check.
        return facts.ReleaseRanges()


def _short(integrity: str | None) -> str:
    """An SRI hash for a message: algorithm and the first 16 characters of the digest."""
    if not integrity:
        return "(none)"
    algorithm, _, digest = integrity.partition("-")
    return f"{algorithm}-{digest[:16]}..." if digest else integrity[:24]
