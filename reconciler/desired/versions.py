"""OpenClaw versions and npm ranges.

OpenClaw uses calendar-style versions (`2026.6.35`, corrections `2026.5.3-1`, prereleases
`2026.7.1-beta.6`) that are compared as semver, never as dates. Ranges (peer dependencies,
`engines.node`) use npm's range grammar, so we delegate to a maintained port of node-semver
instead of parsing them by hand.
"""

from __future__ import annotations

import functools
import re

import nodesemver

OPENCLAW_VERSION = (
    r"^[0-9]{4}\.(0|[1-9][0-9]?)\.(0|[1-9][0-9]{0,2})(-(0|[1-9][0-9]*))?(-beta\.(0|[1-9][0-9]*))?$"
)
EXACT_SEMVER = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
_EXACT = re.compile(EXACT_SEMVER)
_NODE_VERSION = re.compile(r"^v?([0-9]+\.[0-9]+\.[0-9]+)")
_OPENCLAW_BANNER = re.compile(r"([0-9]{4}\.[0-9]{1,2}\.[0-9]{1,3}(?:-[0-9A-Za-z.-]+)?)")


def is_exact(version: str) -> bool:
    """True for one exact semver version (no range, no tag)."""
    return bool(_EXACT.match(version))


def compare(a: str, b: str) -> int:
    """-1, 0 or 1, comparing two exact versions as semver."""
    return int(nodesemver.compare(a, b, False))


@functools.lru_cache(maxsize=1024)
def valid_range(range_: str) -> bool:
    """True when npm would accept `range_` as a range."""
    return nodesemver.valid_range(range_, False) is not None


@functools.lru_cache(maxsize=4096)
def satisfies(version: str, range_: str) -> bool:
    """npm's `semver.satisfies(version, range, {includePrerelease: true})`.

    Prereleases are included because OpenClaw ships `-beta.N` and correction builds that an
    operator may pin on purpose; a peer range of `>=2026.7.0` should accept `2026.7.1-beta.6`.
    """
    return bool(nodesemver.satisfies(version, range_, False, True))


def parse_node_version(text: str) -> str | None:
    """`v22.22.3` (the output of `node --version`) -> `22.22.3`; None when unreadable."""
    match = _NODE_VERSION.match(text.strip())
    return match.group(1) if match else None


def parse_openclaw_banner(text: str) -> str | None:
    """`OpenClaw 2026.9.6 (eb377ac)` -> `2026.9.6`, leniently (older builds print differently)."""
    match = _OPENCLAW_BANNER.search(text)
    return match.group(1) if match else None
