"""History growth: what each status transition adds to the spec repository, and whether reading
status and running a pass slow down as the status branch grows (target: flat).

Why: the status branch is the flight recorder, one commit per transition, kept forever. A
fleet that rolls out weekly for years accumulates thousands of commits, so its cost must not
grow with them. Measured against a real World (git daemon remote, 3 local hosts with the
stand-in OpenClaw):

1. Bytes per transition: real rollouts (4.2 -> 4.3 -> 4.2) through `reconcile --once`; the
   remote's loose-object size (`git count-objects -v`, as pushed) and its packed size (a copy
   repacked with `git repack -adf`) before and after, divided by the status commits added.
2. Depth: 10,000 more status commits appended straight to the remote with pygit2 (each one
   changes rollout.json's `updatedAt`, like a heartbeat, with the real trailers), then the
   remote repacked as a git server would. Before and after: a cold fetch (a new reconciler's
   first clone), `reconciler.record.status.read_status` (in-process, median of many), the first pass
   after the growth (it fetches the new commits) and steady-state passes (`reconcile --once`).

Run: `python bench/history_growth.py` (--extra 10000 --rollouts 2 --passes 5; prints markdown
tables, writes bench/results/history_growth.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pygit2
from benchlib import (
    load_note,
    median,
    run_measured,
    s,
    start_load_sampler,
    status_commit_count,
    table,
    write_results,
)

from reconciler.sandbox.world import World

VERSIONS = ("2026.4.2", "2026.4.3")
STATUS_REF = "refs/heads/reconciler/status"
ROLLOUT = "fleets/sandbox/rollout.json"
RUN_TIMEOUT_S = 900


def count_objects(repo: Path) -> dict[str, int]:
    out = subprocess.run(
        ["git", "-C", str(repo), "count-objects", "-v"], capture_output=True, text=True, check=True
    ).stdout
    values = dict(line.split(": ") for line in out.splitlines() if ": " in line)
    return {
        "loose_objects": int(values["count"]),
        "loose_bytes": int(values["size"]) * 1024,
        "packed_objects": int(values["in-pack"]),
        "packed_bytes": int(values["size-pack"]) * 1024,
    }


def added_objects(repo: Path, old: str, new: str) -> dict[str, int]:
    """Objects reachable from `new` but not from `old`: count, raw bytes, zlib bytes (loose)."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--objects", new, f"^{old}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = "\n".join(line.split()[0] for line in listing.splitlines() if line.strip()) + "\n"
    sizes = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-check=%(objectsize) %(objectsize:disk)"],
        input=ids,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    raw = [int(x) for x in sizes[0::2]]
    disk = [int(x) for x in sizes[1::2]]
    return {"objects": len(raw), "raw_bytes": sum(raw), "disk_bytes": sum(disk)}


def status_head(repo: Path) -> str:
    head = pygit2.Repository(str(repo)).references[STATUS_REF].target
    return str(head)


def repacked_size(repo: Path, scratch: Path) -> int:
    """Bytes of the repository as one fully repacked pack (on a copy; the original is kept)."""
    copy = scratch / f"copy-{time.time_ns()}.git"
    shutil.copytree(repo, copy)
    try:
        subprocess.run(
            ["git", "-C", str(copy), "repack", "-adf", "-q"], check=True, capture_output=True
        )
        subprocess.run(["git", "-C", str(copy), "prune"], check=True, capture_output=True)
        return count_objects(copy)["packed_bytes"]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def reconcile(world: World, cache: Path) -> None:
    done = subprocess.run(
        world.reconcile_argv(cache=cache), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"reconcile --once exited {done.returncode}:\n{done.stderr[-3000:]}")


# --- synthetic depth ------------------------------------------------------------------------


def _replace(
    repo: pygit2.Repository, tree: pygit2.Tree, parts: list[str], blob: pygit2.Oid
) -> pygit2.Oid:
    builder = repo.TreeBuilder(tree)
    if len(parts) == 1:
        builder.insert(parts[0], blob, pygit2.enums.FileMode.BLOB)
    else:
        sub = tree / parts[0]
        assert isinstance(sub, pygit2.Tree)
        builder.insert(parts[0], _replace(repo, sub, parts[1:], blob), pygit2.enums.FileMode.TREE)
    return builder.write()


def append_heartbeats(bare: Path, count: int) -> float:
    """`count` status commits on top of the status branch, each touching rollout.json."""
    repo = pygit2.Repository(str(bare))
    head = repo.get(repo.references[STATUS_REF].target)
    assert isinstance(head, pygit2.Commit)
    doc = json.loads((head.tree / ROLLOUT).data)
    trailers = dict(
        line.split(": ", 1)
        for line in head.message.partition("\n\n")[2].splitlines()
        if ": " in line
    )
    spec = trailers.get("Spec-Commit", doc.get("specCommit", ""))
    reconciler = trailers.get("Reconciler", "bench:history")
    started = time.perf_counter()
    t0 = int(time.time())
    parent = head
    for i in range(count):
        doc["updatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i)) + ".000+00:00"
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        blob = repo.create_blob(data)
        tree = _replace(repo, parent.tree, ROLLOUT.split("/"), blob)
        sig = pygit2.Signature("openclaw-reconciler", "reconciler@localhost", t0 + i, 0)
        message = (
            f"sandbox: heartbeat {i + 1}\n\nFleet: sandbox\nSpec-Commit: {spec}\n"
            f"Phase: Complete\nReconciler: {reconciler}\n"
        )
        oid = repo.create_commit(None, sig, sig, message, tree, [parent.id])
        parent = repo.get(oid)
    repo.references.create(STATUS_REF, parent.id, force=True)
    return time.perf_counter() - started


# --- measurements ---------------------------------------------------------------------------


def measure(
    world: World, scratch: Path, label: str, passes: int, reads: int, warm_cache: Path
) -> dict[str, Any]:
    """Cold fetch, read_status, first pass with the given cache, steady passes."""
    from reconciler.record.gitstore import GitStore
    from reconciler.record.status import read_status

    depth = status_commit_count(world.remote_path)
    cold = scratch / f"cold-{label}"
    started = time.perf_counter()
    store = GitStore(world.remote, cold / "repo.git")
    store.fetch()
    cold_fetch = time.perf_counter() - started
    samples = []
    for _ in range(reads):
        t = time.perf_counter()
        status = read_status(store, "sandbox")
        samples.append(time.perf_counter() - t)
    assert status.rollout is not None and status.rollout.phase == "Complete", status.rollout
    shutil.rmtree(cold, ignore_errors=True)
    cli = world.reconcile_argv(cache=warm_cache)[3:]
    first_done, first_wall, first_usage = run_measured(cli, timeout=RUN_TIMEOUT_S)
    if first_done.returncode != 0:
        raise RuntimeError(f"first pass failed:\n{first_done.stderr[-2000:]}")
    walls, cpus = [], []
    before = status_commit_count(world.remote_path)
    for _ in range(passes):
        done, wall, usage = run_measured(cli, timeout=RUN_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"pass failed:\n{done.stderr[-2000:]}")
        walls.append(wall)
        cpus.append(usage.cpu_s)
    written = status_commit_count(world.remote_path) - before
    return {
        "status_commits": depth,
        "cold_fetch_s": cold_fetch,
        "read_status_median_s": median(samples),
        "read_status_samples": len(samples),
        "first_pass_s": first_wall,
        "first_pass_cpu_s": first_usage.cpu_s,
        "pass_median_s": median(walls),
        "pass_cpu_median_s": median(cpus),
        "passes": walls,
        "commits_written": written,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=10_000, help="synthetic status commits")
    parser.add_argument("--rollouts", type=int, default=2, help="real rollouts for bytes/commit")
    parser.add_argument("--passes", type=int, default=5, help="steady passes per measurement")
    parser.add_argument("--reads", type=int, default=50, help="read_status calls per measurement")
    args = parser.parse_args(argv)
    start_load_sampler()

    tmp = Path(tempfile.mkdtemp(prefix="history-growth-"))
    world: World | None = None
    result: dict[str, Any] = {}
    try:
        world = World(
            tmp / "world",
            names=("g-1", "g-2", "g-3"),
            transport="local",
            initial=VERSIONS[0],
            steps=(100,),
        )
        cache = tmp / "cache"
        world.bump(VERSIONS[0], message="adopt")
        reconcile(world, cache)
        small = measure(world, tmp, "small", args.passes, args.reads, cache)
        print(
            f"at {small['status_commits']} commits: pass {small['pass_median_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )

        # 1. bytes per real transition
        n0, head0 = status_commit_count(world.remote_path), status_head(world.remote_path)
        packed0 = repacked_size(world.remote_path, tmp)
        for k in range(args.rollouts):
            world.bump(VERSIONS[(k + 1) % 2])
            reconcile(world, cache)
        n1, head1 = status_commit_count(world.remote_path), status_head(world.remote_path)
        packed1 = repacked_size(world.remote_path, tmp)
        added = added_objects(world.remote_path, head0, head1)
        real = {
            "transitions": n1 - n0,
            "objects_per_transition": added["objects"] / max(1, n1 - n0),
            "raw_bytes_per_transition": added["raw_bytes"] / max(1, n1 - n0),
            "loose_bytes_per_transition": added["disk_bytes"] / max(1, n1 - n0),
            "packed_bytes_per_transition": (packed1 - packed0) / max(1, n1 - n0),
        }
        print(f"real transitions: {real}", file=sys.stderr, flush=True)

        # 2. synthetic depth
        before = repacked_size(world.remote_path, tmp)
        head_b = status_head(world.remote_path)
        build_s = append_heartbeats(world.remote_path, args.extra)
        added = added_objects(world.remote_path, head_b, status_head(world.remote_path))
        subprocess.run(["git", "-C", str(world.remote_path), "repack", "-ad", "-q"], check=True)
        after = count_objects(world.remote_path)["packed_bytes"]
        synthetic = {
            "commits": args.extra,
            "build_s": build_s,
            "objects_per_commit": added["objects"] / args.extra,
            "raw_bytes_per_commit": added["raw_bytes"] / args.extra,
            "loose_bytes_per_commit": added["disk_bytes"] / args.extra,
            "packed_bytes_per_commit": (after - before) / args.extra,
            "repo_packed_bytes": after,
        }
        print(f"synthetic: {synthetic}", file=sys.stderr, flush=True)
        big = measure(world, tmp, "big", args.passes, args.reads, cache)
        result = {"real": real, "synthetic": synthetic, "small": small, "big": big}
    finally:
        if world is not None:
            world.close()
        shutil.rmtree(tmp, ignore_errors=True)

    report(result)
    print()
    print(load_note())
    write_results("history_growth", {"config": vars(args), **result})
    return 0


def report(r: dict[str, Any]) -> None:
    real, syn = r["real"], r["synthetic"]
    print(
        table(
            [
                "bytes per status transition",
                "transitions",
                "objects each",
                "raw",
                "zlib (loose, as pushed)",
                "packed (repack -adf)",
            ],
            [
                [
                    "real rollouts (3 hosts)",
                    real["transitions"],
                    s(real["objects_per_transition"], 1),
                    f"{real['raw_bytes_per_transition']:.0f}",
                    f"{real['loose_bytes_per_transition']:.0f}",
                    f"{real['packed_bytes_per_transition']:.0f}",
                ],
                [
                    "heartbeat commits (rollout.json only)",
                    syn["commits"],
                    s(syn["objects_per_commit"], 1),
                    f"{syn['raw_bytes_per_commit']:.0f}",
                    f"{syn['loose_bytes_per_commit']:.0f}",
                    f"{syn['packed_bytes_per_commit']:.0f}",
                ],
            ],
            align="lrrrrr",
        )
    )
    print()
    small, big = r["small"], r["big"]
    rows = [
        [
            "cold fetch (new reconciler's first clone)",
            ms3(small["cold_fetch_s"]),
            ms3(big["cold_fetch_s"]),
        ],
        [
            "`read_status` (median)",
            ms3(small["read_status_median_s"]),
            ms3(big["read_status_median_s"]),
        ],
        [
            "first pass after the growth (fetches it)",
            s(small["first_pass_s"]),
            s(big["first_pass_s"]),
        ],
        ["steady pass, wall (median)", s(small["pass_median_s"]), s(big["pass_median_s"])],
        [
            "steady pass, reconciler CPU (median)",
            s(small["pass_cpu_median_s"]),
            s(big["pass_cpu_median_s"]),
        ],
        ["commits written by the steady passes", small["commits_written"], big["commits_written"]],
    ]
    print(
        table(
            [
                "",
                f"{small['status_commits']} status commits",
                f"{big['status_commits']} status commits",
            ],
            rows,
        )
    )
    print()
    print(
        "Times in seconds; cold fetch and read_status in ms. Repo after growth: "
        f"{syn['repo_packed_bytes'] / 1024 / 1024:.1f} MiB packed; building the "
        f"{syn['commits']} commits took {syn['build_s']:.1f} s."
    )


def ms3(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


if __name__ == "__main__":
    raise SystemExit(main())
