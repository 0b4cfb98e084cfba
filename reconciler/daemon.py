"""Running the engine: passes until settled (`reconcile --once`), with a live progress view.

Errors follow the retry policy of their type: a TemporaryError (an unreachable host, a lost
compare-and-swap race) is retried after its delay with exponential backoff; a PermanentError
stops the run and is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from reconciler.engine import Engine, PassResult
from reconciler.errors import TemporaryError
from reconciler.gitstore import GitStore
from reconciler.notify import Broadcaster, Fanout, Notifier, Recorder, sinks_from_spec
from reconciler.spec import Fleet
from reconciler.validate import LoadedSpec

log = logging.getLogger(__name__)
ACTIVE = ("Progressing",)


def instance_name(cache: str) -> str:
    """Stable across restarts of the same reconciler (same machine, same cache), so a
    reconciler that crashed recognises its own lease instead of waiting for it to expire."""
    digest = hashlib.sha256(str(Path(cache).resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}:{digest}"


class SpecNotifier:
    """Delivers events to the sinks named by the spec currently being reconciled."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.broadcaster: Broadcaster | None = None

    def configure(self, spec: LoadedSpec) -> None:
        if self.broadcaster is None:
            self.broadcaster = Broadcaster(sinks_from_spec(spec.fleet.notifications))

    def notify(self, event: object) -> None:  # Event; typed loosely to fit the Protocol
        from reconciler.notify import Event

        assert isinstance(event, Event)
        targets: list[Notifier] = [self.recorder]
        if self.broadcaster is not None:
            targets.append(self.broadcaster)
        Fanout(targets).notify(event)

    def flush(self, timeout: float = 30.0) -> None:
        if self.broadcaster is not None:
            self.broadcaster.flush(timeout)


def build_engine(args: argparse.Namespace, store: GitStore) -> Engine:
    from reconciler.agent import FleetAgent
    from reconciler.lb import LoadBalancer, from_spec

    notifier = SpecNotifier()
    cache = store.repo.path.rstrip("/").rsplit("/", 1)[0]
    agents: dict[str, FleetAgent] = {}

    def agent_for(spec: LoadedSpec, commit: str) -> FleetAgent:
        notifier.configure(spec)
        if commit not in agents:
            for old in agents.values():
                old.close()
            agents.clear()
            key = getattr(args, "ssh_key", None)
            agents[commit] = FleetAgent.for_spec(spec, cache_dir=cache, key_file=key)
            agents[commit].spec_commit = commit
        return agents[commit]

    def lb_for(fleet: Fleet) -> LoadBalancer:
        return from_spec(fleet.load_balancer)

    return Engine(
        store=store,
        fleet_name=args.fleet,
        agent_for=agent_for,
        lb_for=lb_for,
        notifier=notifier,
        instance=getattr(args, "instance", None) or instance_name(cache),
        lease_s=getattr(args, "lease", 120.0),
    )


def run_until_settled(
    engine: Engine,
    *,
    progress: bool = True,
    max_passes: int = 10_000,
    sleep: Callable[[float], None] = time.sleep,
    max_backoff: float = 60.0,
    max_failures: int = 8,
) -> PassResult:
    """Pass after pass until the fleet is settled (Complete, Failed, Invalid, Idle) or holds."""
    console = Console(stderr=True, highlight=False)
    failures = 0
    result = PassResult("Idle", "not started", None)
    for _ in range(max_passes):
        try:
            result = engine.reconcile()
            failures = 0
        except TemporaryError as exc:
            failures += 1
            if failures >= max_failures:
                _flush(engine)
                raise
            delay = min(max_backoff, max(exc.delay, 0.2) * 2 ** min(failures - 1, 6))
            if progress:
                console.print(f"[yellow]retrying in {delay:.1f}s[/]: {exc}")
            sleep(delay)
            continue
        if progress and (result.acted or result.requeue_after):
            console.print(f"[bold]{result.phase:<11}[/] {result.message}")
        if result.requeue_after is None:
            break
        if result.phase not in ACTIVE and not result.acted:
            break
        sleep(result.requeue_after)
    _flush(engine)
    return result


def _flush(engine: Engine) -> None:
    flush = getattr(engine.notifier, "flush", None)
    if callable(flush):
        flush(30.0)
