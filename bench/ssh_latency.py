"""How much one SSH command costs, and how observing a fleet scales with a thread pool.

Why: the reconciler observes every host on every tick (npm ls, doctor, readiness) and gates
ramps on what it saw, so the per-command cost and the connection policy decide how big a fleet
one reconciler can watch. This measures, against real sshds on loopback:

1. `true` on one reused connection (the transport's normal path) vs a fresh connection per
   command (what a naive "ssh host cmd" per call costs);
2. the wall time of observing N hosts in parallel (3 commands each) from a thread pool, cold
   (connections opened as part of the round) and warm (connections reused). Many "hosts" share
   a few sshds, each host with its own transport and connection.

Run: `python bench/ssh_latency.py` (starts and stops its own sshds; prints a markdown table).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.hosts.ssh import SSHTransport
from reconciler.sandbox.sshfleet import SSHFleet


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def observe(transport: SSHTransport) -> None:
    """A stand-in for one host's observation: a few small commands and a file read."""
    transport.run(["uname", "-sr"], timeout=30)
    transport.run(["printenv", "HOME"], timeout=30)
    transport.read_file("/etc/os-release")


def bench_reused(fleet: SSHFleet, repeat: int) -> list[float]:
    with fleet[0].transport() as transport:
        transport.run(["true"], timeout=30)  # connect outside the measurement
        return timed(lambda: transport.run(["true"], timeout=30), repeat)


def bench_fresh(fleet: SSHFleet, repeat: int) -> list[float]:
    def once() -> None:
        with fleet[0].transport() as transport:
            transport.run(["true"], timeout=30)

    return timed(once, repeat)


def bench_fleet(fleet: SSHFleet, n_hosts: int, workers: int) -> tuple[float, float]:
    """(cold, warm) wall seconds to observe n_hosts once each with `workers` threads."""
    transports = [
        fleet[i % len(fleet)].transport(name=f"bench-{i:03d}", connect_timeout=30)
        for i in range(n_hosts)
    ]
    try:
        with ThreadPoolExecutor(max_workers=min(workers, n_hosts)) as pool:
            rounds = []
            for _ in range(2):
                started = time.perf_counter()
                list(pool.map(observe, transports))
                rounds.append(time.perf_counter() - started)
        assert all(t.connect_count == 1 for t in transports)
        return rounds[0], rounds[1]
    finally:
        for transport in transports:
            transport.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,10,50", help="fleet sizes, comma separated")
    parser.add_argument("--sshds", type=int, default=5, help="real sshds the hosts share")
    parser.add_argument("--workers", type=int, default=16, help="thread pool size")
    parser.add_argument("--repeat", type=int, default=200, help="commands per latency series")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.hosts.split(",")]

    with (
        tempfile.TemporaryDirectory(prefix="ssh-latency-") as tmp,
        SSHFleet(Path(tmp), args.sshds) as fleet,
    ):
        reused = bench_reused(fleet, args.repeat)
        fresh = bench_fresh(fleet, max(20, args.repeat // 5))
        scaling = {n: bench_fleet(fleet, n, args.workers) for n in sizes}

    print("| `true` over SSH | runs | median ms | p95 ms |")
    print("|---|---:|---:|---:|")
    for label, samples in (("reused connection", reused), ("fresh connection", fresh)):
        row = [
            label,
            str(len(samples)),
            ms(statistics.median(samples)),
            ms(percentile(samples, 0.95)),
        ]
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"| hosts observed in parallel ({args.workers} threads, {args.sshds} sshds) "
        "| cold ms (connect + observe) | warm ms (reused) |"
    )
    print("|---:|---:|---:|")
    for n, (cold, warm) in scaling.items():
        print(f"| {n} | {ms(cold)} | {ms(warm)} |")
    print()
    print("observe = `uname -sr` + `printenv HOME` + read_file(/etc/os-release) per host")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
