"""Small helpers the benchmarks share: statistics, results files, machine facts, CPU and RSS
of a child, a py-spy summary, and a spec remote to push hand-written fleets to.

Also runnable: `python bench/benchlib.py selfusage OUT.json -- reconcile --once ...` runs the
reconciler CLI in this process and writes its own CPU time and peak RSS (RUSAGE_SELF, so the
host commands it spawns are not counted) and its children's to OUT.json.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))


# --- statistics -------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def s(seconds: float, digits: int = 2) -> str:
    return f"{seconds:.{digits}f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A markdown table; `align` is one char per column: l (default for the first) or r."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- results and the machine ------------------------------------------------------------------


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, Any]:
    import paramiko
    import pygit2

    mem_kb = 0
    with Path("/proc/meminfo").open() as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = "?"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "paramiko": paramiko.__version__,
        "pygit2": pygit2.__version__,
        "libgit2": pygit2.LIBGIT2_VERSION,
        "openssh": _version(["ssh", "-V"]),
        "node": _version(["node", "--version"]),
        "npm": _version(["npm", "--version"]),
        "git": _version(["git", "--version"]),
    }


def checkout() -> dict[str, Any]:
    """The commit measured, and which product files differed from it (a dirty tree)."""
    head = _version(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "reconciler"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    return {"commit": head, "dirty": [line[3:] for line in dirty if line.strip()]}


class LoadSampler:
    """Samples the machine's 1-minute load average, and whether a test run (`pytest`) not
    started by us is running, every few seconds: numbers taken under someone else's load are
    flagged in the results instead of silently trusted."""

    def __init__(self, every: float = 5.0) -> None:
        import threading

        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            load = float(Path("/proc/loadavg").read_text().split()[0])
            self.samples.append((time.time(), load, _foreign_pytest()))
            self._stop.wait(self._every)

    def summary(self) -> dict[str, Any]:
        loads = [x[1] for x in self.samples]
        busy = [x for x in self.samples if x[2]]
        return {
            "samples": len(loads),
            "loadavg1_median": median(loads) if loads else None,
            "loadavg1_max": max(loads) if loads else None,
            "foreign_pytest_share": len(busy) / len(loads) if loads else None,
        }


def _foreign_pytest() -> bool:
    mine = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"pytest" in cmdline:
            return True
    return False


LOAD: LoadSampler | None = None


def byte_compile() -> bool:
    """Compile the package's bytecode, as `pip install` does, so a timed `python -m reconciler`
    starts like an installed one (an editable checkout under PYTHONDONTWRITEBYTECODE=1, as on
    the CI machines, would otherwise compile its ~40 modules on every start: ~0.1 s). Returns
    whether every module compiled."""
    import compileall

    return bool(compileall.compile_dir(str(BENCH.parent / "reconciler"), quiet=1))


def start_load_sampler() -> LoadSampler:
    global LOAD
    if LOAD is None:
        LOAD = LoadSampler()
    return LOAD


def load_note() -> str:
    """One line on the machine's load during the run (for the printed report)."""
    if LOAD is None or not LOAD.samples:
        return ""
    sm = LOAD.summary()
    note = (
        f"Machine load during the run: 1-min loadavg median {sm['loadavg1_median']:.1f}, "
        f"max {sm['loadavg1_max']:.1f} on {os.cpu_count()} CPUs"
    )
    if sm["foreign_pytest_share"]:
        note += (
            f"; another test run (pytest) was active in {100 * sm['foreign_pytest_share']:.0f}%"
            " of the samples: these figures are perturbed"
        )
    return note + "."


def write_results(name: str, payload: Mapping[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "checkout": checkout(),
        "machine_load": LOAD.summary() if LOAD is not None else None,
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


# --- CPU and memory of a child ----------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and peak RSS (MiB) of one process, and of its children."""

    cpu_s: float
    user_s: float
    sys_s: float
    maxrss_mib: float
    children_cpu_s: float = 0.0

    @classmethod
    def of(cls, self_usage: Any, children: Any | None = None) -> Usage:
        return cls(
            cpu_s=self_usage.ru_utime + self_usage.ru_stime,
            user_s=self_usage.ru_utime,
            sys_s=self_usage.ru_stime,
            maxrss_mib=self_usage.ru_maxrss / 1024,
            children_cpu_s=(children.ru_utime + children.ru_stime) if children else 0.0,
        )


def run_measured(
    cli: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float, Usage]:
    """Run `reconciler <cli>` in a child through `selfusage`; (result, wall s, the child's usage).

    The usage is the reconciler process's own (RUSAGE_SELF inside the child), so commands it
    spawns (local transport) are reported apart, as `children_cpu_s`.
    """
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"selfusage-{os.getpid()}-{time.time_ns()}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "selfusage", str(out), "--", *cli]
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=dict(env or os.environ)
    )
    wall = time.perf_counter() - started
    try:
        data = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    usage = Usage(**data)
    return done, wall, usage


def _selfusage(out: str, cli: list[str]) -> int:
    from reconciler.cli import main

    try:
        code = main(cli)
    finally:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage = Usage.of(me, kids)
        Path(out).write_text(json.dumps(usage.__dict__))
    return code


# --- py-spy -----------------------------------------------------------------------------------


def pyspy_available() -> bool:
    return shutil.which("py-spy") is not None


def pyspy_record(
    argv: Sequence[str], out: Path, *, rate: int = 250, gil: bool = True, timeout: float = 1800
) -> int:
    """Sample `argv` (a Python command) with py-spy into collapsed stacks at `out`.

    With `gil`, only the thread holding the GIL is sampled: where Python spends CPU, across
    all threads, without counting threads that wait."""
    cmd = ["py-spy", "record", "--format", "raw", "--rate", str(rate), "--nonblocking"]
    cmd += ["--gil"] if gil else []
    cmd += ["-o", str(out), "--", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return done.returncode


def summarize_collapsed(
    path: Path, *, top: int = 15, package: str = "reconciler"
) -> dict[str, list[tuple[str, int, float]]]:
    """From py-spy's collapsed stacks:

    * `nearest`: each sample charged to the deepest frame of OUR code on its stack (the
      function of ours that is responsible for the time, library calls beneath included);
      samples with none of our frames are charged to `(startup: imports)` or `(other)`;
    * `inclusive`: our functions present in the most stacks;
    * `self`: the functions on top of the stack, whoever's."""
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    nearest: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [
            f for f in stack.split(";") if not f.startswith(("process ", "thread ")) and f.strip()
        ]
        if not frames:
            continue
        self_counts[_frame_name(frames[-1])] += count
        seen = set()
        deepest = None
        for frame in frames:
            name = _frame_name(frame)
            ours = f"{package}/" in frame or f"{package}." in frame
            if ours:
                deepest = name
                if name not in seen:
                    incl[name] += count
                    seen.add(name)
        if deepest is None or deepest.startswith("<module>"):
            importing = any("_find_and_load" in f or "<module>" in f for f in frames)
            deepest = "(startup: imports)" if importing else "(other)"
        nearest[deepest] += count

    def rows(counter: Counter[str]) -> list[tuple[str, int, float]]:
        return [(name, n, 100 * n / max(total, 1)) for name, n in counter.most_common(top)]

    return {
        "total_samples": [("", total, 100.0)],
        "nearest": rows(nearest),
        "self": rows(self_counts),
        "inclusive": rows(incl),
    }


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`, keeping the package for ours."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    short = "/".join(parts[-2:]) if "reconciler" in parts else parts[-1]
    return f"{func} ({short})"


# --- a spec remote for hand-written fleets ----------------------------------------------------


class SpecRemote:
    """A bare repo on a git daemon plus a work repo that commits files and pushes main."""

    def __init__(self, gitd: Any, name: str, work_dir: Path) -> None:
        import pygit2

        self.path, self.url = gitd.create(name)
        self.work_dir = work_dir
        self.work = pygit2.init_repository(str(work_dir), bare=False, initial_head="main")
        self.work.remotes.create("origin", self.url)

    def commit(self, files: Mapping[str, bytes], message: str) -> str:
        import pygit2

        sig = pygit2.Signature("Operator", "operator@example.com")
        index = self.work.index
        for rel, data in files.items():
            target = self.work_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            index.add(rel)
        index.write()
        tree = index.write_tree()
        parents = [] if self.work.head_is_unborn else [self.work.head.target]
        oid = self.work.create_commit("HEAD", sig, sig, message, tree, parents)
        self.work.remotes["origin"].push(["+refs/heads/main:refs/heads/main"])
        return str(oid)

    def status_commits(self) -> int:
        """Commits on the remote's status branch (0 when it does not exist)."""
        import pygit2

        repo = pygit2.Repository(str(self.path))
        ref = repo.references.get("refs/heads/reconciler/status")
        if ref is None:
            return 0
        return sum(1 for _ in repo.walk(ref.target, pygit2.enums.SortMode.NONE))


def status_commit_count(bare: Path) -> int:
    import pygit2

    repo = pygit2.Repository(str(bare))
    ref = repo.references.get("refs/heads/reconciler/status")
    if ref is None:
        return 0
    return sum(1 for _ in repo.walk(ref.target, pygit2.enums.SortMode.NONE))


def reconciler_commands() -> list[str]:
    """The subcommands this checkout's CLI offers (to detect `run`)."""
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    commands = []
    in_block = False
    for line in done.stdout.splitlines():
        if line.strip() == "COMMAND":
            in_block = True
            continue
        if in_block:
            if not line.startswith("    "):
                if line.strip() and not line.startswith(" "):
                    break
                continue
            word = line.strip().split()[0] if line.strip() else ""
            if word and not line.startswith("      "):
                commands.append(word)
    return commands


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "selfusage" and sys.argv[3] == "--":
        raise SystemExit(_selfusage(sys.argv[2], sys.argv[4:]))
    print("usage: benchlib.py selfusage OUT.json -- <reconciler argv>", file=sys.stderr)
    raise SystemExit(2)
