"""The load balancer interface every driver implements, and its errors and counters.

The drivers import these from here; `reconciler.lb` re-exports them with the functions built on
the interface (drain, apply_weights) and `from_spec`, which picks a driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from reconciler.errors import PermanentError, TemporaryError


class LBError(TemporaryError):
    """The load balancer could not be reached or refused a command."""


class LBConfigError(PermanentError):
    """The spec's load balancer settings cannot work (unknown server, bad address)."""


@dataclass(frozen=True)
class ServerStats:
    """One server's counters as the load balancer reports them."""

    server: str
    weight: int
    sessions: int = 0
    requests: int = 0
    responses_5xx: int = 0
    status: str = "UP"


class LoadBalancer(Protocol):
    """The driver interface."""

    def weights(self) -> dict[str, int]: ...

    def set_weight(self, server: str, weight: int) -> None: ...

    def stats(self) -> dict[str, ServerStats]: ...

    def close(self) -> None: ...
