"""The fleet page's timeline: each host's weight over time, one lane per host, as SVG geometry.

Pure arithmetic on (time, weight) points and marks; the template draws what this returns. One
lane per host rather than every line on one axis, because a fleet ramps hosts to the same
weights: on a shared axis their lines and marks would lie on top of each other.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

LABEL_W = 110
LANE_H = 64
LANE_GAP = 22
AXIS_H = 28
TICKS = 6
MARK_GAP = 11.0


class MarkLike(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def commit(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def weight(self) -> int | None: ...


@dataclass(frozen=True)
class Lane:
    host: str
    index: int
    top: float
    path: str
    """An SVG path of the weight as a step line, from the first observation to the end."""
    area: str
    """The same path closed along the lane's floor, for a filled area."""
    last_weight: int
    changes: int


@dataclass(frozen=True)
class PlacedMark:
    host: str
    x: float
    y: float
    kind: str
    commit: str
    subject: str
    at: datetime


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lanes: tuple[Lane, ...]
    marks: tuple[PlacedMark, ...]
    ticks: tuple[tuple[float, str], ...]
    start: datetime
    end: datetime


def chart(
    series: Mapping[str, Sequence[tuple[datetime, int]]],
    marks: Sequence[MarkLike],
    *,
    width: int = 960,
    end: datetime | None = None,
) -> Chart | None:
    """The geometry of `series` (host -> (time, weight), oldest first) and `marks`; None when
    there is nothing to draw."""
    times = [t for points in series.values() for t, _ in points] + [m.at for m in marks]
    if not times:
        return None
    start, stop = min(times), max([*times, end] if end else times)
    span = max((stop - start).total_seconds(), 60.0)
    stop = start + timedelta(seconds=span * 1.03)  # room for the last mark

    def x(t: datetime) -> float:
        return LABEL_W + (width - LABEL_W - 12) * (t - start).total_seconds() / (span * 1.03)

    top_weight = max([w for points in series.values() for _, w in points] + [1])
    hosts = list(dict.fromkeys([*series, *(m.host for m in marks)]))
    lanes, placed = [], []
    for i, host in enumerate(hosts):
        top = AXIS_H + i * (LANE_H + LANE_GAP)

        def y(w: int, top: float = top) -> float:
            return top + LANE_H - (LANE_H - 6) * w / top_weight

        points = series.get(host, ())
        lanes.append(_lane(host, i, top, points, x, y, x(stop)))
        placed += _placed([m for m in marks if m.host == host], points, x, y, width - 12)
    height = AXIS_H + len(hosts) * (LANE_H + LANE_GAP)
    return Chart(width, height, tuple(lanes), tuple(placed), _ticks(start, stop, x), start, stop)


def _placed(
    marks: Sequence[MarkLike], points: Sequence[tuple[datetime, int]], x: _Scale, y: _Weight,
    right: float,
) -> list[PlacedMark]:  # fmt: skip
    """Each mark on its host's line; marks of the same second (commit times are whole
    seconds) are spread sideways rather than drawn over each other, and a spread that would
    run past the chart's right edge is moved back left."""
    placed: list[PlacedMark] = []
    for m in marks:
        weight = m.weight
        if weight is None:
            weight = next((w for t, w in reversed(points) if t <= m.at), 0)
        at_x = x(m.at)
        if placed and at_x - placed[-1].x < MARK_GAP:
            at_x = placed[-1].x + MARK_GAP
        placed.append(PlacedMark(m.host, at_x, y(weight), m.kind, m.commit, m.subject, m.at))
    limit = right
    for i in reversed(range(len(placed))):
        if placed[i].x > limit:
            placed[i] = dataclasses.replace(placed[i], x=limit)
        limit = placed[i].x - MARK_GAP
    return placed


def _lane(
    host: str, index: int, top: float, points: Sequence[tuple[datetime, int]],
    x: _Scale, y: _Weight, right: float,
) -> Lane:  # fmt: skip
    if not points:
        return Lane(host, index, top, "", "", 0, 0)
    floor = top + LANE_H
    parts = [f"M{x(points[0][0]):.1f},{y(points[0][1]):.1f}"]
    for (_, before), (t, w) in itertools.pairwise(points):
        parts.append(f"H{x(t):.1f}V{y(w):.1f}" if w != before else f"H{x(t):.1f}")
    parts.append(f"H{right:.1f}")
    path = "".join(parts)
    area = f"{path}V{floor:.1f}H{x(points[0][0]):.1f}Z"
    changes = sum(1 for (_, a), (_, b) in itertools.pairwise(points) if a != b)
    return Lane(host, index, top, path, area, points[-1][1], changes)


class _Scale(Protocol):
    def __call__(self, t: datetime) -> float: ...


class _Weight(Protocol):
    def __call__(self, w: int) -> float: ...


def _ticks(start: datetime, stop: datetime, x: _Scale) -> tuple[tuple[float, str], ...]:
    span = stop - start
    fmt = (
        "%m-%d %H:%M"
        if span > timedelta(days=1)
        else "%H:%M:%S"
        if span < timedelta(minutes=10)
        else "%H:%M"
    )
    step = span / (TICKS - 1)
    return tuple((x(start + step * i), (start + step * i).strftime(fmt)) for i in range(TICKS))
