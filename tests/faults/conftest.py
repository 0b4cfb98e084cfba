"""The fault suite's harness: a World with secrets configured, the real CLI, and end-state checks.

Every case in tests/faults ends by asserting the END STATE, with the checks here:

- `hosts_known`: every host on one known version, core and plugins alike (never mixed);
- `weights_safe`: every LB weight equal to the desired one, or below it only for a host whose
  drain is recorded on the status branch for the rollout in progress;
- `status_consistent`: the status branch is linear (never force-pushed by us), every commit of
  the reconciler carries its trailers, every document on it parses as its model, bookmarks and
  done steps are intact;
- `no_secrets`: none of the secrets the tests configured (the webhook HMAC secret, an
  `NPM_TOKEN`, the SSH private key) appears in any blob or message of the status branch's
  whole history, in any line the reconciler printed, or in any broadcast.

`Harness` runs the real CLI (`python -m reconciler reconcile --once`) as a subprocess (with
`SHORT_BUDGET` when a case waits for it to give up), or keeps one running in the background
(`Live`) while a test breaks something under it. Every process started here is stopped by its
PID.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML

from reconciler.desired.resolve import resolve_lock
from reconciler.desired.spec import Fleet
from reconciler.record.documents import Bookmark, Freeze, Lease, Readiness, RolloutRecord
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import PLUGINS, World, WorldHost, product_version
from tests.fixtures.webhook import Receiver, start_receiver

ROOT = Path(__file__).resolve().parents[2]
SECRET_ENV = "RECONCILER_FAULTS_WEBHOOK_SECRET"
SECRET = "whsec-faults-5f0c1e9a77d2-never-in-status"
NPM_TOKEN = "npm_FAULTSuiteToken6b1d0c2e9f4a8b7c"
RUN_TIMEOUT = 300.0
STATUS_REF = "refs/heads/reconciler/status"
FLEET_DIR = "fleets/sandbox"
RECONCILER_AUTHOR = "openclaw-reconciler"
CONNECT_TIMEOUT = "3s"
SHORT_BUDGET = ("--retries", "2", "--max-backoff", "0.5")
"""`reconcile --once` flags for a case that waits for the give-up: 3 attempts, 0.5 s apart
(the default budget, 8 attempts up to 60 s apart, takes about four minutes)."""
STEP_RECORDS = (
    ": bookmarked",
    ": drained",
    ": preflight passed",
    ": installed openclaw",
    ": restarted",
    "doctor green",
    ": weight 100%",
)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished reconciler process."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Live:
    """A reconciler running in the background; its output is read as it comes."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.argv = argv
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self._lines[name].append(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._lines["stdout"])

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._lines["stderr"])

    def _message(self, needles: Sequence[str]) -> str | None:
        """The first progress message (rich wraps them over several lines) with every needle."""
        for message in _messages(self.stderr):
            if all(n in message for n in needles):
                return message
        return None

    def wait_for(self, *needles: str, timeout: float = 60.0) -> str:
        """Block until one message on stderr holds every needle; returns that message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._message(needles)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the readers catch the last lines
                found = self._message(needles)
                if found is not None:
                    return found
                pytest.fail(
                    f"reconciler exited {self.proc.returncode} before printing {needles}:\n"
                    f"{self.stderr[-3000:]}"
                )
            time.sleep(0.05)
        pytest.fail(f"no line with {needles} within {timeout}s:\n{self.stderr[-3000:]}")

    def finish(self, timeout: float = RUN_TIMEOUT) -> Run:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.stop()
        for reader in self._readers:
            reader.join(5)
        return Run(self.argv, code, self.stdout, self.stderr)

    def signal(self, signum: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, by PID; reaped."""
        if self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _messages(stderr: str) -> list[str]:
    """Progress messages, unwrapped: a line that starts with a space or lower-case text after a
    wrapped line continues it (rich wraps at 80 columns when stderr is not a terminal)."""
    messages: list[str] = []
    for line in stderr.splitlines():
        starts = line[:1].isupper() or line.startswith(("retrying in", "error:"))
        if messages and line and not starts:  # rich keeps the space it wrapped at: one space
            messages[-1] = messages[-1].rstrip() + " " + line.strip()
        else:
            messages.append(line)
    return messages


def wait_until(predicate: Callable[[], bool], *, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


# --- the harness --------------------------------------------------------------------------------


@dataclass
class Harness:
    """One World, its broadcast receiver, and everything the reconciler printed."""

    world: World
    receiver: Receiver
    outputs: list[str] = field(default_factory=list)
    live: list[Live] = field(default_factory=list)
    ssh_extra: tuple[str, ...] = (f"  connectTimeout: {CONNECT_TIMEOUT}",)
    command_timeout: str = "60s"

    # --- running the reconciler ------------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {
            **os.environ,
            SECRET_ENV: SECRET,
            "NPM_TOKEN": NPM_TOKEN,
            "PYTHONPATH": str(ROOT),
            **(extra or {}),
        }

    def argv(self, *extra: str, cache: Path | None = None) -> list[str]:
        return self.world.reconcile_argv(*extra, cache=cache)

    def reconcile(
        self,
        *extra: str,
        env: Mapping[str, str] | None = None,
        cache: Path | None = None,
        timeout: float = RUN_TIMEOUT,
    ) -> Run:
        argv = self.argv(*extra, cache=cache)
        started = time.monotonic()
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env(env), cwd=ROOT
        )
        if os.environ.get("FAULTS_DEBUG"):
            took = time.monotonic() - started
            print(f"\n[{took:5.1f}s exit {done.returncode}] {' '.join(extra)} {env or ''}")
            print(done.stderr[-1500:])
        self.outputs += [done.stdout, done.stderr]
        return Run(argv, done.returncode, done.stdout, done.stderr)

    def start(self, *extra: str, env: Mapping[str, str] | None = None) -> Live:
        live = Live(self.argv(*extra), self.env(env))
        self.live.append(live)
        return live

    def finish(self, live: Live, timeout: float = RUN_TIMEOUT) -> Run:
        run = live.finish(timeout)
        if os.environ.get("FAULTS_DEBUG"):
            print(f"\n[live exit {run.returncode}]\n{run.stderr[-3000:]}")
        self.outputs += [run.stdout, run.stderr]
        return run

    def close(self) -> None:
        for live in self.live:
            live.stop()
            self.outputs += [live.stdout, live.stderr]

    # --- the spec ----------------------------------------------------------------------------

    def spec_files(self, core: str, *, lock: bytes | None = None) -> dict[str, bytes]:
        """The World's spec for `core`, with a short SSH connect timeout (a frozen host costs
        one connect timeout per attempt)."""
        text = self.world.fleet_yaml(core)
        text = text.replace(
            "  commandTimeout: 60s\n", f"  commandTimeout: {self.command_timeout}\n"
        )
        if self.ssh_extra:
            text = text.replace("\nssh:\n", "\nssh:\n" + "\n".join(self.ssh_extra) + "\n", 1)
        fleet = Fleet.model_validate(YAML(typ="safe").load(text))
        files = {
            "fleet.yaml": text.encode(),
            "openclaw.lock": lock if lock is not None else resolve_lock(fleet).to_bytes(),
        }
        if self.world.ssh is not None:
            files["known_hosts"] = self.world.ssh.known_hosts_text().encode()
        return files

    def fleet(self, core: str) -> Fleet:
        text = self.spec_files(core)["fleet.yaml"].decode()
        return Fleet.model_validate(YAML(typ="safe").load(text))

    def bump(self, core: str, message: str = "", **files: bytes) -> str:
        return self.world.commit({**self.spec_files(core), **files}, message or f"openclaw {core}")

    # --- what the status branch says ---------------------------------------------------------

    def status_repo(self) -> pygit2.Repository:
        return self.world.status_repo()

    def status_head(self) -> pygit2.Commit | None:
        repo = self.status_repo()
        ref = repo.references.get(STATUS_REF)
        if ref is None:
            return None
        commit = repo.get(ref.target)
        return commit if isinstance(commit, pygit2.Commit) else None

    def status_log(self) -> list[pygit2.Commit]:
        head = self.status_head()
        if head is None:
            return []
        walk = self.status_repo().walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL)
        return list(walk)[::-1]

    def status_file(self, rel: str) -> Any:
        head = self.status_head()
        if head is None:
            return None
        try:
            blob = head.tree / f"{FLEET_DIR}/{rel}"
        except KeyError:
            return None
        assert isinstance(blob, pygit2.Blob)
        return json.loads(blob.data)

    def rollout(self) -> dict[str, Any]:
        record = self.status_file("rollout.json")
        assert isinstance(record, dict), "no rollout.json on the status branch"
        return record

    def commits_for(self, spec_commit: str) -> list[pygit2.Commit]:
        return [c for c in self.status_log() if trailers(c).get("Spec-Commit") == spec_commit]

    def subjects(self, spec_commit: str, host: str | None = None) -> list[str]:
        return [
            c.message.splitlines()[0]
            for c in self.commits_for(spec_commit)
            if host is None or trailers(c).get("Node") == host
        ]

    # --- end-state checks --------------------------------------------------------------------

    def hosts_known(self, *allowed: str) -> dict[str, str]:
        """Every host on one version (core and every plugin), and that version in `allowed`."""
        found = {}
        for host in self.world.hosts:
            versions = {installed(host), *(installed(host, p) for p in PLUGINS)}
            assert len(versions) == 1, f"{host.name} is mixed: {versions}"
            (version,) = versions
            assert version in allowed, f"{host.name} is on {version}, expected one of {allowed}"
            found[host.name] = str(version)
        return found

    def weights_safe(self) -> dict[str, int]:
        """Each weight is the desired one, or lower only where the drain is on record."""
        weights = self.world.weights()
        record = self.status_file("rollout.json") or {}
        spec_commit = record.get("specCommit")
        for host in self.world.hosts:
            weight = weights[host.server]
            if weight == host.weight:
                continue
            drains = [
                c
                for c in self.commits_for(spec_commit or "")
                if trailers(c).get("Node") == host.name and "drained" in c.message.splitlines()[0]
            ]
            assert drains, f"{host.name} at weight {weight} without a recorded drain"
            phase = record["hosts"][host.name]["phase"]
            assert phase not in ("Pending", "Done", "RolledBack"), (host.name, phase)
            bookmark = self.bookmark(host.name, spec_commit or "")
            assert bookmark is not None, f"{host.name} drained without a bookmark"
            assert bookmark["lbWeights"][host.server] == host.weight, bookmark["lbWeights"]
        return weights

    def bookmark(self, host: str, spec_commit: str) -> dict[str, Any] | None:
        """The newest bookmark of `host` taken for `spec_commit`."""
        head = self.status_head()
        try:
            tree = head.tree / f"{FLEET_DIR}/bookmarks" if head is not None else None
        except KeyError:
            return None
        assert tree is None or isinstance(tree, pygit2.Tree)
        for entry in sorted(tree or [], key=lambda e: e.name or "", reverse=True):
            doc = self.status_file(f"bookmarks/{entry.name}")
            if doc["host"] == host and doc["specCommit"] == spec_commit:
                return dict(doc)
        return None

    def status_consistent(self) -> None:
        """Linear history; trailers on every reconciler commit; every document parses."""
        log = self.status_log()
        assert log, "the status branch is empty"
        for older, newer in itertools.pairwise(log):
            assert newer.parent_ids == [older.id], f"status history not linear at {newer.id}"
        for commit in log:
            if commit.author.name != RECONCILER_AUTHOR:
                continue
            t = trailers(commit)
            assert t.get("Fleet") == "sandbox" and commit.message.splitlines()[0], commit.message
        head = log[-1]
        docs: list[tuple[str, type[BaseModel]]] = [
            ("rollout.json", RolloutRecord),
            ("freeze.json", Freeze),
            ("lease.json", Lease),
        ]
        for rel, model in docs:
            data = self.status_file(rel)
            if data is not None:
                model.model_validate(data)
        record = RolloutRecord.model_validate(self.rollout())
        assert len(record.done_steps) == len(set(record.done_steps)), record.done_steps
        for sub, model in (("nodes", Readiness), ("bookmarks", Bookmark)):
            try:
                tree = head.tree / f"{FLEET_DIR}/{sub}"
            except KeyError:
                continue
            assert isinstance(tree, pygit2.Tree)
            for entry in tree:
                blob = self.status_repo().get(entry.id)
                assert isinstance(blob, pygit2.Blob)
                model.model_validate(json.loads(blob.data))

    def secrets(self) -> list[str]:
        assert self.world.ssh is not None
        key = self.world.ssh.client_key.read_text()
        body = [line for line in key.splitlines() if line and not line.startswith("-----")]
        return [SECRET, NPM_TOKEN, *body]

    def no_secrets(self, *more: str) -> None:
        """No configured secret in the status branch (every blob and message of its history),
        in anything the reconciler printed, or in any broadcast it sent."""
        needles = self.secrets()
        texts: list[tuple[str, str]] = [(f"output {i}", t) for i, t in enumerate(self.outputs)]
        texts += [(f"argument {i}", t) for i, t in enumerate(more)]
        texts += [
            (f"broadcast {i}", d["body"].decode("utf-8", "replace"))
            for i, d in enumerate(self.receiver.deliveries)
        ]
        repo = self.status_repo()
        seen: set[pygit2.Oid] = set()
        for commit in self.status_log():
            texts.append((f"status commit {commit.id}", commit.message))
            for path, blob in _blobs(repo, commit.tree, ""):
                if blob.id not in seen:
                    seen.add(blob.id)
                    texts.append((f"{path} in {str(commit.id)[:12]}", blob.data.decode("utf-8")))
        for where, text in texts:
            for needle in needles:
                assert needle not in text, f"a configured secret appears in {where}"

    def end_state(self, *allowed: str) -> dict[str, str]:
        versions = self.hosts_known(*allowed)
        self.weights_safe()
        self.status_consistent()
        self.no_secrets()
        return versions

    def complete(self, spec_commit: str, target: str) -> None:
        """The rollout of `spec_commit` is Complete: every host on `target` at full weight, one
        install record per host (or its 'already on' record)."""
        record = self.rollout()
        assert record["phase"] == "Complete" and record["specCommit"] == spec_commit, record
        assert self.end_state(target) == {h.name: target for h in self.world.hosts}
        assert self.world.weights() == {h.server: h.weight for h in self.world.hosts}
        assert len(record["doneSteps"]) == len(set(record["doneSteps"]))
        for host in self.world.hosts:
            subjects = self.subjects(spec_commit, host.name)
            if any("already on" in s for s in subjects):
                continue  # converged before it was touched: skipped, and recorded as such
            for step in STEP_RECORDS:  # every step recorded, each exactly once
                found = [s for s in subjects if step in s]
                assert len(found) == 1, (host.name, step, subjects)
            bookmark = self.bookmark(host.name, spec_commit)
            assert bookmark is not None and bookmark["lbWeights"][host.server] == host.weight


def _blobs(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str) -> Iterator[Any]:
    for entry in tree:
        obj = repo.get(entry.id)
        path = f"{prefix}{entry.name}"
        if isinstance(obj, pygit2.Tree):
            yield from _blobs(repo, obj, path + "/")
        elif isinstance(obj, pygit2.Blob):
            yield path, obj


def trailers(commit: pygit2.Commit) -> dict[str, str]:
    body = commit.message.partition("\n\n")[2]
    return dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)


def installed(host: WorldHost, name: str = "openclaw") -> str | None:
    """The version the product has of `name` (the core, or a plugin it tracks and lists)."""
    return product_version(host, name)


def other(version: str) -> str:
    """The next target when alternating between two releases."""
    return "2026.4.4" if version == "2026.4.3" else "2026.4.3"


def host_runs(world: World, host: WorldHost, *words: str) -> bool:
    """Is a command with all `words` in its command line running in the host's sessions?"""
    assert world.ssh is not None
    for pid in world.ssh.session_pids(world.ssh[host.name]):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if all(w in cmdline for w in words):
                return True
    return False


@contextlib.contextmanager
def harness(
    root: Path,
    registry: LocalRegistry,
    *,
    names: Sequence[str] = ("mac-1", "mac-2"),
    extra_rollout: Mapping[str, object] | None = None,
    adopt: str = "2026.4.3",
    command_timeout: str = "60s",
) -> Iterator[Harness]:
    """A 2-host World (steps [100]) with a webhook whose secret comes from the env, adopted at
    `adopt`; stopped (every process, by PID) on exit."""
    receiver = start_receiver()
    try:
        rollout = {"drainTimeout": "2s", "probeTimeout": "15s", **(extra_rollout or {})}
        with World(
            root,
            names=names,
            steps=(100,),
            registry=registry,
            initial=adopt,
            webhook=receiver.url,
            webhook_secret_env=SECRET_ENV,
            extra_rollout=rollout,
        ) as world:
            h = Harness(world, receiver, command_timeout=command_timeout)
            try:
                h.bump(adopt, message=f"fleet on {adopt}")
                done = h.reconcile()
                assert done.returncode == 0, done.stderr
                yield h
            finally:
                h.close()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
