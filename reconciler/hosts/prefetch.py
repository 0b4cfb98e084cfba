"""Registry facts asked for ahead of time, while a host is bookmarked and drained.

Why: before an install the host asks the registry, once per release, what it serves (`npm
view`: the integrity the lock must match, engines and peer ranges). Each ask is a whole npm
process (~0.5 s), and a rolling upgrade waited for them between the drain and the install of
every host. They only read, so the bookmark step starts them in the background and the
preflight and install take the answers. An answer is used only while it is fresh (`ttl_s`),
only if it succeeded (a failure is asked again, in the foreground, where its error belongs),
and only for the host that asked: "as the host sees the registry" still holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from reconciler.errors import ReconcilerError
from reconciler.hosts import facts
from reconciler.hosts.transport import Transport

TTL_S = 120.0
WORKERS = 3

_Key = tuple[str, tuple[str, ...]]


class Prefetch:
    """Release facts per (host, command), asked in the background, answered once fresh."""

    def __init__(self, *, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._pool: ThreadPoolExecutor | None = None
        self._items: dict[_Key, tuple[float, Future[facts.ReleaseRanges]]] = {}
        self._lock = threading.Lock()

    def start(
        self,
        transport: Transport,
        wanted: Iterable[facts.Fact[facts.ReleaseRanges]],
        *,
        timeout: float,
    ) -> None:
        """Ask for each fact in the background, unless a fresh answer is on its way."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="prefetch")
            for fact in wanted:
                key = (transport.host, fact.argv)
                if self._fresh(key):
                    continue
                future = self._pool.submit(facts.gather, transport, fact, timeout=timeout)
                self._items[key] = (time.monotonic(), future)

    def __call__(
        self, transport: Transport, fact: facts.Fact[facts.ReleaseRanges], *, timeout: float
    ) -> facts.ReleaseRanges:
        """The prefetched answer if fresh and successful, else ask now (operations.ReleaseFacts)."""
        with self._lock:
            item = self._items.get((transport.host, fact.argv))
        if item is not None and time.monotonic() - item[0] < self.ttl_s:
            try:
                return item[1].result(timeout=timeout)
            except (ReconcilerError, TimeoutError):
                pass
        return facts.gather(transport, fact, timeout=timeout)

    def answered(self, host: str, *, timeout: float) -> bool:
        """Did any fresh prefetch for `host` reach the registry (waiting for those in flight)?"""
        with self._lock:
            mine = [f for (h, _), (at, f) in self._items.items() if h == host and self._young(at)]
        for future in mine:
            try:
                future.result(timeout=timeout)
                return True
            except (ReconcilerError, TimeoutError):
                continue
        return False

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._items.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fresh(self, key: _Key) -> bool:
        item = self._items.get(key)
        return item is not None and self._young(item[0]) and not _failed(item[1])

    def _young(self, at: float) -> bool:
        return time.monotonic() - at < self.ttl_s


def _failed(future: Future[facts.ReleaseRanges]) -> bool:
    return future.done() and future.exception() is not None
