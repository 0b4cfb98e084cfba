"""Running the engine: passes until settled (`reconcile --once`), with a live progress view,
and the daemon (`run --config`): APScheduler, one job per fleet, webhooks, metrics.

Errors follow the retry policy of their type: a TemporaryError (an unreachable host, a lost
compare-and-swap race) is retried after its delay with exponential backoff; a PermanentError
stops the run and is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pygit2
from rich.console import Console
from rich.markup import escape

from reconciler import redact
from reconciler.desired.signatures import SignaturePolicy
from reconciler.desired.spec import Fleet
from reconciler.desired.validate import LoadedSpec
from reconciler.errors import PermanentError, ReconcilerError, RetriesExhausted, TemporaryError
from reconciler.record.gitstore import GitStore
from reconciler.record.status import FleetStatus, read_status
from reconciler.rollout.engine import Engine, PassResult
from reconciler.rollout.events import Notifier
from reconciler.serve.config import Config, ConfigError, policy_from_config
from reconciler.serve.metrics import Metrics
from reconciler.serve.notify import Broadcaster, Fanout, Recorder, sinks_for_fleet
from reconciler.views.page import FleetPage, collect

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
            self.broadcaster = Broadcaster(sinks_for_fleet(spec.fleet))

    def notify(self, event: object) -> None:  # Event; typed loosely to fit the Protocol
        from reconciler.rollout.events import Event

        assert isinstance(event, Event)
        targets: list[Notifier] = [self.recorder]
        if self.broadcaster is not None:
            targets.append(self.broadcaster)
        Fanout(targets).notify(event)

    def flush(self, timeout: float = 30.0) -> None:
        if self.broadcaster is not None:
            self.broadcaster.flush(timeout)


def build_engine(args: argparse.Namespace, store: GitStore) -> Engine:
    """The engine for the CLI's `reconcile` (arguments from argparse)."""
    return engine_for(
        store,
        args.fleet,
        ssh_key=getattr(args, "ssh_key", None),
        instance=getattr(args, "instance", None),
        lease_s=getattr(args, "lease", 120.0),
        signatures=getattr(args, "trusted_signers", None),
    )


def engine_for(
    store: GitStore,
    fleet: str,
    *,
    ssh_key: str | None = None,
    instance: str | None = None,
    lease_s: float = 120.0,
    notifier: SpecNotifier | None = None,
    signatures: SignaturePolicy | None = None,
) -> Engine:
    """An engine for one fleet of the spec repo mirrored by `store`; with `signatures`, only a
    head commit signed by one of its trusted keys is applied."""
    from reconciler.hosts.agent import FleetAgent
    from reconciler.lb import LoadBalancer, from_spec

    notifier = notifier or SpecNotifier()
    cache = store.repo.path.rstrip("/").rsplit("/", 1)[0]
    agents: dict[str, FleetAgent] = {}

    def agent_for(spec: LoadedSpec, commit: str) -> FleetAgent:
        notifier.configure(spec)
        if commit not in agents:
            for old in agents.values():
                old.close()
            agents.clear()
            agents[commit] = FleetAgent.for_spec(spec, cache_dir=cache, key_file=ssh_key)
            agents[commit].spec_commit = commit
        return agents[commit]

    def lb_for(fleet: Fleet) -> LoadBalancer:
        return from_spec(fleet.load_balancer)

    def close_agents() -> None:
        for agent in agents.values():
            agent.close()
        agents.clear()

    return Engine(
        store=store,
        fleet_name=fleet,
        agent_for=agent_for,
        lb_for=lb_for,
        notifier=notifier,
        instance=instance or instance_name(cache),
        lease_s=lease_s,
        signatures=signatures,
        spec_cache=Path(cache) / "specs",
        close_agents=close_agents,
    )


def run_until_settled(
    engine: Engine,
    *,
    progress: bool = True,
    on_pass: Callable[[PassResult], None] | None = None,
    max_passes: int = 10_000,
    sleep: Callable[[float], None] = time.sleep,
    max_backoff: float = 60.0,
    max_failures: int = 8,
    stop: threading.Event | None = None,
) -> PassResult:
    """Pass after pass until the fleet is settled (Complete, Failed, Invalid, Idle) or holds.

    `stop` (set by a signal handler) ends the run between two passes: the step in hand
    finishes and is recorded, and the result is `Stopped` (a later run continues from there).

    A TemporaryError is retried after its delay, doubled with each failure in a row and capped
    at `max_backoff` seconds. After `max_failures` failures in a row (1 + the retries allowed),
    or on the last of `max_passes`, the run stops with RetriesExhausted: the last error, how
    many attempts in a row failed, and which budget was spent.
    """
    if max_failures < 1 or not max_backoff >= 0:
        raise ValueError(
            f"need max_failures >= 1 and max_backoff >= 0, got {max_failures} and {max_backoff}"
        )
    console = Console(stderr=True, highlight=False)
    failures = 0
    result = PassResult("Idle", "not started", None)
    began = time.monotonic()

    def pause(seconds_: float) -> None:
        if stop is None:
            sleep(seconds_)
        else:
            stop.wait(seconds_)

    for attempt in range(max_passes):
        if stop is not None and stop.is_set():
            result = PassResult("Stopped", f"stopped by a signal; {result.message}", None)
            break
        try:
            result = engine.reconcile()
            failures = 0
        except TemporaryError as exc:
            failures += 1
            if failures >= max_failures or attempt == max_passes - 1:
                _flush(engine)
                why = (
                    f"the retry budget of {max_failures - 1} is spent"
                    if failures >= max_failures
                    else f"the limit of {max_passes} passes is reached"
                )
                raise RetriesExhausted(exc, failures, why) from exc
            delay = min(max_backoff, max(exc.delay, 0.2) * 2 ** min(failures - 1, 6))
            if progress:
                console.print(
                    f"[yellow]retrying in {delay:.1f}s[/] (attempt {failures} of {max_failures}"
                    f" failed): {escape(str(exc))}"
                )
            pause(delay)
            continue
        if on_pass is not None:
            on_pass(result)
        elif progress and (result.acted or result.requeue_after):
            where = _where(result, time.monotonic() - began)
            console.print(f"[bold]{result.phase:<11}[/] {escape(result.message)}{where}")
        if result.requeue_after is None:
            break
        if result.phase not in ACTIVE and not result.acted:
            break
        pause(result.requeue_after)
    _flush(engine)
    return result


def _where(result: PassResult, elapsed: float) -> str:
    """` [step 5/16, 2m10s elapsed, about 6m left]`: where a long run stands (the time left is
    the plan's estimate of the steps not done)."""
    if result.progress is None:
        return ""
    done, total, left = result.progress
    where = escape(f"[step {done}/{total}, {_clock(elapsed)} elapsed, about {_clock(left)} left]")
    return f" [dim]{where}[/]"


def _clock(seconds_: float) -> str:
    minutes, secs = divmod(int(seconds_), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _flush(engine: Engine) -> None:
    flush = getattr(engine.notifier, "flush", None)
    if callable(flush):
        flush(30.0)


# --- the daemon: `reconciler run --config FILE` ---------------------------------------------


class FleetWorker:
    """One fleet's job: a pass, then another as soon as the rollout asks (the soak timer
    decides, not the poll), until the fleet settles; never two passes at once."""

    def __init__(self, engine: Engine, metrics: Metrics, stop: threading.Event, poll: float):
        self.engine = engine
        self.metrics = metrics
        self.stop = stop
        self.poll = poll
        self.wake = threading.Event()
        self.status: FleetStatus | None = None
        self.failures = 0

    def job(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            started = time.monotonic()
            result = self._pass()
            self.metrics.observe_pass(
                self.engine.fleet_name, result, time.monotonic() - started, self.status
            )
            if result.requeue_after is None or result.requeue_after >= self.poll:
                return
            self.wake.wait(result.requeue_after)

    def _pass(self) -> PassResult:
        try:
            result = self.engine.reconcile()
            self.failures = 0
        except TemporaryError as exc:
            self.failures += 1
            delay = min(60.0, max(exc.delay, 0.5) * 2 ** min(self.failures - 1, 6))
            log.warning("%s: %s (retrying in %.1fs)", self.engine.fleet_name, exc, delay)
            return PassResult("Error", str(exc), delay)
        except PermanentError as exc:
            log.error("%s: %s", self.engine.fleet_name, exc)
            return PassResult("Error", str(exc), None)
        self.status = read_status(self.engine.store, self.engine.fleet_name)
        log.info("%s: %s %s", self.engine.fleet_name, result.phase, result.message)
        return result


def run_daemon(config: Config, signatures: SignaturePolicy | None = None) -> int:
    """Serve until SIGTERM/SIGINT: finish the step in hand, release leases, exit 0.

    `signatures` (from `run --trusted-signers`) replaces the config's `trustedSigners`, which is
    read here first: a bad signers file stops the daemon before anything starts."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from reconciler.serve.server import Server

    signatures = signatures or policy_from_config(config.trusted_signers)
    stop = threading.Event()
    metrics = Metrics()
    cache = Path(config.cache).expanduser()
    workers = {
        fleet: FleetWorker(
            engine_for(
                GitStore(
                    config.remote,
                    cache / fleet / "repo.git",
                    branch=config.branch,
                    ssh=config.git_ssh.access() if config.git_ssh else None,
                ),
                fleet,
                ssh_key=config.ssh_key.file,
                lease_s=config.lease,
                signatures=signatures,
            ),
            metrics,
            stop,
            config.poll_interval,
        )
        for fleet in config.fleets
    }
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    for fleet, worker in workers.items():
        trigger = IntervalTrigger(seconds=config.poll_interval, jitter=config.jitter or None)
        scheduler.add_job(worker.job, trigger, id=fleet, next_run_time=datetime.now(UTC))

    def on_push(branch: str, urls: tuple[str, ...]) -> list[str]:
        if branch != config.branch:
            return []
        for fleet, worker in workers.items():
            worker.wake.set()
            scheduler.modify_job(fleet, next_run_time=datetime.now(UTC))
        return list(workers)

    def readiness(fleet: str) -> FleetStatus | None:
        worker = workers.get(fleet)
        if worker is None:
            return None  # not a fleet this daemon serves: 404
        # Served but not observed yet: an empty status, which the readiness URL answers with 503.
        return worker.status or FleetStatus(fleet, None, None, None, None, {}, [])

    def pages() -> list[FleetPage]:
        # A repository of its own per view: the worker's may be writing in its thread.
        return [
            collect(pygit2.Repository(w.engine.store.repo.path), fleet)
            for fleet, w in workers.items()
        ]

    page_token = config.http.page_token.read() if config.http.page_token else None
    if config.http.page_token and page_token is None:
        raise ConfigError("http.pageToken names a variable or file that holds no token")
    server = Server(
        config.http.bind,
        config.http.port,
        secrets=config.secrets(),
        trigger=on_push,
        readiness=readiness,
        metrics=metrics,
        remote=config.remote,
        page=pages if config.http.page else None,
        page_token=page_token,
    ).start()
    shown = redact.url(config.remote)
    log.info("reconciling %s from %s (%s)", ", ".join(workers), shown, server.url)
    _on_signals(stop, workers.values())
    scheduler.start()
    stop.wait()
    log.info("stopping: finishing the step in hand")
    scheduler.shutdown(wait=True)
    server.stop()
    for worker in workers.values():
        _release(worker)
    return 0


def _on_signals(stop: threading.Event, workers: Iterable[FleetWorker]) -> None:
    waking = list(workers)

    def handler(signum: int, frame: object) -> None:
        stop.set()
        for worker in waking:
            worker.wake.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _release(worker: FleetWorker) -> None:
    try:
        worker.engine.release()
    except ReconcilerError as exc:
        log.warning("%s: could not release the lease: %s", worker.engine.fleet_name, exc)
    worker.engine.close()  # a status push still in flight reaches the remote first
