"""Observed against desired: is this host where the spec wants it?

One comparison of an observed install (`Installed`: the core and the plugins as the product
runs them, and what npm's tree shows besides) with the exact versions wanted (the lock's, a
step's pins, or a bookmark's). Every place that asks the question uses it: the install's own
verification, the readiness verdict, the gates (ramp, converged, drift) and the executor's
checks that an install or a restore converged and whether a restore has anything to do.

A difference is one of:

* a wanted package at another version, or not installed;
* an `@openclaw/*` plugin installed that nothing pins (the install removes it; unpinned
  packages outside that scope, npm itself or corepack, are not ours and do not count);
* a fault of the tree, whatever the versions: a second copy of openclaw, a problem npm reports,
  an npm copy of a plugin beside the core (which the product never loads).

With no versions wanted (no lock, or a host restored to the versions it ran before) only the
faults count.

And what a host must have for the release it is to run: a Node in the release's
`engines.node` (asked by the plan's review warnings, the plan's `preflight` step, the
install's own preflight and the readiness verdict), and `rollout.minFreeDiskMb` free under
the npm prefix (asked by both preflights).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from reconciler.desired.lock import Lock
from reconciler.desired.spec import CORE, Fleet
from reconciler.desired.versions import satisfies
from reconciler.record.documents import Installed

STRAY = "npm copy beside the core, which the product does not load"


@dataclass(frozen=True)
class Differences:
    """How an observed install differs from the wanted one, each as a sentence; false when it
    does not. Iterating gives the versions, then the faults."""

    versions: tuple[str, ...] = ()
    """Wanted packages at another version or not installed, `@openclaw/*` plugins not pinned."""
    faults: tuple[str, ...] = ()
    """Second copies of openclaw, npm's problems, npm copies beside the core."""

    def __iter__(self) -> Iterator[str]:
        return iter((*self.versions, *self.faults))

    def __bool__(self) -> bool:
        return bool(self.versions or self.faults)


def differences(have: Installed, wanted: Mapping[str, str] | None) -> Differences:
    """How `have` differs from the exact versions `wanted` (npm name -> version); `None`: no
    versions are wanted, only the tree's faults count."""
    faults = (
        *(f"second copy of openclaw at {d}" for d in have.duplicates),
        *(f"npm reports: {p}" for p in have.problems),
        *(f"{STRAY}: {s}" for s in have.strays),
    )
    if wanted is None:
        return Differences(faults=faults)
    current = {CORE: have.core, **have.plugins}
    versions = [
        f"{name} is {current.get(name) or 'not installed'}, wanted {version}"
        for name, version in wanted.items()
        if current.get(name) != version
    ]
    versions += [
        f"{name}@{version} is installed but not pinned"
        for name, version in sorted(have.plugins.items())
        if name.startswith("@openclaw/") and name not in wanted
    ]
    return Differences(tuple(versions), faults)


def node_refusal(node: str | None, release: str, engines: str | None) -> str | None:
    """Why a host on Node `node` cannot run `release` (`name@version`), whose `engines.node`
    is `engines`; None when it can, or when either is unknown."""
    if node is None or not engines or satisfies(node, engines):
        return None
    return f"node {node} does not satisfy engines.node {engines!r} of {release}"


def core_node_refusal(node: str | None, lock: Lock | None) -> str | None:
    """`node_refusal` for the lock's core."""
    core = lock.package(CORE) if lock is not None else None
    return node_refusal(node, f"{CORE}@{core.version}", core.engines_node) if core else None


def disk_refusal(fleet: Fleet, free_mb: int, where: str = "") -> str | None:
    """Why `free_mb` MB free (on `where`) is too little to install; None when it is enough."""
    need = fleet.rollout.min_free_disk_mb
    if free_mb >= need:
        return None
    return f"{free_mb} MB free{f' on {where}' if where else ''}, rollout.minFreeDiskMb is {need}"
