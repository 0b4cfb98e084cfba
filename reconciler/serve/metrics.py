"""Prometheus metrics of the daemon, in their own registry.

An operator who runs and forgets the reconciler needs to be told when to stop forgetting: a fleet
stuck Paused on a gate, a rollout that Failed, passes that stopped happening, hosts rolled back.
Everything here is derived from what a pass returned and the status branch it left behind, so
the metrics can never tell a different story than `git log reconciler/status`.

The registry is private (not prometheus_client's global one): two daemons in one test process,
or a test and a daemon, never share or collide on series.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from reconciler.record.documents import HostPhase, RolloutPhase

if TYPE_CHECKING:
    from reconciler.record.status import FleetStatus
    from reconciler.rollout.engine import PassResult

ROLLOUT_PHASES: tuple[str, ...] = get_args(RolloutPhase)
HOST_PHASES: tuple[str, ...] = (*get_args(HostPhase), "Unknown")
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
GATE_HELD = ": weight held: "
"""How the engine words a pass on which a gate refused to widen traffic (holds.ramp_gates)."""


def _trailers(message: str) -> dict[str, str]:
    body = message.partition("\n\n")[2]
    return dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)


class Metrics:
    """The reconciler's series; `observe_pass` after every pass is all the daemon calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._build()

    def _build(self) -> None:
        r = self.registry
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Wall time of one reconcile pass.",
            ["fleet"],
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.passes = Counter(
            "reconciler_passes", "Reconcile passes by result.", ["fleet", "result"], registry=r
        )
        self.hosts = Gauge(
            "reconciler_hosts",
            "Hosts of the current rollout by phase.",
            ["fleet", "phase"],
            registry=r,
        )
        self.fleet_phase = Gauge(
            "reconciler_fleet_phase",
            "1 for the fleet's current phase.",
            ["fleet", "phase"],
            registry=r,
        )
        self.applied = Info(
            "reconciler_last_applied_spec_commit",
            "The spec commit of the last rollout that completed.",
            ["fleet"],
            registry=r,
        )
        self.gate_refusals = Counter(
            "reconciler_gate_refusals",
            "Passes on which a gate refused to widen traffic.",
            ["fleet"],
            registry=r,
        )
        self.rollbacks = Counter(
            "reconciler_rollbacks", "Hosts restored from their bookmark.", ["fleet"], registry=r
        )
        self.last_pass = Gauge(
            "reconciler_last_pass_timestamp_seconds",
            "Unix time of the last finished pass (alert when it stops moving).",
            ["fleet"],
            registry=r,
        )
        self.webhooks = Counter(
            "reconciler_webhooks",
            "Git webhook deliveries by provider and HTTP status answered.",
            ["provider", "status"],
            registry=r,
        )

    # --- what the daemon calls ---------------------------------------------------------------

    def observe_pass(
        self,
        fleet: str,
        result: PassResult,
        duration: float,
        status: FleetStatus | None,
    ) -> None:
        """Record one finished pass and the status it left (None when it could not be read)."""
        with self._lock:
            self.pass_duration.labels(fleet).observe(max(duration, 0.0))
            self.passes.labels(fleet, result.phase).inc()
            self.last_pass.labels(fleet).set(time.time())
            if result.phase in ROLLOUT_PHASES:  # not for a pass that failed ("Error")
                self._set_phase(fleet, result.phase)
            refusals = self.gate_refusals.labels(fleet)  # present at 0 before the first
            self.rollbacks.labels(fleet)
            if result.phase == "Paused" and GATE_HELD in result.message:
                refusals.inc()
            if status is not None:
                self._from_status(fleet, result, status)

    def observe_error(self, fleet: str, duration: float, result: str = "Error") -> None:
        """A pass that raised (TemporaryError, PermanentError, ...): counted, not phased."""
        with self._lock:
            self.pass_duration.labels(fleet).observe(max(duration, 0.0))
            self.passes.labels(fleet, result).inc()
            self.last_pass.labels(fleet).set(time.time())

    def observe_webhook(self, provider: str, status: int) -> None:
        self.webhooks.labels(provider or "unknown", str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # --- helpers ---------------------------------------------------------------------------

    def _set_phase(self, fleet: str, phase: str) -> None:
        for name in ROLLOUT_PHASES:
            self.fleet_phase.labels(fleet, name).set(1 if name == phase else 0)

    def _from_status(self, fleet: str, result: PassResult, status: FleetStatus) -> None:
        record = status.rollout
        counts = dict.fromkeys(HOST_PHASES, 0)
        hosts = record.hosts if record else {}
        for progress in hosts.values():
            counts[progress.phase] = counts.get(progress.phase, 0) + 1
        counts["Unknown"] += len([h for h in status.nodes if h not in hosts])
        for phase, n in counts.items():
            self.hosts.labels(fleet, phase).set(n)
        if record is not None and record.applied_commit:
            self.applied.labels(fleet).info({"commit": record.applied_commit})
        if self._wrote_rollback(result, status):
            self.rollbacks.labels(fleet).inc()

    @staticmethod
    def _wrote_rollback(result: PassResult, status: FleetStatus) -> bool:
        """Whether this pass's own status commit is a restore (`Phase: RolledBack`)."""
        commit = status.commit
        if not result.commit or commit is None or str(commit.id) != result.commit:
            return False
        return _trailers(commit.message).get("Phase") == "RolledBack"
