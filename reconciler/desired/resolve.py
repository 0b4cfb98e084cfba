"""Resolve a fleet's pins against the npm registry into an `openclaw.lock`.

The spec pins exact versions, but a pin alone does not say whether the release exists, what
bytes it is, or whether the plugins accept that core. npm will not tell us at install time
either: a plugin whose `peerDependencies.openclaw` excludes the installed core silently gets a
nested second copy of openclaw. So the lock is where incompatibility is caught, before any host
is touched: every pin must exist, carry a strong tarball integrity, and every plugin's
`peerDependencies.openclaw`, `openclaw.compat.pluginApi` and `openclaw.install.minHostVersion`
must accept the pinned core.

Every problem across all packages is collected and reported at once (one per line), so an
operator fixes a PR in one round instead of one error per CI run. The result depends only on
the pins and the registry's metadata, never on timing or the registry's host name, so locking
twice gives identical bytes.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Mapping
from typing import Any

from reconciler.desired import versions
from reconciler.desired.lock import Lock, LockedPackage, build_lock
from reconciler.desired.npmregistry import (
    PackageNotFound,
    Packument,
    fetch_packuments,
    redact,
    version_manifest,
)
from reconciler.desired.spec import CORE, Fleet
from reconciler.errors import LockError

NEARBY = 5
_SRI = re.compile(r"^(sha256|sha384|sha512)-[A-Za-z0-9+/]+={0,2}$")
_STRENGTH = {"sha512": 3, "sha384": 2, "sha256": 1}
# Where each recorded range lives in a package.json, and the LockedPackage field it fills.
_RANGES = {
    "engines_node": ("engines", "node"),
    "peer_openclaw": ("peerDependencies", "openclaw"),
    "plugin_api": ("openclaw", "compat", "pluginApi"),
    "min_host_version": ("openclaw", "install", "minHostVersion"),
}
# The ranges that must accept the pinned core for a plugin to be installable with it (the
# product decides install compatibility by compat.pluginApi and minHostVersion).
_HOST_RANGES = ("peer_openclaw", "plugin_api", "min_host_version")


class UnresolvablePins(LockError):
    """Every reason the pins cannot be locked, one per line."""

    def __init__(self, fleet: str, registry: str, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"cannot lock fleet {fleet!r} against {redact(registry)} ({count}):\n{lines}"
        )


def resolve_lock(fleet: Fleet, *, registry: str | None = None, timeout: float = 30.0) -> Lock:
    """Resolve every pin (core first) and check plugin/core compatibility.

    `registry` overrides the spec's registry URL (which is not recorded in the lock). Raises
    RegistryError when the registry cannot be reached, UnresolvablePins (a LockError) listing
    every problem found otherwise.
    """
    url = registry or fleet.openclaw.registry
    pins = _ordered(fleet.packages())
    documents = fetch_packuments(url, pins, timeout=timeout)
    packages: list[LockedPackage] = []
    problems: list[str] = []
    for name, version in pins.items():
        package, found = _lock_package(name, version, documents[name])
        problems += found
        if package is not None:
            packages.append(package)
            problems += _host_problems(package, fleet.openclaw.version)
    if problems:
        raise UnresolvablePins(fleet.name, url, problems)
    return build_lock(fleet, packages)


def _ordered(pins: Mapping[str, str]) -> dict[str, str]:
    """Core first, then plugins by name: the lock's order, so messages are stable too."""
    return dict(sorted(pins.items(), key=lambda item: (item[0] != CORE, item[0])))


# --- one package -----------------------------------------------------------------------------


def _lock_package(
    name: str, version: str, document: Packument | PackageNotFound
) -> tuple[LockedPackage | None, list[str]]:
    if isinstance(document, PackageNotFound):
        return None, [f"{name}@{version}: {name} is not published in the registry"]
    manifest = version_manifest(document, version)
    if manifest is None:
        return None, [_missing_version(name, version, document)]
    where = f"{name}@{version}"
    problems: list[str] = []
    integrity = _integrity(manifest.get("dist"))
    if integrity is None:
        problems.append(f"{where}: {_no_integrity(manifest.get('dist'))}")
    ranges: dict[str, str | None] = {}
    for field, path in _RANGES.items():
        ranges[field], problem = _range(manifest, path)
        if problem:
            problems.append(f"{where}: {problem}")
    if problems or integrity is None:
        return None, problems
    return LockedPackage(name=name, version=version, integrity=integrity, **ranges), []


def _missing_version(name: str, version: str, document: Packument) -> str:
    published = _published(document)
    if not published:
        return f"{name}@{version}: version not found ({name} has no published versions)"
    nearby = ", ".join(_nearby(published, version))
    tags = document.get("dist-tags")
    latest = tags.get("latest") if isinstance(tags, Mapping) else None
    hint = f"; latest is {latest}" if isinstance(latest, str) else ""
    return f"{name}@{version}: version not found (nearest published: {nearby}{hint})"


def _published(document: Packument) -> list[str]:
    """The valid semver versions in the packument, ascending."""
    found = [v for v in document.get("versions") or {} if versions.is_exact(v)]
    return sorted(found, key=functools.cmp_to_key(versions.compare))


def _nearby(published: list[str], version: str) -> list[str]:
    """The `NEARBY` published versions closest to `version` in semver order."""
    key = functools.cmp_to_key(versions.compare)
    at = bisect.bisect_left([key(v) for v in published], key(version))
    start = max(0, min(at - NEARBY // 2, len(published) - NEARBY))
    return published[start : start + NEARBY]


# --- integrity -------------------------------------------------------------------------------


def _integrity(dist: object) -> str | None:
    """The strongest SRI hash in `dist.integrity` (sha512 preferred), or None."""
    if not isinstance(dist, Mapping) or not isinstance(dist.get("integrity"), str):
        return None
    hashes = [h.split("?", 1)[0] for h in dist["integrity"].split()]
    strong = [h for h in hashes if _SRI.match(h) and h.split("-", 1)[0] in _STRENGTH]
    return max(strong, key=lambda h: _STRENGTH[h.split("-", 1)[0]], default=None)


def _no_integrity(dist: object) -> str:
    if isinstance(dist, Mapping) and isinstance(dist.get("shasum"), str):
        return (
            "dist.integrity is missing; the registry offers only a sha1 shasum, "
            "too weak to pin (the lock needs sha256, sha384 or sha512)"
        )
    return "dist.integrity is missing: the tarball cannot be pinned"


# --- ranges ----------------------------------------------------------------------------------


def _range(manifest: Mapping[str, Any], path: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(the range at `path` or None when absent, a problem when it is not a valid npm range)."""
    value: Any = manifest
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None, None
        value = value[key]
    dotted = ".".join(path)
    if not isinstance(value, str):
        return None, f"{dotted} is {value!r} in the registry metadata, not a range string"
    if not versions.valid_range(value):
        return None, f"{dotted} {value!r} in the registry metadata is not a valid npm range"
    return value, None


def _host_problems(plugin: LockedPackage, core: str) -> list[str]:
    """A plugin range that excludes the pinned core, naming both versions."""
    if plugin.name == CORE:
        return []
    problems = []
    for field in _HOST_RANGES:
        range_ = getattr(plugin, field)
        if range_ is not None and not versions.satisfies(core, range_):
            source = ".".join(_RANGES[field])
            problems.append(
                f"{plugin.name}@{plugin.version} requires {CORE} {range_} ({source}) "
                f"but the spec pins {CORE} {core}"
            )
    return problems
