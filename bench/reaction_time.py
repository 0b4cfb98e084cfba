"""Reaction time: from the push of a bump to the first status commit that answers it.

Why: GitOps tools poll by default (Argo CD every 3 minutes, Flux every minute) and react to a
push within about that; a webhook makes it a matter of one fetch. Measured against a World
(1 local host with the stand-in OpenClaw, a git daemon remote), three ways:

* `poll-once`: a loop that runs `reconciler reconcile --once` and sleeps --interval (5 s)
  between runs, as a systemd timer or cron job would;
* `daemon-poll`: `reconciler run --config` with `pollInterval: --interval`, no webhook;
* `daemon-webhook`: `reconciler run --config` with `pollInterval: 3600`; right after each push
  the harness POSTs a signed GitHub push event to its `/hooks/git`, as the forge would.

Each sample: wait for the fleet to be Complete, wait a random 0..interval (so the push lands
at a random point of the poll cycle), push a bump (alternating 4.2 / 4.3), and time until the
remote's status branch carries a commit with `Spec-Commit: <bump>`. The rollout then runs to
Complete before the next sample. The daemon modes are skipped (and said so) when this checkout
has no `reconciler run`.

Run: `python bench/reaction_time.py` (--samples 8 --interval 5; prints markdown tables, writes
bench/results/reaction_time.json).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pygit2
from benchlib import (
    load_note,
    median,
    percentile,
    reconciler_commands,
    s,
    start_load_sampler,
    table,
    write_results,
)

from reconciler.sandbox.processes import free_port
from reconciler.sandbox.world import World

VERSIONS = ("2026.4.2", "2026.4.3")
STATUS_REF = "refs/heads/reconciler/status"
SECRET_ENV = "BENCH_REACTION_WEBHOOK_SECRET"
SECRET = "bench-only-webhook-secret"
SETTLE_TIMEOUT_S = 300
ANCHORS = [
    ("Argo CD, default polling", "up to 180 s (timeout.reconciliation: 180s, + jitter)"),
    ("Flux, GitRepository interval (common default)", "up to 60 s (interval: 1m)"),
    ("Argo CD / Flux with a webhook", "seconds (one fetch)"),
]


def trailers(commit: pygit2.Commit) -> dict[str, str]:
    body = commit.message.partition("\n\n")[2]
    return dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)


class StatusWatch:
    """Reads the remote's status branch straight from its bare repository."""

    def __init__(self, bare: Path) -> None:
        self.repo = pygit2.Repository(str(bare))

    def head(self) -> pygit2.Commit | None:
        ref = self.repo.references.get(STATUS_REF)
        if ref is None:
            return None
        commit = self.repo.get(ref.target)
        return commit if isinstance(commit, pygit2.Commit) else None

    def answered(self, spec: str, stop_at: str | None) -> bool:
        """Has a status commit newer than `stop_at` named `spec`?"""
        commit = self.head()
        while commit is not None and str(commit.id) != stop_at:
            if trailers(commit).get("Spec-Commit") == spec:
                return True
            commit = commit.parents[0] if commit.parents else None
        return False

    def phase(self) -> tuple[str | None, str | None]:
        head = self.head()
        if head is None:
            return None, None
        try:
            doc = json.loads((head.tree / "fleets/sandbox/rollout.json").data)
        except KeyError:
            return None, None
        return doc.get("phase"), doc.get("specCommit")


def wait_settled(watch: StatusWatch, spec: str, timeout: float = SETTLE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase, commit = watch.phase()
        if commit == spec and phase in ("Complete", "Failed"):
            if phase != "Complete":
                raise RuntimeError(f"rollout of {spec[:12]} ended {phase}")
            return
        time.sleep(0.05)
    raise RuntimeError(f"rollout of {spec[:12]} not Complete within {timeout:g}s")


# --- the three ways of running the reconciler ------------------------------------------------


class PollOnceLoop:
    """`reconcile --once`, then sleep `interval`, forever (until stopped)."""

    def __init__(self, world: World, interval: float, log: Path) -> None:
        self.world = world
        self.interval = interval
        self.log = log.open("ab")
        self.stop = threading.Event()
        self.current: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.current = subprocess.Popen(
                self.world.reconcile_argv(), stdout=self.log, stderr=self.log
            )
            self.current.wait()
            self.stop.wait(self.interval)

    def close(self) -> None:
        self.stop.set()
        proc = self.current
        if proc is not None and proc.poll() is None:
            proc.wait(timeout=SETTLE_TIMEOUT_S)
        self.thread.join(timeout=SETTLE_TIMEOUT_S)
        self.log.close()


class Daemon:
    """`reconciler run --config`, stopped by SIGTERM to its PID."""

    def __init__(self, world: World, work: Path, poll: float) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = work / "config.yaml"
        config.write_text(
            f"remote: {world.remote}\nbranch: main\nfleets: [sandbox]\n"
            f"cache: {work / 'cache'}\npollInterval: {poll}\njitter: 0\n"
            f"http:\n  bind: 127.0.0.1\n  port: {self.port}\n"
            f"webhookSecrets:\n  github:\n    env: {SECRET_ENV}\n"
        )
        self.log = (work / "daemon.log").open("ab")
        env = {**os.environ, SECRET_ENV: SECRET}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(config)],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    log = work / "daemon.log"
                    raise RuntimeError(f"daemon did not serve /healthz: see {log}") from None
                time.sleep(0.05)

    def hook(self, world: World, before: str, after: str) -> float:
        """POST a signed GitHub push event; returns the seconds the POST took."""
        body = json.dumps(
            {
                "ref": "refs/heads/main",
                "before": before,
                "after": after,
                "created": False,
                "deleted": False,
                "forced": False,
                "repository": {
                    "full_name": "bench/spec",
                    "name": "spec",
                    "clone_url": world.remote,
                    "git_url": world.remote,
                    "html_url": world.remote,
                    "url": world.remote,
                },
                "pusher": {"name": "operator", "email": "operator@example.com"},
                "head_commit": {"id": after, "message": "bump"},
            }
        ).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/hooks/git",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/bench",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": f"sha256={signature}",
            },
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 202:
                raise RuntimeError(f"webhook answered {answer.status}: {answer.read()[:300]!r}")
        return time.perf_counter() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SETTLE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- one mode -------------------------------------------------------------------------------


def run_mode(
    world: World, mode: str, samples: int, interval: float, work: Path, rng: random.Random
) -> list[dict[str, Any]]:
    watch = StatusWatch(world.remote_path)
    runner: PollOnceLoop | Daemon
    if mode == "poll-once":
        runner = PollOnceLoop(world, interval, work / "poll-once.log")
    elif mode == "daemon-poll":
        runner = Daemon(world, work / mode, interval)
    else:
        runner = Daemon(world, work / mode, 3600)
    out = []
    try:
        current = str(world.work.head.target)
        wait_settled(watch, current)
        for k in range(samples):
            target = VERSIONS[1] if installed(world) == VERSIONS[0] else VERSIONS[0]
            files = world.spec_files(target)  # resolving the lock is not part of the push
            time.sleep(rng.uniform(0, interval))
            head = watch.head()
            stop_at = str(head.id) if head is not None else None
            before = str(world.work.head.target)
            bump = world.commit(files, f"openclaw {target} ({mode} sample {k + 1})")
            pushed = time.perf_counter()
            post_s = (
                runner.hook(world, before, bump)
                if isinstance(runner, Daemon) and mode == "daemon-webhook"
                else None
            )
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while not watch.answered(bump, stop_at):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: no status commit for {bump[:12]}")
                time.sleep(0.005)
            reaction = time.perf_counter() - pushed
            wait_settled(watch, bump)
            out.append(
                {
                    "sample": k + 1,
                    "target": target,
                    "reaction_s": reaction,
                    "webhook_post_s": post_s,
                }
            )
            print(f"{mode} sample {k + 1}: {reaction:.2f} s", file=sys.stderr, flush=True)
    finally:
        runner.close()
    return out


def installed(world: World) -> str | None:
    host = world.hosts[0]
    path = host.prefix / "lib" / "node_modules" / "openclaw" / "package.json"
    return json.loads(path.read_text())["version"] if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="bumps per mode")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval, seconds")
    parser.add_argument("--modes", default="poll-once,daemon-poll,daemon-webhook")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    start_load_sampler()
    modes = args.modes.split(",")
    notes: dict[str, str] = {}
    if "run" not in reconciler_commands():
        for mode in [m for m in modes if m.startswith("daemon")]:
            modes.remove(mode)
            notes[mode] = "not measured: this checkout has no `reconciler run`"
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="reaction-time-"))
    results: dict[str, list[dict[str, Any]]] = {}
    world: World | None = None
    try:
        world = World(
            tmp / "world", names=("r-1",), transport="local", initial=VERSIONS[0], steps=(100,)
        )
        world.bump(VERSIONS[0], message="adopt")
        done = subprocess.run(world.reconcile_argv(), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"adoption failed:\n{done.stderr[-2000:]}")
        for mode in modes:
            try:
                results[mode] = run_mode(world, mode, args.samples, args.interval, tmp, rng)
            except RuntimeError as exc:
                notes[mode] = f"failed: {exc}"
                print(f"{mode}: {exc}", file=sys.stderr)
    finally:
        if world is not None:
            world.close()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = report(results, notes, args)
    print()
    print(load_note())
    write_results(
        "reaction_time",
        {
            "config": vars(args),
            "samples": results,
            "notes": notes,
            "summary": summary,
            "anchors": ANCHORS,
        },
    )
    return 0


def report(
    results: dict[str, list[dict[str, Any]]], notes: dict[str, str], args: Any
) -> dict[str, Any]:
    labels = {
        "poll-once": f"`reconcile --once` every {args.interval:g} s (loop)",
        "daemon-poll": f"`reconciler run`, pollInterval {args.interval:g} s",
        "daemon-webhook": "`reconciler run` + GitHub push webhook",
    }
    rows, summary = [], {}
    for mode, samples in results.items():
        values = [x["reaction_s"] for x in samples]
        summary[mode] = {
            "median_s": median(values),
            "p90_s": percentile(values, 0.9),
            "min_s": min(values),
            "max_s": max(values),
            "n": len(values),
        }
        rows.append(
            [
                labels[mode],
                len(values),
                s(median(values)),
                s(percentile(values, 0.9)),
                s(min(values)),
                s(max(values)),
            ]
        )
    for mode, note in notes.items():
        rows.append([labels.get(mode, mode), 0, note, "", "", ""])
    print(
        table(
            ["push -> first status commit", "samples", "median s", "p90 s", "min s", "max s"], rows
        )
    )
    print()
    print(table(["anchor (defaults)", "push -> reaction"], [list(a) for a in ANCHORS], align="ll"))
    hook = summary.get("daemon-webhook")
    if hook is not None:
        met = "met" if hook["median_s"] <= 1.0 else "MISSED"
        print()
        print(f"Webhook target (median <= 1 s): {hook['median_s']:.2f} s, {met}.")
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
