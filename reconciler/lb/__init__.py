"""Load balancer drivers: where traffic weights live.

One small interface (read weights, set a weight, read per-server counters) with a driver per
kind of load balancer. Drain, snapshot and restore are built on that interface once, here, so
every driver gets them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from reconciler.desired.spec import LoadBalancer as LoadBalancerSpec
from reconciler.desired.spec import seconds
from reconciler.lb.base import LBConfigError, LBError, LoadBalancer, ServerStats
from reconciler.lb.command import CommandLB
from reconciler.lb.file import WeightsFile
from reconciler.lb.haproxy import HAProxy

__all__ = [
    "LBConfigError",
    "LBError",
    "LoadBalancer",
    "ServerStats",
    "apply_weights",
    "drain",
    "from_spec",
]


def apply_weights(lb: LoadBalancer, weights: Mapping[str, int]) -> None:
    """Set several servers' weights; checks each took effect."""
    for server, weight in weights.items():
        lb.set_weight(server, weight)
    actual = lb.weights()
    wrong = {s: actual.get(s) for s, w in weights.items() if actual.get(s) != w}
    if wrong:
        raise LBError(f"weights did not take effect: {wrong} (wanted {dict(weights)})")


def drain(
    lb: LoadBalancer,
    servers: Iterable[str],
    *,
    timeout: float,
    poll: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Weight 0 on `servers`, then wait until their sessions reach 0. False on timeout."""
    names = list(servers)
    apply_weights(lb, dict.fromkeys(names, 0))
    deadline = clock() + timeout
    while True:
        stats = lb.stats()
        busy = [s for s in names if s in stats and stats[s].sessions > 0]
        if not busy:
            return True
        if clock() >= deadline:
            return False
        sleep(poll)


def from_spec(spec: LoadBalancerSpec, *, base_dir: Path | None = None) -> LoadBalancer:
    """The driver the spec names (a relative file address is relative to `base_dir`)."""
    timeout = seconds(spec.timeout)
    if spec.driver == "file" and spec.address:
        path = Path(spec.address).expanduser()
        return WeightsFile(path if path.is_absolute() or base_dir is None else base_dir / path)
    if spec.driver == "haproxy" and spec.address and spec.backend:
        return HAProxy(spec.address, spec.backend, timeout=timeout)
    if spec.driver == "command" and spec.commands:
        return CommandLB(spec.commands, timeout=timeout, pass_env=spec.pass_env)
    raise LBConfigError(f"load balancer driver {spec.driver!r} is missing its settings")
