"""The rollout engine driving a real HAProxy in front of the stand-in gateways.

Each test builds a World with `lb="haproxy"`: real sshd hosts running the stand-in OpenClaw,
a real HAProxy (backend `openclaw`, one server per host, health check /readyz) in front of
their gateways, and a spec repository on a git daemon. The real CLI reconciles as a
subprocess while this process sends traffic through HAProxy's frontend and samples the
weights over the runtime API, so the assertions are about what the load balancer actually did
with requests, not about what the reconciler says it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.lb import LBError
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, WorldHost

RUN_TIMEOUT = 300
OLD, NEW = "2026.4.2", "2026.4.3"
MakeWorld = Callable[..., World]


# --- running the reconciler ------------------------------------------------------------------


def reconcile(world: World, *extra: str) -> subprocess.CompletedProcess[str]:
    # Wide columns: the progress console must not fold a long socket path across lines.
    env = {**os.environ, "COLUMNS": "1000"}
    return subprocess.run(
        world.reconcile_argv(*extra), capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env
    )


def adopted(world: World) -> str:
    """The fleet as it stands (2026.4.2) committed and reconciled. Only the first test starts
    from an adopted fleet; the others bump a fresh World's hosts (already on 2026.4.2) straight
    away, which plans the same steps and saves a reconcile."""
    commit = world.bump(OLD, message=f"studio on {OLD}")
    done = reconcile(world)
    assert done.returncode == 0, done.stderr
    return commit


def installed(host: WorldHost) -> str | None:
    path = host.prefix / "lib" / "node_modules" / "openclaw" / "package.json"
    return json.loads(path.read_text())["version"] if path.exists() else None


def status_file(world: World, path: str) -> Any:
    repo = world.status_repo()
    commit = repo.revparse_single("refs/heads/reconciler/status")
    assert isinstance(commit, pygit2.Commit)
    try:
        blob = commit.tree / f"fleets/sandbox/{path}"
    except KeyError:
        return None
    assert isinstance(blob, pygit2.Blob)
    return json.loads(blob.data)


def status_subjects(world: World, spec_commit: str) -> list[str]:
    """Subjects of the status commits of one spec commit, oldest first."""
    repo = world.status_repo()
    head = repo.revparse_single("refs/heads/reconciler/status")
    log = list(repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL))[::-1]
    return [c.message.splitlines()[0] for c in log if f"Spec-Commit: {spec_commit}" in c.message]


# --- traffic and weights, observed from outside ----------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request through the frontend: when it left and came back, who answered what."""

    sent: float
    done: float
    status: int
    host: str | None
    version: str | None


@dataclass(frozen=True)
class Sample:
    """The backend's weights as the runtime API reported them at `at`."""

    at: float
    weights: dict[str, int]


class Traffic(threading.Thread):
    """At most `limit` GETs through HAProxy, `rate` per second, each on a new connection (so
    HAProxy balances every one); the answering host is read from the stand-in's JSON body."""

    def __init__(self, url: str, hosts: Sequence[WorldHost], *, rate: float, limit: int) -> None:
        super().__init__(daemon=True)
        self.url = url + "/lb-probe"
        self.by_port = {h.gateway_port: h.name for h in hosts}
        self.interval = 1.0 / rate
        self.limit = limit
        self.hits: list[Hit] = []
        self.halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while len(self.hits) < self.limit and not self.halt.is_set():
            self.hits.append(self.one())
            next_at += self.interval
            self.halt.wait(max(0.0, next_at - time.monotonic()))

    def one(self) -> Hit:
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except OSError:
            return Hit(sent, time.monotonic(), 0, None, None)
        done = time.monotonic()
        try:
            doc = json.loads(body)
        except ValueError:
            return Hit(sent, done, status, None, None)
        return Hit(sent, done, status, self.by_port.get(doc.get("port")), doc.get("version"))

    def stop(self) -> list[Hit]:
        self.halt.set()
        self.join(10)
        return list(self.hits)


class Weights(threading.Thread):
    """Samples the backend's weights every `every` seconds over the runtime API; a sample
    that fails (HAProxy restarting) is skipped."""

    def __init__(self, world: World, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        assert world.haproxy is not None
        self.haproxy = world.haproxy
        self.every = every
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                weights = self.haproxy.driver(timeout=1.0).weights()
            except LBError:
                weights = None
            if weights is not None:
                self.samples.append(Sample(time.monotonic(), weights))
            self.halt.wait(self.every)

    def stop(self) -> list[Sample]:
        self.halt.set()
        self.join(10)
        return list(self.samples)


@dataclass
class Observed:
    traffic: list[Hit] = field(default_factory=list)
    weights: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class Window:
    """A stretch of consecutive samples in which a server's weight had one value."""

    server: str
    weight: int
    start: float
    end: float
    others: dict[str, int]

    def hits(self, traffic: Sequence[Hit]) -> list[Hit]:
        """Requests wholly inside the window: HAProxy picked their server under this weight."""
        return [h for h in traffic if h.sent >= self.start and h.done <= self.end]


def windows(samples: Sequence[Sample], server: str) -> list[Window]:
    out: list[Window] = []
    run: list[Sample] = []
    for sample in [*samples, None]:
        if run and (sample is None or sample.weights.get(server) != run[0].weights.get(server)):
            first = run[0].weights
            others = {s: w for s, w in first.items() if s != server}
            out.append(Window(server, first.get(server, -1), run[0].at, run[-1].at, others))
            run = []
        if sample is not None:
            run.append(sample)
    return out


@contextlib.contextmanager
def observing(world: World, *, rate: float = 100.0, limit: int = 20_000) -> Iterator[Observed]:
    """Traffic through the frontend and weight samples for the duration of the block."""
    assert world.haproxy is not None
    seen = Observed()
    traffic = Traffic(world.haproxy.frontend_url, world.hosts, rate=rate, limit=limit)
    weights = Weights(world)
    weights.start()
    traffic.start()
    try:
        yield seen
    finally:
        seen.traffic = traffic.stop()
        seen.weights = weights.stop()


def share(hits: Sequence[Hit], host: str) -> float:
    return sum(1 for h in hits if h.host == host) / len(hits) if hits else 0.0


# --- worlds ------------------------------------------------------------------------------------


@pytest.fixture
def make_world(tmp_path: Path, registry: LocalRegistry) -> Iterator[MakeWorld]:
    """`make_world(**kwargs)` -> a World with a real HAProxy, closed at teardown."""
    made: list[World] = []

    def make(**kwargs: Any) -> World:
        root = tmp_path / f"world-{len(made)}"
        world = World(root, registry=registry, lb="haproxy", **kwargs)
        made.append(world)
        return world

    try:
        yield make
    finally:
        for world in made:
            world.close()


# --- 1. the traffic split follows the ramp ---------------------------------------------------


def test_traffic_through_haproxy_follows_drain_and_ramp(make_world: MakeWorld) -> None:
    world = make_world(names=("mac-1", "mac-2"), steps=(10, 100), soak="2s")
    adopted(world)
    bump = world.bump(NEW)
    desired = {h.name: h.weight for h in world.hosts}
    started = time.monotonic()
    with observing(world) as seen:
        done = reconcile(world)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert [installed(h) for h in world.hosts] == [NEW] * len(world.hosts)
    assert world.weights() == desired
    assert status_file(world, "rollout.json")["phase"] == "Complete"

    hits = seen.traffic
    assert len(hits) > 20 * elapsed, f"only {len(hits)} requests in {elapsed:.0f}s"
    failed = [h for h in hits if h.status != 200]
    assert not failed, f"{len(failed)} of {len(hits)} requests failed during the rollout"
    report: dict[str, object] = {"requests": len(hits), "seconds": round(elapsed, 1)}
    for host in world.hosts:
        spans = windows(seen.weights, host.name)
        # Each host went 100 -> 0 -> 10 -> 100 once, the others at full weight meanwhile.
        assert [w.weight for w in spans] == [100, 0, 10, 100], [w.weight for w in spans]
        drained = [w for w in spans if w.weight == 0]
        for window in drained:
            inside = window.hits(hits)
            to_host = [h for h in inside if h.host == host.name]
            assert inside, f"no traffic while {host.name} was drained"
            assert not to_host, f"{len(to_host)} requests reached {host.name} at weight 0"
        (ten,) = [w for w in spans if w.weight == 10]
        assert all(v == 100 for v in ten.others.values()), ten.others
        inside = ten.hits(hits)
        mine = [h for h in inside if h.host == host.name]
        assert len(inside) >= 60, f"{len(inside)} requests in the 10% window of {host.name}"
        assert {h.version for h in mine} == {NEW}
        expected = 10 / (10 + sum(ten.others.values()))
        assert 0.02 <= share(inside, host.name) <= 0.25, (share(inside, host.name), expected)
        report[host.name] = {
            "drainedRequests": sum(len(w.hits(hits)) for w in drained),
            "at10": f"{len(mine)}/{len(inside)} = {share(inside, host.name):.1%}",
            "expected": f"{expected:.1%}",
        }
    print("traffic split:", json.dumps(report))
    subjects = status_subjects(world, bump)
    assert sum("soak at 10% passed" in s for s in subjects) == len(world.hosts), subjects


# --- 2. a canary answering 5xx fails the analysis and is restored ----------------------------


def test_canary_answering_5xx_during_the_soak_is_restored_and_frozen(make_world: MakeWorld) -> None:
    world = make_world(
        names=("mac-1", "mac-2"),
        steps=(10, 100),
        soak="3s",
        extra_rollout={"analysis": {"max5xxRatio": 0.05, "minRequests": 5}},
    )
    mac1, mac2 = world.hosts
    world.set_faults(mac1, http_5xx=[NEW])  # only the new release answers 503
    bump = world.bump(NEW)
    with observing(world) as seen:
        done = reconcile(world)
    assert done.returncode == 2, done.stderr  # Failed

    assert [installed(h) for h in world.hosts] == [OLD, OLD]
    assert world.weights() == {"mac-1": 100, "mac-2": 100}
    rollout = status_file(world, "rollout.json")
    assert rollout["phase"] == "Failed" and bump in rollout["failedCommits"]
    assert rollout["hosts"]["mac-1"]["phase"] == "RolledBack"
    freeze = status_file(world, "freeze.json")
    assert freeze is not None and freeze["host"] == "mac-1" and freeze["specCommit"] == bump
    assert "canary analysis failed" in freeze["reason"] and "above the maximum" in freeze["reason"]
    subjects = status_subjects(world, bump)
    assert not any(s.startswith("mac-2") for s in subjects), subjects
    assert not any("weight 100%" in s for s in subjects), "mac-1 ramped past its canary step"

    # What HAProxy did: mac-1 served 503s at 10% from the new release; the failed analysis
    # pulled its traffic (weight 0) while it was restored, then it served 200s from the old
    # release at full weight; mac-2 stayed at 100 and answered 200 throughout.
    assert [w.weight for w in windows(seen.weights, mac2.name)] == [100]
    spans = windows(seen.weights, mac1.name)
    assert [w.weight for w in spans] == [100, 0, 10, 0, 100], [w.weight for w in spans]
    canary = [h for h in spans[2].hits(seen.traffic) if h.host == mac1.name]
    assert len(canary) >= 5 and {(h.status, h.version) for h in canary} == {(503, NEW)}
    restoring = spans[3].hits(seen.traffic)
    assert restoring and not [h for h in restoring if h.host == mac1.name]
    restored = [h for h in spans[4].hits(seen.traffic) if h.host == mac1.name]
    assert {(h.status, h.version) for h in restored} <= {(200, OLD)}
    assert not [h for h in seen.traffic if h.host != mac1.name and h.status != 200]
    print(f"canary at 10%: {len(canary)} of {len(spans[2].hits(seen.traffic))} requests, all 503")


# --- 3. an unreachable HAProxy stops the rollout before anything moves -----------------------


def test_unreachable_haproxy_socket_stops_the_rollout_before_any_drain(
    make_world: MakeWorld,
) -> None:
    world = make_world(names=("mac-1", "mac-2"), steps=(100,))
    assert world.haproxy is not None
    socket_path = str(world.haproxy.socket_path)
    world.haproxy.stop()
    bump = world.bump(NEW)
    # Pass 1 starts the rollout and takes the lease, pass 2 fails on the socket (an
    # LBError is temporary: retried with backoff, and --once gives up only after ~5 minutes,
    # so --max-passes bounds the run).
    done = reconcile(world, "--max-passes", "3")
    assert done.returncode != 0, done.stderr
    assert f"haproxy at unix://{socket_path}" in done.stderr, done.stderr

    assert [installed(h) for h in world.hosts] == [OLD, OLD]
    subjects = status_subjects(world, bump)
    assert subjects and subjects[0].startswith("rollout "), subjects
    assert not any(("bookmarked" in s or "drain" in s) for s in subjects), subjects
    tree = world.status_repo().revparse_single("refs/heads/reconciler/status").peel(pygit2.Tree)
    folder = tree / "fleets/sandbox/bookmarks" if "fleets/sandbox/bookmarks" in tree else None
    bookmarks = [e.name for e in folder] if isinstance(folder, pygit2.Tree) else []
    mine = [b for b in bookmarks if status_file(world, f"bookmarks/{b}")["specCommit"] == bump]
    assert mine == [], "a host was bookmarked for the bump"
    # The weights the LB comes back with are untouched: nobody was drained.
    world.haproxy.start()
    assert world.weights() == {"mac-1": 100, "mac-2": 100}


# --- 4. HAProxy restarted mid-ramp -----------------------------------------------------------


class RestartWhen(threading.Thread):
    """Restarts HAProxy (weights back to its config's) once `server` is seen at `weight`."""

    def __init__(self, world: World, server: str, weight: int, *, after: float = 0.3) -> None:
        super().__init__(daemon=True)
        assert world.haproxy is not None
        self.haproxy = world.haproxy
        self.server, self.weight, self.after = server, weight, after
        self.halt = threading.Event()
        self.restarted: tuple[float, dict[str, int]] | None = None

    def run(self) -> None:
        while not self.halt.wait(0.05):
            with contextlib.suppress(LBError):
                if self.haproxy.driver(timeout=1.0).weights().get(self.server) == self.weight:
                    break
        if self.halt.wait(self.after):
            return
        self.haproxy.restart()
        self.restarted = (time.monotonic(), self.haproxy.driver().weights())

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def test_haproxy_restarted_mid_soak_gets_the_step_weights_back(make_world: MakeWorld) -> None:
    world = make_world(names=("mac-1", "mac-2"), steps=(10, 100), soak="3s")
    bump = world.bump(NEW)
    restarter = RestartWhen(world, "mac-1", 10)
    restarter.start()
    try:
        with observing(world) as seen:
            done = reconcile(world)
    finally:
        restarter.stop()
    assert done.returncode == 0, done.stderr
    assert restarter.restarted is not None, "HAProxy was not restarted during the soak"
    at, after_restart = restarter.restarted
    assert after_restart == {"mac-1": 100, "mac-2": 100}, "a restart keeps no runtime weight"

    assert [installed(h) for h in world.hosts] == [NEW, NEW]
    assert world.weights() == {"mac-1": 100, "mac-2": 100}
    assert status_file(world, "rollout.json")["phase"] == "Complete"
    # mac-1 soaked at 10, HAProxy forgot it (100), the engine put 10 back and soaked again.
    spans = windows(seen.weights, "mac-1")
    assert [w.weight for w in spans] == [100, 0, 10, 100, 10, 100], [w.weight for w in spans]
    assert spans[3].start >= at - 1.0
    resoak = spans[4].hits(seen.traffic)
    assert 0.02 <= share(resoak, "mac-1") <= 0.25, share(resoak, "mac-1")
    subjects = status_subjects(world, bump)
    reapplied = [s for s in subjects if s.startswith("mac-1: weight 10%") and "re-applied" in s]
    assert len(reapplied) == 1, subjects
    assert "mac-1=100" in reapplied[0], reapplied
    print(f"re-soak at 10%: {share(resoak, 'mac-1'):.1%} of {len(resoak)} requests; {reapplied[0]}")


# --- 5. the drain waits for the sessions in flight -------------------------------------------


class SlowUpload(threading.Thread):
    """A POST through HAProxy whose body trickles in (a byte every 0.5 s): HAProxy forwards
    the headers at once, the stand-in answers only at the end of the body, so the request is a
    session in flight on its server until `hold` seconds after `server` is seen at weight 0."""

    LENGTH = 256

    def __init__(self, world: World, server: str, *, hold: float) -> None:
        super().__init__(daemon=True)
        assert world.haproxy is not None
        self.haproxy = world.haproxy
        self.server, self.hold = server, hold
        self.sock = socket.create_connection(("127.0.0.1", world.haproxy.frontend_port), 10)
        head = f"POST /slow HTTP/1.1\r\nHost: lb\r\nContent-Length: {self.LENGTH}\r\n"
        self.sock.sendall(head.encode() + b"Connection: close\r\n\r\nx")
        self.sent = 1
        self.zero_at: float | None = None
        self.released_at: float | None = None  # wall clock, to compare with commit times
        self.answer = b""
        self.halt = threading.Event()

    def sessions(self) -> int:
        return self.haproxy.driver().stats()[self.server].sessions

    def run(self) -> None:
        try:
            while not self.halt.wait(0.5) and self.sent < self.LENGTH - 1:
                self.sock.sendall(b"x")
                self.sent += 1
                if self.zero_at is None:
                    with contextlib.suppress(LBError):
                        if self.haproxy.driver().weights()[self.server] == 0:
                            self.zero_at = time.monotonic()
                elif time.monotonic() - self.zero_at >= self.hold:
                    break
            self.released_at = time.time()
            self.sock.sendall(b"x" * (self.LENGTH - self.sent))
            while chunk := self.sock.recv(65536):
                self.answer += chunk
        finally:
            self.sock.close()

    def response(self) -> tuple[int, dict[str, Any]]:
        head, _, body = self.answer.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head else 0
        return status, json.loads(body) if body else {}

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def test_drain_waits_for_the_session_in_flight_before_installing(make_world: MakeWorld) -> None:
    hold = 3.0
    world = make_world(
        names=("mac-1", "mac-2"), steps=(100,), extra_rollout={"drainTimeout": "30s"}
    )
    assert world.haproxy is not None
    lb = world.haproxy.driver()
    mac1 = world.host("mac-1")
    bump = world.bump(NEW)

    # The slow request must land on mac-1: mac-2 out of the way while it is sent.
    lb.set_weight("mac-2", 0)
    upload = SlowUpload(world, "mac-1", hold=hold)
    deadline = time.monotonic() + 5
    while upload.sessions() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upload.sessions() == 1, "the slow request is not in flight on mac-1"
    lb.set_weight("mac-2", 100)

    upload.start()
    try:
        done = reconcile(world)
    finally:
        upload.stop()
    assert done.returncode == 0, done.stderr
    assert [installed(h) for h in world.hosts] == [NEW, NEW]
    assert world.weights() == {"mac-1": 100, "mac-2": 100}

    # The request in flight was drained, not cut: mac-1 answered it on the old release.
    assert upload.zero_at is not None and upload.released_at is not None
    status, body = upload.response()
    assert status == 200, upload.answer[:300]
    assert body["port"] == mac1.gateway_port and body["version"] == OLD, body
    # The drain step ended only after the request did, and well before its 30 s timeout.
    repo = world.status_repo()
    head = repo.revparse_single("refs/heads/reconciler/status")
    (drained,) = [
        c
        for c in repo.walk(head.id)
        if f"Spec-Commit: {bump}" in c.message and c.message.startswith("mac-1: drain")
    ]
    assert drained.message.startswith("mac-1: drained (weight 0)"), drained.message
    assert int(upload.released_at) <= drained.commit_time <= upload.released_at + 10
    print(f"drain commit {drained.commit_time - upload.released_at:+.1f}s after the release")
