"""Where the wall time of one `reconciler ...` run goes: host commands, git, sleeps, the rest.

A profiler for an I/O-bound program: runs the real CLI in-process (same argv as the subprocess
the benchmarks time) with a thin timer around every host command (`SSHTransport.run`,
`LocalTransport.run`, `read_file`), every git fetch and push, and every `time.sleep`. Nothing of
the product is changed; the wrappers only record (start, end, thread, what).

`time.sleep` is wrapped BEFORE the package is imported, so the `sleep=time.sleep` defaults
bound at import time (run_until_settled, Executor, operations.restart) are the timed one.

Run: `python bench/trace_reconcile.py --out trace.json -- reconcile --once --remote ... `
(the benchmarks call `trace(argv)` directly). Prints a table of where the main thread's wall
time went, and the busiest command kinds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_real_sleep = time.sleep


@dataclass
class Span:
    kind: str  # "cmd" | "op" | "read" | "fetch" | "push" | "sleep"
    what: str
    host: str
    thread: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Recorder:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def span(self, kind: str, what: str, host: str = "") -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            with self._lock:
                self.spans.append(
                    Span(kind, what, host, threading.current_thread().name, start, end)
                )


RECORDER = Recorder()


def _sleep(seconds: float) -> None:
    with RECORDER.span("sleep", f"{seconds:g}s"):
        _real_sleep(seconds)


def command_kind(argv: Sequence[str]) -> str:
    """A short, stable label for a host command (for grouping)."""
    a = list(argv)
    if not a:
        return "?"
    if a[0] == "npm":
        if a[1:2] == ["ls"]:
            return "npm ls --all openclaw" if "--all" in a else "npm ls --depth=1"
        if a[1:2] == ["install"]:
            return "npm install " + (
                "core" if any(x.startswith("openclaw@") for x in a) else "plugins"
            )
        return "npm " + " ".join(a[1:2])
    if a[0] == "openclaw":
        rest = [x for x in a[1:] if not x.startswith("--json")]
        return "openclaw " + " ".join(rest[:2])
    if a[0] == "node" and a[1:2] == ["-e"]:
        return "node -e <probes>"
    if a[0] == "find" and len(a) > 1:
        where = "node_modules" if "node_modules" in a[1] else "skills" if "skills" in a[1] else ""
        return f"find <{where or 'path'}>"
    if a[0] == "sh" and len(a) > 2:
        script = a[2]
        if "head -c" in script:
            return "read_file"
        if "df -Pk" in script:
            return "df"
        return "sh -c"
    return " ".join([Path(a[0]).name, *a[1:2]])  # a service script: its name, not its path


_INSTALLED: list[bool] = []


def install_wrappers() -> None:
    """Wrap transports and git (once); after `time.sleep` is patched, before the CLI runs."""
    if _INSTALLED:
        return
    _INSTALLED.append(True)
    from reconciler.hosts import local, ssh
    from reconciler.record import gitstore

    def wrap_run(cls: Any) -> None:
        original = cls.run

        def run(self: Any, argv: Sequence[str], **kw: Any) -> Any:
            with RECORDER.span("cmd", command_kind(argv), getattr(self, "host", "")):
                return original(self, argv, **kw)

        cls.run = run

    wrap_run(ssh.SSHTransport)
    wrap_run(local.LocalTransport)

    def wrap_git(name: str, kind: str) -> None:
        original = getattr(gitstore.GitStore, name)

        def method(self: Any, *a: Any, **kw: Any) -> Any:
            with RECORDER.span(kind, name):
                return original(self, *a, **kw)

        setattr(gitstore.GitStore, name, method)

    wrap_git("fetch", "fetch")
    wrap_git("_push", "push")
    wrap_agent_ops()


AGENT_OPS = ("install", "restart", "await_ready")
"""FleetAgent methods recorded as `op` spans (per host): where a host's upgrade phases begin
and end, whatever commands each is made of."""


def wrap_agent_ops() -> None:
    from reconciler.hosts.agent import FleetAgent

    def timed(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: Any, host: Any, *a: Any, **kw: Any) -> Any:
            with RECORDER.span("op", name, host.name):
                return original(self, host, *a, **kw)

        return method

    for name in AGENT_OPS:
        setattr(FleetAgent, name, timed(name, getattr(FleetAgent, name)))


def trace(argv: Sequence[str]) -> tuple[int, float, list[Span]]:
    """Run the CLI in this process with timers; (exit code, wall seconds, spans)."""
    time.sleep = _sleep
    install_wrappers()
    from reconciler.cli import main

    RECORDER.spans.clear()
    started = time.perf_counter()
    code = main(list(argv))
    wall = time.perf_counter() - started
    RECORDER.t0 = started
    return code, wall, list(RECORDER.spans)


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def breakdown(wall: float, spans: list[Span]) -> dict[str, Any]:
    """Main-thread wall time split into: sleeping, git, waiting on host commands, the rest.

    Host commands run on pool threads too (observe fans out), so "host commands" is the union
    of every command interval not already counted as a main-thread sleep or git op.
    """
    main = threading.main_thread().name
    sleeps = [(s.start, s.end) for s in spans if s.kind == "sleep" and s.thread == main]
    git = [(s.start, s.end) for s in spans if s.kind in ("fetch", "push")]
    cmds = [(s.start, s.end) for s in spans if s.kind == "cmd"]
    t_sleep = _union(sleeps)
    t_git = _union(git)
    t_cmd_or_more = _union(sleeps + git + cmds)
    t_cmd = t_cmd_or_more - _union(sleeps + git)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        if s.kind == "cmd":
            by_kind[s.what].append(s.seconds)
    sleep_by: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        if s.kind == "sleep" and s.thread == main:
            sleep_by[s.what].append(s.seconds)
    return {
        "wall_s": wall,
        "main_sleep_s": t_sleep,
        "git_s": t_git,
        "git_ops": sum(1 for s in spans if s.kind in ("fetch", "push")),
        "host_commands_s": t_cmd,
        "other_s": wall - t_cmd_or_more,
        "commands": {k: {"n": len(v), "sum_s": sum(v)} for k, v in by_kind.items()},
        "sleeps": {k: {"n": len(v), "sum_s": sum(v)} for k, v in sleep_by.items()},
    }


def print_breakdown(b: dict[str, Any], out: Callable[[str], None] = print) -> None:
    wall = b["wall_s"]
    out("| where the reconciler's wall time went | s | share |")
    out("|---|---:|---:|")
    rows = [
        ("waiting on host commands (any thread)", b["host_commands_s"]),
        ("sleeping (main thread: requeue, polls)", b["main_sleep_s"]),
        (f"git fetch + push ({b['git_ops']} ops)", b["git_s"]),
        ("everything else (Python: load, plan, documents, commits)", b["other_s"]),
    ]
    for label, s in rows:
        out(f"| {label} | {s:.2f} | {100 * s / wall:.0f}% |")
    out(f"| **total** | **{wall:.2f}** | |")
    out("")
    out("| host command | runs | sum s (all threads) | mean ms |")
    out("|---|---:|---:|---:|")
    for kind, v in sorted(b["commands"].items(), key=lambda kv: -kv[1]["sum_s"]):
        out(f"| `{kind}` | {v['n']} | {v['sum_s']:.2f} | {1000 * v['sum_s'] / v['n']:.0f} |")
    if b["sleeps"]:
        out("")
        out("| main-thread sleep | n | sum s |")
        out("|---|---:|---:|")
        for kind, v in sorted(b["sleeps"].items(), key=lambda kv: -kv[1]["sum_s"]):
            out(f"| {kind} | {v['n']} | {v['sum_s']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the spans and breakdown here (JSON)")
    parser.add_argument("cli", nargs=argparse.REMAINDER, help="-- then the reconciler argv")
    args = parser.parse_args(argv)
    cli = args.cli[1:] if args.cli[:1] == ["--"] else args.cli
    code, wall, spans = trace(cli)
    b = breakdown(wall, spans)
    print_breakdown(b)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"breakdown": b, "spans": [asdict(s) for s in spans]}, indent=1)
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
