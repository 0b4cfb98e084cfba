"""Who may act on a fleet: a lease recorded on the status branch.

The compare-and-swap push is the lock and the git server the coordination engine: a lease is
taken or renewed by committing `lease.json`, and a push that loses the race loses the lease.
Only acting needs the lease; observing does not, so a standby instance stays cheap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler.record.documents import Lease


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def stamp(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds")


def held_by_other(lease: Lease | None, me: str, now: datetime) -> bool:
    return lease is not None and lease.holder != me and parse_time(lease.expires_at) > now


def needs_renewal(lease: Lease | None, me: str, now: datetime, duration: float) -> bool:
    """Take it when free, renew it when less than half of it is left."""
    if lease is None or lease.holder != me:
        return True
    return parse_time(lease.expires_at) - now < timedelta(seconds=duration / 2)


def renewed(lease: Lease | None, fleet: str, me: str, now: datetime, duration: float) -> Lease:
    acquired = lease.acquired_at if lease is not None and lease.holder == me else stamp(now)
    return Lease(
        fleet=fleet,
        holder=me,
        acquired_at=acquired,
        expires_at=stamp(now + timedelta(seconds=duration)),
    )
