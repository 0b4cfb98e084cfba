"""Canary analysis: did the upgraded host answer well enough during the soak?

Like Flagger and Argo Rollouts, but from the load balancer we already drive: the counters of
the host's LB servers at the start and at the end of a soak window give the requests it served
and the 5xx it returned; their ratio is compared with the spec's `maxFiveXxRatio`, and a window
with fewer than `minRequests` requests (or none at all) proves nothing either way
("inconclusive"); the spec's `analysis.inconclusive` says what that does.

Pure functions over `ServerStats`, so the verdict is easy to test and to explain. Counters go
backwards when the LB restarts (HAProxy's counters live in its process); a negative delta is
never reported: the server's counters since the reset are used instead, and the reason says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.lb import ServerStats

Counters = ServerStats | Mapping[str, ServerStats]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one soak window's analysis."""

    ok: bool
    requests: int
    errors_5xx: int
    ratio: float
    reason: str
    inconclusive: bool = False
    resets: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Delta:
    requests: int
    errors: int
    reset: bool


def analyse(
    before: Counters,
    after: Counters,
    *,
    max_5xx_ratio: float,
    min_requests: int = 0,
    fail_on_inconclusive: bool = False,
    restarted: bool = False,
) -> Verdict:
    """The verdict for the window between two readings of one host's LB servers.

    A reset shows only when a counter went backwards; a restart after which the server served
    as much as before is invisible in the counters, so a caller that knows the LB restarted
    (HAProxy's `show info` Pid changed) passes `restarted=True`: every server counts from zero.
    """
    start, end = _by_server(before), _by_server(after)
    if restarted:
        start = {name: ServerStats(name, weight=s.weight) for name, s in start.items()}
    deltas = {name: _delta(start.get(name), stats, restarted) for name, stats in end.items()}
    requests = sum(d.requests for d in deltas.values())
    errors = sum(d.errors for d in deltas.values())
    resets = tuple(sorted(name for name, d in deltas.items() if d.reset))
    ratio = errors / requests if requests else 0.0
    note = _reset_note(resets) + _missing_note(start, end)
    needed = max(min_requests, 1)  # a window without a request judges nothing
    if requests < needed:
        reason = f"inconclusive: {requests} requests in the window, fewer than {needed}"
        return Verdict(
            not fail_on_inconclusive, requests, errors, ratio, reason + note, True, resets
        )
    summary = f"{errors} 5xx in {requests} requests ({ratio:.1%}"
    if ratio > max_5xx_ratio:
        reason = f"{summary}, above the maximum {max_5xx_ratio:.1%})"
        return Verdict(False, requests, errors, ratio, reason + note, False, resets)
    reason = f"{summary}, within the maximum {max_5xx_ratio:.1%})"
    return Verdict(True, requests, errors, ratio, reason + note, False, resets)


def _by_server(counters: Counters) -> dict[str, ServerStats]:
    if isinstance(counters, ServerStats):
        return {counters.server: counters}
    return dict(counters)


def _delta(before: ServerStats | None, after: ServerStats, restarted: bool) -> _Delta:
    """Counts in the window; a counter that went backwards was reset: count from zero."""
    if before is None:
        return _Delta(after.requests, after.responses_5xx, reset=False)
    if restarted:
        return _Delta(after.requests, after.responses_5xx, reset=True)
    requests = after.requests - before.requests
    errors = after.responses_5xx - before.responses_5xx
    if requests < 0 or errors < 0:
        return _Delta(after.requests, after.responses_5xx, reset=True)
    return _Delta(requests, errors, reset=False)


def _reset_note(resets: Iterable[str]) -> str:
    names = ", ".join(resets)
    if not names:
        return ""
    return f"; counters of {names} reset during the window (LB restarted?): counted from zero"


def _missing_note(start: Mapping[str, ServerStats], end: Mapping[str, ServerStats]) -> str:
    new = sorted(set(end) - set(start))
    gone = sorted(set(start) - set(end))
    note = f"; no reading at the start for {', '.join(new)}: counted from zero" if new else ""
    return note + (f"; no reading at the end for {', '.join(gone)}" if gone else "")


def host_counters(
    stats: Mapping[str, ServerStats], servers: Iterable[str]
) -> dict[str, ServerStats]:
    """The readings of one host's servers (a multi-profile host has several LB servers)."""
    wanted = set(servers)
    return {name: s for name, s in stats.items() if name in wanted}
