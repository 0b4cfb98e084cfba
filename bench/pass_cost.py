"""Pass cost at scale: one steady-state `reconcile --once` pass over 10, 100, 1000 hosts.

Why: a Complete fleet is still observed on every poll (drift detection), so what a pass costs
when nothing changes decides how big a fleet one reconciler can watch, and how often. Measured
per pass: wall time, the reconciler process's own CPU time and peak RSS (RUSAGE_SELF inside
the child, so the host commands it spawns are reported apart), and the status commits it wrote
(must be 0: a pass that observes nothing new writes nothing).

How the fleets are built (a 2-core machine cannot run 1000 gateways):

* Five real installs (a `World`: verdaccio, the stand-in OpenClaw with its plugins, a running
  gateway each, one sshd each). Spec hosts are spread over them: host k observes install
  k mod 5, with its own name, LB server, connection and transport.
* `ssh` hosts reach their install through extra sshds that serve that install's HOME and PATH
  on several ports (OpenSSH allows up to 16 listeners per sshd; the spec refuses two hosts on
  one endpoint), so every spec host has its own SSH endpoint and connection. `local` hosts run
  the same commands on this machine with that install's HOME and prefix.
* The node side is `real` (npm ls, doctor, health, probes really run: ~1.5 CPU-s per host on
  this machine, all on the same 2 cores) or `canned`: tiny /bin/sh scripts first on the host's
  PATH (`path:` in the spec) replay, byte for byte, what the real `npm`, `node` and `openclaw`
  printed for the same argv on that install (recorded once per install). Canned keeps the
  reconciler's own work and the transports real and takes the product's CPU out.
* The "adopted" state (Complete rollout record, one readiness document per host, exactly what
  a completed adoption leaves) is written with the reconciler's own planner, observer and
  status writer in one commit, instead of running a 1000-step adoption first.

Targets: a 1000-host pass <= 2 s of reconciler CPU and <= 200 MB RSS; observation in parallel,
so wall time does not grow linearly with N over real SSH.

Run: `python bench/pass_cost.py` (--cases ssh:real:10,ssh:canned:10,ssh:canned:50,
local:canned:10,local:canned:100,local:canned:1000 --passes 3; --profile on by default: py-spy
over the largest local pass). Full-product variant: `--cases ssh:real:10,ssh:real:50`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BENCH,
    RESULTS,
    SpecRemote,
    byte_compile,
    load_note,
    median,
    pyspy_available,
    pyspy_record,
    run_measured,
    s,
    start_load_sampler,
    status_commit_count,
    summarize_collapsed,
    table,
    write_results,
)

from reconciler.sandbox.processes import free_port
from reconciler.sandbox.sshfleet import SSHD, FleetHost, _descendants, _listening
from reconciler.sandbox.world import PLUGINS, World

VERSION = "2026.4.2"
INSTALLS = 5
MAX_LISTENERS = 16  # OpenSSH's MAX_LISTEN_SOCKS
PASS_TIMEOUT_S = 3600
CANNED_TOOLS = ("npm", "node", "openclaw")


@dataclass(frozen=True)
class Case:
    transport: str  # ssh | local
    node: str  # real | canned
    n: int

    @property
    def label(self) -> str:
        return f"{self.transport}:{self.node}:{self.n}"

    @classmethod
    def parse(cls, text: str) -> Case:
        transport, node, n = text.split(":")
        if transport not in ("ssh", "local") or node not in ("real", "canned"):
            raise ValueError(f"bad case {text!r}: transport ssh|local, node real|canned")
        return cls(transport, node, int(n))


@dataclass
class PassRun:
    case: str
    index: int
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    maxrss_mib: float
    children_cpu_s: float
    commits_written: int
    exit_code: int


# --- extra sshds: many endpoints onto one install -------------------------------------------


class AliasSSHD:
    """One sshd serving an install's HOME and PATH (its World host's config) on many ports."""

    def __init__(self, host: FleetHost, ports: Sequence[int], workdir: Path) -> None:
        self.host = host
        self.ports = list(ports)
        workdir.mkdir(parents=True, exist_ok=True)
        lines = []
        for line in (host.dir / "sshd_config").read_text().splitlines():
            if line.startswith("Port "):
                lines += [f"Port {p}" for p in self.ports]
            elif line.startswith("PidFile "):
                lines.append(f'PidFile "{workdir / "sshd.pid"}"')
            else:
                lines.append(line)
        config = workdir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        log = (workdir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not all(_listening(p) for p in self.ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"alias sshd for {host.name} did not listen: see {workdir}")
            time.sleep(0.01)

    def close(self) -> None:
        if self.proc.poll() is None:
            tree = _descendants(self.proc.pid)
            for pid in (self.proc.pid, *tree):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- canned node side -----------------------------------------------------------------------

RECORD = """#!/bin/sh
# record mode (bench/pass_cost.py): run the real {tool} and keep what it answered
d={dir}/rec/{tool}.$$
printf '%s' "$*" > "$d.args"
{real} "$@" > "$d.out" 2> "$d.err"
code=$?
echo "$code" > "$d.code"
cat "$d.out"; cat "$d.err" >&2
exit "$code"
"""


def real_binaries(prefix: Path) -> dict[str, str]:
    return {
        "npm": shutil.which("npm") or "/usr/bin/npm",
        "node": shutil.which("node") or "/usr/bin/node",
        "openclaw": str(prefix / "bin" / "openclaw"),
    }


def write_recorders(canned: Path, prefix: Path) -> None:
    (canned / "rec").mkdir(parents=True, exist_ok=True)
    (canned / "bin").mkdir(parents=True, exist_ok=True)
    for tool, real in real_binaries(prefix).items():
        script = canned / "bin" / tool
        script.write_text(
            RECORD.format(tool=tool, dir=shlex.quote(str(canned)), real=shlex.quote(real))
        )
        script.chmod(0o755)


def write_replayers(canned: Path, prefix: Path) -> int:
    """Turn the recordings into `case "$*"` replay scripts; returns how many answers."""
    answers: dict[str, dict[str, tuple[str, str, int]]] = {t: {} for t in CANNED_TOOLS}
    store = canned / "answers"
    store.mkdir(exist_ok=True)
    for args_file in sorted((canned / "rec").glob("*.args")):
        tool = args_file.name.split(".", 1)[0]
        stem = str(args_file)[: -len(".args")]
        key = args_file.read_text()
        if key in answers[tool]:
            continue
        n = len(answers[tool])
        out, err = store / f"{tool}-{n}.out", store / f"{tool}-{n}.err"
        shutil.copy(stem + ".out", out)
        shutil.copy(stem + ".err", err)
        code = int(Path(stem + ".code").read_text().strip() or 0)
        answers[tool][key] = (str(out), str(err), code)
    reals = real_binaries(prefix)
    for tool, table_ in answers.items():
        lines = [
            "#!/bin/sh",
            f"# replay mode (bench/pass_cost.py): recorded answers of {tool}",
            'case "$*" in',
        ]
        for key, (out, err, code) in table_.items():
            if code == 0 and os.path.getsize(err) == 0:
                action = f"exec cat {shlex.quote(out)}"
            else:
                action = f"cat {shlex.quote(out)}; cat {shlex.quote(err)} >&2; exit {code}"
            lines.append(f"  {shlex.quote(key)}) {action} ;;")
        lines += [f'  *) exec {shlex.quote(reals[tool])} "$@" ;;', "esac", ""]
        script = canned / "bin" / tool
        script.write_text("\n".join(lines))
        script.chmod(0o755)
    return sum(len(t) for t in answers.values())


# --- the spec -------------------------------------------------------------------------------


def fleet_yaml(
    world: World, case: Case, endpoints: list[int], lb_file: Path, canned: dict[str, Path]
) -> str:
    assert world.ssh is not None
    rollout = {
        "steps": [100],
        "soak": "0s",
        "drainTimeout": "5s",
        "probeTimeout": "20s",
        "installTimeout": "2m",
        "minFreeDiskMb": 10,
    }
    lines = [
        "apiVersion: reconciler.openclaw.ai/v1",
        "kind: Fleet",
        "name: sandbox",
        "openclaw:",
        f"  version: {VERSION}",
        f"  registry: {world.registry.url}",
        "  plugins:",
        *(f'    "{p}": {VERSION}' for p in PLUGINS),
        "rollout:",
        *(f"  {k}: {json.dumps(v)}" for k, v in rollout.items()),
        "loadBalancer:",
        "  driver: file",
        f"  address: {lb_file}",
        "ssh:",
        "  commandTimeout: 60s",
        f"  keyFile: {world.ssh.client_key}",
        "hosts:",
    ]
    for i in range(case.n):
        install = world.hosts[i % len(world.hosts)]
        role = "canary" if i == 0 else "witness" if i == case.n - 1 and case.n > 1 else "stable"
        lines += [
            f"  - name: {host_name(i)}",
            "    address: 127.0.0.1",
            f"    port: {endpoints[i] if case.transport == 'ssh' else 22}",
            f"    user: {world.ssh.user}",
            f"    role: {role}",
            f"    transport: {case.transport}",
            *([f"    home: {install.home}"] if case.transport == "local" else []),
            f"    npmPrefix: {install.prefix}",
            *([f"    path: [{canned[install.name] / 'bin'}]"] if case.node == "canned" else []),
            "    serviceManager: command",
            "    restartCommand: [openclaw, gateway, restart]",
            "    stopCommand: [openclaw, gateway, stop]",
            "    profiles:",
            f"      - port: {install.gateway_port}",
            "        weight: 100",
        ]
    return "\n".join(lines) + "\n"


def host_name(i: int) -> str:
    return f"p{i + 1:04d}"


def spec_files(world: World, text: str, known_hosts: str | None) -> dict[str, bytes]:
    from ruamel.yaml import YAML

    from reconciler.desired.resolve import resolve_lock
    from reconciler.desired.spec import Fleet

    fleet = Fleet.model_validate(YAML(typ="safe").load(text))
    files = {
        "fleet.yaml": text.encode(),
        "openclaw.lock": resolve_lock(fleet, timeout=30).to_bytes(),
    }
    if known_hosts is not None:
        files["known_hosts"] = known_hosts.encode()
    return files


# --- the adopted state, written in one commit -----------------------------------------------


def write_adopted(remote_url: str, cache: Path, key_file: Path | None) -> float:
    """What a completed adoption leaves on the status branch, from the reconciler's own parts:
    the plan's steps all done, every host Verified, one fresh readiness document per host."""
    from reconciler.desired import source
    from reconciler.desired.validate import load
    from reconciler.hosts.agent import FleetAgent
    from reconciler.lb import from_spec
    from reconciler.record.documents import HostStatus, RolloutRecord
    from reconciler.record.gitstore import GitStore
    from reconciler.record.status import Transition, read_status, write
    from reconciler.rollout import lease, planner
    from reconciler.rollout.steps import Executor

    started = time.perf_counter()
    store = GitStore(remote_url, cache / "adopt.git")
    store.fetch()
    head = store.spec_head()
    assert head is not None
    commit = str(head.id)
    _, files = source.read_commit(store.repo, commit)
    spec = load(files[0])
    plan = planner.plan(spec.fleet, spec.lock, base=None, base_commit=None, head_commit=commit)
    agent = FleetAgent.for_spec(spec, cache_dir=cache, key_file=key_file)
    agent.spec_commit = commit
    lb = from_spec(spec.fleet.load_balancer)
    ex = Executor(
        fleet=spec.fleet,
        lock=spec.lock,
        spec_commit=commit,
        agent=agent,
        lb=lb,
        now=lambda: lease.stamp(datetime.now(UTC)),
    )
    try:
        nodes = ex.observe([h.name for h in spec.fleet.hosts])
    finally:
        agent.close()
    red = [name for name, doc in nodes.items() if not doc.green]
    if red:
        raise RuntimeError(f"hosts not green when adopting: {red[:5]}: {nodes[red[0]].reasons}")
    first = nodes[plan.order[0]]
    subject = f"rollout {commit[:12]} complete: fleet on openclaw {plan.target.get('openclaw')}"
    record = RolloutRecord(
        fleet=spec.fleet.name,
        phase="Complete",
        spec_commit=commit,
        applied_commit=commit,
        target=plan.target,
        plan_sha256=plan.sha256,
        done_steps=[step.id for step in plan.steps],
        hosts={name: HostStatus(phase="Verified") for name in plan.order},
        golden_fingerprint=first.fingerprint,
        message=subject,
        updated_at=lease.stamp(datetime.now(UTC)),
    )
    t = Transition(spec.fleet.name, subject, spec_commit=commit, phase="Complete")
    for doc in nodes.values():
        t.readiness(doc)
    t.put("rollout.json", record)
    status = read_status(store, spec.fleet.name)
    if write(store, status, t, force=True) is None:
        raise RuntimeError("adoption commit was empty")
    return time.perf_counter() - started


# --- one case -------------------------------------------------------------------------------


def run_case(
    world: World,
    tmp: Path,
    case: Case,
    passes: int,
    canned: dict[str, Path],
    profile_out: Path | None,
) -> tuple[list[PassRun], dict[str, Any]]:
    assert world.ssh is not None and world.gitd is not None
    work = tmp / case.label.replace(":", "-")
    work.mkdir(parents=True)
    aliases: list[AliasSSHD] = []
    endpoints: list[int] = []
    known_hosts = None
    info: dict[str, Any] = {}
    try:
        if case.transport == "ssh":
            ports: dict[str, list[int]] = {h.name: [] for h in world.ssh.hosts}
            for i in range(case.n):
                port = free_port()
                endpoints.append(port)
                ports[world.ssh.hosts[i % INSTALLS].name].append(port)
            lines = []
            for host in world.ssh.hosts:
                mine = ports[host.name]
                for j in range(0, len(mine), MAX_LISTENERS):
                    chunk = mine[j : j + MAX_LISTENERS]
                    aliases.append(AliasSSHD(host, chunk, work / f"sshd-{host.name}-{j}"))
                lines += [f"[127.0.0.1]:{p} {host.public_key()}\n" for p in mine]
            known_hosts = "".join(lines)
            info["sshds"] = len(aliases)
        lb_file = work / "lb.json"
        lb_file.write_text(json.dumps({"servers": {host_name(i): 100 for i in range(case.n)}}))
        remote = SpecRemote(world.gitd, f"pass-{case.label.replace(':', '-')}", work / "spec")
        text = fleet_yaml(world, case, endpoints, lb_file, canned)
        remote.commit(spec_files(world, text, known_hosts), f"{case.n} hosts on {VERSION}")
        info["adopt_s"] = write_adopted(remote.url, work / "adopt", world.ssh.client_key)
        cli = [
            "reconcile",
            "--once",
            "--remote",
            remote.url,
            "--fleet",
            "sandbox",
            "--cache",
            str(work / "cache"),
        ]
        runs = []
        for k in range(passes):
            before = status_commit_count(remote.path)
            done, wall, usage = run_measured(cli, timeout=PASS_TIMEOUT_S)
            written = status_commit_count(remote.path) - before
            if done.returncode != 0:
                raise RuntimeError(
                    f"{case.label}: pass exited {done.returncode}:\n{done.stderr[-2000:]}"
                )
            runs.append(
                PassRun(
                    case.label,
                    k + 1,
                    wall,
                    usage.cpu_s,
                    usage.user_s,
                    usage.sys_s,
                    usage.maxrss_mib,
                    usage.children_cpu_s,
                    written,
                    done.returncode,
                )
            )
            print(
                f"{case.label} pass {k + 1}: {wall:.2f} s wall, {usage.cpu_s:.2f} s CPU, "
                f"{usage.maxrss_mib:.0f} MiB, {written} commits",
                file=sys.stderr,
                flush=True,
            )
        if profile_out is not None:
            info["profile"] = profile_pass(cli, profile_out)
        return runs, info
    finally:
        for alias in aliases:
            alias.close()


def profile_pass(cli: list[str], out: Path) -> dict[str, Any]:
    """py-spy over one more pass (all threads, active samples only)."""
    usage_file = out.with_suffix(".usage.json")
    argv = [sys.executable, str(BENCH / "benchlib.py"), "selfusage", str(usage_file), "--", *cli]
    code = pyspy_record(argv, out)
    usage_file.unlink(missing_ok=True)
    if code != 0 or not out.exists():
        return {"error": f"py-spy exited {code}"}
    summary = summarize_collapsed(out, top=20)
    return {"collapsed": str(out), **{k: v for k, v in summary.items()}}


def record_canned(world: World, tmp: Path) -> dict[str, Path]:
    """Per install: record the real answers to one full observation and one steady pass, then
    write replayers."""
    canned = {h.name: tmp / "canned" / h.name for h in world.hosts}
    for host in world.hosts:
        write_recorders(canned[host.name], host.prefix)
    # One real observation of each install through the recorders (local transport).
    case = Case("local", "canned", INSTALLS)
    work = tmp / "record"
    work.mkdir()
    lb_file = work / "lb.json"
    lb_file.write_text(json.dumps({"servers": {host_name(i): 100 for i in range(INSTALLS)}}))
    assert world.gitd is not None and world.ssh is not None
    remote = SpecRemote(world.gitd, "pass-record", work / "spec")
    remote.commit(spec_files(world, fleet_yaml(world, case, [], lb_file, canned), None), "record")
    # Observe twice: the second pass sees the same state (an adoption observes more than once).
    for k in range(2):
        write_adopted(remote.url, work / f"adopt-{k}", world.ssh.client_key)
    # Then one steady pass, for what it reads that an observation does not (the tree alone).
    cli = ["reconcile", "--once", "--remote", remote.url, "--fleet", "sandbox"]
    done, _, _ = run_measured([*cli, "--cache", str(work / "cache")], timeout=PASS_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"recording pass exited {done.returncode}:\n{done.stderr[-2000:]}")
    answers = {
        name: write_replayers(path, world.host(name).prefix) for name, path in canned.items()
    }
    print(f"canned answers recorded: {answers}", file=sys.stderr)
    return canned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default="ssh:real:10,ssh:canned:10,ssh:canned:50,local:canned:10,local:canned:100,"
        "local:canned:1000",
        help="transport:node:N, comma separated (transport ssh|local, node real|canned)",
    )
    parser.add_argument("--passes", type=int, default=3, help="steady-state passes per case")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile",
        choices=("largest", "none"),
        default="largest",
        help="py-spy over one more pass of the largest local case",
    )
    args = parser.parse_args(argv)
    start_load_sampler()
    byte_compile()  # the reconciler as installed (see benchlib.byte_compile)
    cases = [Case.parse(c) for c in args.cases.split(",")]
    locals_ = [c for c in cases if c.transport == "local"]
    profile_case = max(locals_, key=lambda c: c.n) if locals_ and args.profile != "none" else None
    if profile_case is not None and not pyspy_available():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        profile_case = None

    tmp = Path(tempfile.mkdtemp(prefix="pass-cost-"))
    all_runs: list[PassRun] = []
    infos: dict[str, Any] = {}
    world: World | None = None
    try:
        world = World(
            tmp / "world",
            names=[f"i{k + 1}" for k in range(INSTALLS)],
            initial=VERSION,
            steps=(100,),
        )
        canned = record_canned(world, tmp) if any(c.node == "canned" for c in cases) else {}
        for case in cases:
            out = RESULTS / "pass_cost.pyspy.txt" if case == profile_case else None
            if out is not None:
                RESULTS.mkdir(parents=True, exist_ok=True)
            runs, info = run_case(world, tmp, case, args.passes, canned, out)
            all_runs += runs
            infos[case.label] = info
    finally:
        if world is not None:
            world.close()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = report(cases, all_runs, infos)
    print()
    print(load_note())
    write_results(
        "pass_cost",
        {
            "config": {
                "cases": [c.label for c in cases],
                "passes": args.passes,
                "installs": INSTALLS,
                "version": VERSION,
            },
            "runs": [asdict(r) for r in all_runs],
            "cases": infos,
            "summary": summary,
        },
    )
    return 0


def report(cases: list[Case], runs: list[PassRun], infos: dict[str, Any]) -> dict[str, Any]:
    rows, summary = [], {}
    for case in cases:
        mine = [r for r in runs if r.case == case.label]
        row = {
            "wall_s": median([r.wall_s for r in mine]),
            "cpu_s": median([r.cpu_s for r in mine]),
            "maxrss_mib": max(r.maxrss_mib for r in mine),
            "children_cpu_s": median([r.children_cpu_s for r in mine]),
            "commits_written": sum(r.commits_written for r in mine),
        }
        summary[case.label] = row
        rows.append(
            [
                case.transport,
                case.node,
                case.n,
                len(mine),
                s(row["wall_s"]),
                s(row["cpu_s"]),
                f"{row['maxrss_mib']:.0f}",
                s(row["children_cpu_s"]) if case.transport == "local" else "(remote)",
                row["commits_written"],
            ]
        )
    print(
        table(
            [
                "transport",
                "node side",
                "hosts",
                "passes",
                "wall s (median)",
                "reconciler CPU s",
                "peak RSS MiB",
                "host cmds CPU s",
                "commits",
            ],
            rows,
            align="lllrrrrrr",
        )
    )
    big = [c for c in cases if c.transport == "local" and c.n >= 1000]
    if big:
        row = summary[big[0].label]
        print()
        print(
            f"Targets at {big[0].n} hosts: CPU {row['cpu_s']:.2f} s (<= 2 s: "
            f"{'met' if row['cpu_s'] <= 2 else 'MISSED'}), RSS {row['maxrss_mib']:.0f} MiB "
            f"(<= 200 MB: {'met' if row['maxrss_mib'] * 1.048576 <= 200 else 'MISSED'})."
        )
    for label, info in infos.items():
        prof = info.get("profile")
        if not prof or "self" not in prof:
            continue
        total = prof["total_samples"][0][1]
        print()
        print(
            f"py-spy --gil over one more `{label}` pass ({total} samples of the thread holding "
            "the GIL, i.e. where the reconciler's Python CPU goes; 250 Hz):"
        )
        print()
        rows = [[f"`{n}`", c, f"{p:.0f}"] for n, c, p in prof["nearest"]]
        print(table(["charged to our deepest frame", "samples", "%"], rows))
        print()
        rows = [[f"`{n}`", c, f"{p:.0f}"] for n, c, p in prof["inclusive"]]
        print(table(["our function (inclusive)", "samples", "%"], rows))
        print()
        rows = [[f"`{n}`", c, f"{p:.0f}"] for n, c, p in prof["self"]]
        print(table(["on top of the stack (self)", "samples", "%"], rows))
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
