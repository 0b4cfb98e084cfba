"""Maintenance windows: when a rollout may start or advance (like Argo CD's sync windows).

No windows: always open. A deny window that is active closes everything. If any allow window
is defined, a rollout moves only while one of them is active. Pure functions of the spec and
the time, so they can be read and tested alone.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from reconciler.desired.spec import Window, seconds

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _active(window: Window, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timezone))
    hour, minute = (int(x) for x in window.start.split(":"))
    length = timedelta(seconds=seconds(window.duration))
    # A window that opened on one of the last seven days may still be open now.
    for back in range(8):
        day = local.date() - timedelta(days=back)
        if DAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, time(hour, minute), tzinfo=local.tzinfo)
        if start <= local < start + length:
            return True
    return False


def is_open(windows: list[Window], now: datetime) -> bool:
    if any(w.kind == "deny" and _active(w, now) for w in windows):
        return False
    allows = [w for w in windows if w.kind == "allow"]
    return not allows or any(_active(w, now) for w in allows)


def next_open(
    windows: list[Window], now: datetime, *, horizon_minutes: int = 8 * 24 * 60
) -> datetime | None:
    """The first minute at or after `now` when the windows are open (None within 8 days)."""
    probe = now.replace(second=0, microsecond=0)
    for minute in range(horizon_minutes):
        at = probe + timedelta(minutes=minute)
        if at >= now and is_open(windows, at):
            return at
    return None
