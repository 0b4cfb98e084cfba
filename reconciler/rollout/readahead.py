"""Reads of hosts started early, taken when a step comes to them; and the last observations.

Why: most of a rolling upgrade is waiting on hosts. While one host restarts and becomes ready,
the reconciler already reads what the next steps will ask: the next host's readiness (its skip
check and its bookmark rest on it) and a glance at the peers the ramp gate after this verify
rechecks. Such a read only reads, and nothing depends on it having run: a step takes what was
started if it finished recently enough, and reads anew otherwise (where a failure belongs to the
step). The registry reads of an install are started the same way, but the agent keeps those
(see `reconciler.hosts.prefetch`): its install is what takes them.

One `ReadAhead` serves the hosts of one spec commit across passes (the engine keeps one per
agent): a pass starts reads, a later pass takes them. It also remembers which readiness this
process observed last for each host and when (`observed_within`), so a gate can take a record
made a moment ago as it is. The executor decides what to read ahead and when to take it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from reconciler.errors import ReconcilerError
from reconciler.record.documents import Readiness

if TYPE_CHECKING:
    from reconciler.hosts.agent import InstalledAndLive

T = TypeVar("T")
WORKERS = 4
WAIT_S = 120.0
"""How long taking a read still in flight waits for it, at most (then it is read anew)."""


class ReadAhead:
    """The reads started early, per host, and the last observation of each host."""

    def __init__(
        self, *, wait_s: float = WAIT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.wait_s = wait_s
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._observations: dict[str, Future[tuple[Readiness, float]]] = {}
        self._glances: dict[str, Future[tuple[InstalledAndLive, float]]] = {}
        self._observed: dict[str, tuple[str, float]] = {}  # host -> (readiness_sha256, when)

    def start_observing(self, host: str, observe: Callable[[], Readiness]) -> None:
        """Start `observe()` of `host` in the background, for a step to come (a hint)."""
        self._observations[host] = self._start(observe)

    def take_observation(self, host: str, *, within_s: float) -> Readiness | None:
        """The observation `start_observing` started, once: waited for if still in flight;
        None when there is none, it failed, or it finished more than `within_s` ago (an older
        one may hide a doctor, health or weight that changed since)."""
        return self._take(self._observations.pop(host, None), within_s)

    def start_glance(self, host: str, glance: Callable[[], InstalledAndLive]) -> None:
        """Start `glance()` of `host` in the background, for a step to come (a hint)."""
        self._glances[host] = self._start(glance)

    def take_glance(self, host: str, *, within_s: float) -> InstalledAndLive | None:
        """The glance `start_glance` started, once, on the terms of `take_observation`."""
        return self._take(self._glances.pop(host, None), within_s)

    def note(self, doc: Readiness) -> Readiness:
        """Remember that this process just finished observing `doc` (returned as is)."""
        self._observed[doc.host] = (doc.readiness_sha256, self.clock())
        return doc

    def observed_within(self, doc: Readiness, seconds_: float) -> bool:
        """Did this process finish observing exactly `doc` at most `seconds_` ago?"""
        sha, finished = self._observed.get(doc.host, ("", float("-inf")))
        return sha == doc.readiness_sha256 and self.clock() - finished <= seconds_

    def close(self) -> None:
        """Stop what was started and not taken (a read in flight ends when its host's
        connection is closed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def _start(self, read: Callable[[], T]) -> Future[tuple[T, float]]:
        def timed() -> tuple[T, float]:
            return read(), self.clock()

        if self._pool is None:
            self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="ahead")
        return self._pool.submit(timed)

    def _take(self, future: Future[tuple[T, float]] | None, within_s: float) -> T | None:
        """What a read started early answered, if it finished at most `within_s` before now;
        None when there was none or it failed (asked again where its error belongs)."""
        if future is None:
            return None
        try:
            got, finished = future.result(timeout=self.wait_s)
        except (ReconcilerError, TimeoutError):
            return None
        return got if self.clock() - finished <= within_s else None
