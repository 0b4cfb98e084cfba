"""Rollout overhead: the reconciler against the floor (a plain SSH loop) and against Ansible.

Why: we claim the reconciler adds almost nothing to the time a rolling upgrade must take.
The same upgrade (openclaw core + 2 plugins, steps [100], no soak) of the same kind of fleet
(N real sshd hosts from `World`, the stand-in OpenClaw from a local verdaccio, a weights-file
LB) is done three ways, alternating within each round:

(a) `python -m reconciler reconcile --once` (a subprocess, timed from start to exit);
(b) the floor: the same node-side commands in the same order from this script over ONE
    persistent paramiko connection per host, nothing else: drain (write the weights file),
    `npm install -g` core, then each plugin the product's way (`openclaw plugins install
    npm:<name>@<version> --pin --force`: the product loads only such tracked installs),
    `openclaw gateway restart`, poll
    /readyz from the host (`node -e`, every 0.2 s), restore the weight. No gates, no git;
(c) Ansible (ansible-core in bench/.venv-ansible): `serial: 1`, the same commands as tasks,
    drain and restore delegated to localhost, ControlPersist + pipelining (its fast settings).

Each way has its own World (same shape, one shared registry), so every run in a round does
exactly the same upgrade; the direction alternates between rounds (4.2 -> 4.3, 4.3 -> 4.2, ...)
so every run does real work. The harness slows the stand-in down like a real product through
its faults: `install_delay_s` (openclaw's postinstall sleeps) and `ready_delay_s` (/readyz
answers 503 that long after a (re)start).

Targets: reconciler <= 1.10 x floor, and faster than Ansible. When the first is missed (or
with --profile always) one more reconciler rollout runs under bench/trace_reconcile.py, which
says where its wall time went.

Run: `python bench/rollout_overhead.py` (--rounds 5 --hosts 5 --install-delay 2 --ready-delay 1;
prints markdown tables, writes bench/results/rollout_overhead.json).

`--real`: the same comparison on the released product (`RealWorld`: real sshd hosts, Node 26,
the real `openclaw`, a gateway under `~/bin/openclaw-service`, token auth, HAProxy), reconciler
against the floor only (Ansible is skipped: its numbers would say nothing new about the
product, and each run costs minutes). Per host it reports the seconds of the install, of the
restart until /readyz answers 200, and of `openclaw doctor --json`, and the reconciler's own
overhead: (its wall - the floor's) / hosts.

* Forward only, 2026.9.5 -> 2026.9.6, on a FRESH world per way per round (built at 2026.9.5,
  not timed). A downgrade is not a plain reinstall on the real product (an older binary
  refuses a config a newer one wrote), so directions cannot alternate; and 9.4 -> 9.5 then
  9.5 -> 9.6 would compare two different upgrades. A fresh world makes every run the same one.
* Only the core moves: the spec lists NO plugins (`plugins: {}`). The hosts keep
  `@openclaw/discord` 2026.9.5 as the product installed it (a tracked install under
  ~/.openclaw/npm); the reconciler does not yet manage plugins the product's way, and a pinned
  plugin in the spec would make it reinstall one with npm, work the floor does not do.
* (a) the reconciler: the fleet adopted first (`--once` at 2026.9.5, not timed), the bump
  pushed (not timed), then `reconcile --once` timed, run under bench/trace_reconcile.py so its
  phases per host are read from the trace (FleetAgent.install/restart/await_ready and the host
  commands); the tracer only records timestamps.
* (b) the floor: per host, one paramiko connection: drain (HAProxy weight 0, runtime API),
  `npm install -g --prefix P --registry R` with the reconciler's flags, `openclaw-service
  restart`, one `node -e` on the host polling /readyz every 20 ms until 200 (as the
  reconciler's wait does), `openclaw doctor --json`, weight back.

Run: `python bench/rollout_overhead.py --real` (--hosts 2 --rounds 1; about 10 min a round;
writes bench/results/rollout_overhead_real.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import paramiko
from benchlib import (
    BENCH,
    RESULTS,
    byte_compile,
    load_note,
    median,
    s,
    start_load_sampler,
    table,
    write_results,
)
from trace_reconcile import print_breakdown

from reconciler.hosts.operations import READY_POLL_S
from reconciler.lb.file import WeightsFile
from reconciler.sandbox.catalog import publish_standard_catalog
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import PLUGINS, World, WorldHost, product_version

VERSIONS = ("2026.4.2", "2026.4.3")
WAYS = ("reconciler", "floor", "ansible")
RUN_TIMEOUT_S = 1800
READY_TIMEOUT_S = 120
ANSIBLE_VENV = BENCH / ".venv-ansible"
ANSIBLE_PLAYBOOK = ANSIBLE_VENV / "bin" / "ansible-playbook"
PACKAGE_LISTS = Path("/work/.library/env/packages")

# Exit 0 iff GET /readyz on the gateway's loopback port answers 200 (argv[1] = port).
READY_JS = (
    "const r=require('http').get({host:'127.0.0.1',port:+process.argv[1],path:'/readyz',"
    "timeout:2000},(s)=>{s.resume();process.exit(s.statusCode===200?0:1)});"
    "r.on('error',()=>process.exit(1));r.on('timeout',()=>process.exit(1));"
)


@dataclass
class Run:
    round: int
    way: str
    source: str
    target: str
    wall_s: float
    cpu_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def q(text: str) -> str:
    """Single-quote for a POSIX shell."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- checking that a run really did the upgrade ---------------------------------------------


def installed_version(host: WorldHost, package: str) -> str | None:
    """The core from the prefix, a plugin as the product lists it (its tracked install)."""
    return product_version(host, package)


def running_version(host: WorldHost) -> str | None:
    url = f"http://127.0.0.1:{host.gateway_port}/startupz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(json.loads(answer.read()).get("version"))
    except OSError:
        return None


def verify(
    world: World, version: str, way: str, packages: tuple[str, ...] = ("openclaw", *PLUGINS)
) -> None:
    wrong = []
    for host in world.hosts:
        for package in packages:
            got = installed_version(host, package)
            if got != version:
                wrong.append(f"{host.name}: {package} is {got}")
        if running_version(host) != version:
            wrong.append(f"{host.name}: gateway runs {running_version(host)}")
    weights = world.weights()
    wrong += [
        f"{h.name}: weight {weights.get(h.server)}"
        for h in world.hosts
        if weights.get(h.server) != h.weight
    ]
    if wrong:
        raise RuntimeError(f"{way} did not converge to {version}: " + "; ".join(wrong))


# --- (a) the reconciler ---------------------------------------------------------------------


def run_reconciler(world: World, version: str) -> tuple[float, float, dict[str, Any]]:
    world.bump(version)  # the operator's push: not part of the rollout's time
    before = child_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        world.reconcile_argv(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"reconcile --once exited {done.returncode}:\n{done.stderr[-3000:]}")
    steps = sum(1 for line in done.stderr.splitlines() if line.startswith("Progressing"))
    return wall, child_cpu() - before, {"passes_reported": steps}


# --- (b) the floor --------------------------------------------------------------------------


class FloorHost:
    """One persistent paramiko connection to one host; commands as plain shell strings."""

    def __init__(self, world: World, host: WorldHost) -> None:
        assert world.ssh is not None and host.ssh_port is not None
        sock = socket.create_connection(("127.0.0.1", host.ssh_port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(world.ssh.known_hosts))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.client.connect(
            "127.0.0.1",
            port=host.ssh_port,
            username=world.ssh.user,
            key_filename=str(world.ssh.client_key),
            sock=sock,
            allow_agent=False,
            look_for_keys=False,
        )
        self.name = host.name

    def sh(self, command: str, timeout: float = 300) -> tuple[int, bytes, bytes]:
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out, err = stdout.read(), stderr.read()
        return stdout.channel.recv_exit_status(), out, err

    def check(self, command: str, timeout: float = 300) -> None:
        code, _, err = self.sh(command, timeout)
        if code != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited {code}: {err.decode()[-1500:]}")

    def close(self) -> None:
        self.client.close()


def run_floor(world: World, version: str) -> tuple[float, float, dict[str, Any]]:
    lb = WeightsFile(world.lb_file)
    registry = world.registry.url
    phases = dict.fromkeys(
        ("connect", "drain", "install core", "install plugins", "restart", "wait ready", "restore"),
        0.0,
    )
    clients: list[FloorHost] = []

    def timed(phase: str, started: float) -> float:
        now = time.perf_counter()
        phases[phase] += now - started
        return now

    started = time.perf_counter()
    try:
        for host in world.hosts:
            t = time.perf_counter()
            client = FloorHost(world, host)
            clients.append(client)
            t = timed("connect", t)
            lb.set_weight(host.server, 0)
            t = timed("drain", t)
            flags = (
                f"--prefix {q(str(host.prefix))} --registry {q(registry)} --no-audit "
                "--no-fund --allow-scripts=openclaw --engine-strict"
            )
            client.check(f"npm install -g {flags} openclaw@{version}")
            t = timed("install core", t)
            for name in PLUGINS:  # the product's way: tracked installs, which it loads
                client.check(
                    f"npm_config_registry={q(registry)} openclaw plugins install "
                    f"npm:{name}@{version} --pin --force"
                )
            t = timed("install plugins", t)
            client.check(f"OPENCLAW_GATEWAY_PORT={host.gateway_port} openclaw gateway restart")
            t = timed("restart", t)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while client.sh(f"node -e {q(READY_JS)} {host.gateway_port}")[0] != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{host.name}: not ready after {READY_TIMEOUT_S}s")
                time.sleep(READY_POLL_S)
            t = timed("wait ready", t)
            lb.set_weight(host.server, host.weight)
            timed("restore", t)
    finally:
        for client in clients:
            client.close()
    wall = time.perf_counter() - started
    return wall, 0.0, {"phases_s": {k: round(v, 3) for k, v in phases.items()}}


# --- (c) Ansible ----------------------------------------------------------------------------


def ensure_ansible() -> tuple[Path | None, str]:
    """ansible-playbook from bench/.venv-ansible, installing ansible-core there if needed."""
    if ANSIBLE_PLAYBOOK.exists():
        return ANSIBLE_PLAYBOOK, "bench/.venv-ansible"
    listed = False
    if PACKAGE_LISTS.is_dir():
        grep = subprocess.run(
            ["grep", "-rqiE", r"^ansible-core\s", str(PACKAGE_LISTS)], check=False
        )
        listed = grep.returncode == 0
        if not listed:
            return None, "ansible-core is not in the package lists of this machine"
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(ANSIBLE_VENV)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        tail = detail.decode(errors="replace")[-500:] if isinstance(detail, bytes) else detail
        return None, f"pip install ansible-core failed: {exc} {tail}"
    if not ANSIBLE_PLAYBOOK.exists():
        return None, "ansible-core installed but ansible-playbook is missing"
    return ANSIBLE_PLAYBOOK, "installed into bench/.venv-ansible"


PLAYBOOK = """\
- name: rolling upgrade, one host at a time
  hosts: fleet
  serial: 1
  gather_facts: false
  vars:
    plugins: PLUGINS_JSON
    plugin_specs: "{{ plugins | map('regex_replace', '$', '@' ~ version) | list }}"
    lb_cmd: ["{{ lb_python }}", "{{ lb_helper }}", "{{ lb_file }}", "{{ inventory_hostname }}"]
    npm_flags: ["--prefix", "{{ prefix }}", "--registry", "{{ registry }}", "--no-audit",
                "--no-fund", "--allow-scripts=openclaw", "--engine-strict"]
  tasks:
    - name: drain
      ansible.builtin.command:
        argv: "{{ lb_cmd + ['0'] }}"
      delegate_to: localhost
    - name: install core
      ansible.builtin.command:
        argv: "{{ ['npm', 'install', '-g'] + npm_flags + ['openclaw@' ~ version] }}"
    - name: install plugins (the product's way)
      ansible.builtin.command:
        argv: [openclaw, plugins, install, "npm:{{ item }}", --pin, --force]
      environment:
        npm_config_registry: "{{ registry }}"
      loop: "{{ plugin_specs }}"
    - name: restart
      ansible.builtin.command:
        argv: [openclaw, gateway, restart]
      environment:
        OPENCLAW_GATEWAY_PORT: "{{ gateway_port }}"
    - name: wait until /readyz answers 200
      ansible.builtin.uri:
        url: "http://127.0.0.1:{{ gateway_port }}/readyz"
        status_code: 200
      register: ready
      until: ready.status == 200
      retries: 600
      delay: 0.2
    - name: restore weight
      ansible.builtin.command:
        argv: "{{ lb_cmd + [weight | string] }}"
      delegate_to: localhost
"""


class Ansible:
    """Inventory, config and playbook for one World; `run(version)` upgrades it."""

    def __init__(self, playbook_bin: Path, world: World, work: Path) -> None:
        assert world.ssh is not None
        self.bin = playbook_bin
        self.world = world
        self.work = work
        self.control = work / "cp"
        self.control.mkdir(parents=True, exist_ok=True)
        self.log = work / "ansible.log"
        plugins = json.dumps(list(PLUGINS))
        lines = ["[fleet]"]
        lines += [
            f"{h.name} ansible_host=127.0.0.1 ansible_port={h.ssh_port} prefix={h.prefix} "
            f"gateway_port={h.gateway_port} weight={h.weight}"
            for h in world.hosts
        ]
        lines += [
            "",
            "[fleet:vars]",
            f"ansible_user={world.ssh.user}",
            f"ansible_ssh_private_key_file={world.ssh.client_key}",
            "ansible_python_interpreter=/usr/bin/python3",
            f"registry={world.registry.url}",
            f"lb_python={sys.executable}",
            f"lb_helper={BENCH / 'lb_weight.py'}",
            f"lb_file={world.lb_file}",
        ]
        (work / "inventory.ini").write_text("\n".join(lines) + "\n")
        ssh_args = (
            "-o ControlMaster=auto -o ControlPersist=60s -o BatchMode=yes -o IdentitiesOnly=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={world.ssh.known_hosts} "
            "-o GlobalKnownHostsFile=/dev/null"
        )
        (work / "ansible.cfg").write_text(
            "[defaults]\n"
            f"inventory = {work / 'inventory.ini'}\n"
            "host_key_checking = True\n"
            "gathering = explicit\n"
            "retry_files_enabled = False\n"
            "interpreter_python = /usr/bin/python3\n"
            "forks = 5\n"
            "\n[ssh_connection]\n"
            "pipelining = True\n"
            f"ssh_args = {ssh_args}\n"
            f"control_path_dir = {self.control}\n"
        )
        (work / "playbook.yml").write_text(PLAYBOOK.replace("PLUGINS_JSON", plugins))
        (work / "home").mkdir(exist_ok=True)

    def run(self, version: str) -> tuple[float, float, dict[str, Any]]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.work / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.work / "home"),
            "ANSIBLE_NOCOLOR": "1",
        }
        argv = [str(self.bin), str(self.work / "playbook.yml"), "-e", f"version={version}"]
        before = child_cpu()
        started = time.perf_counter()
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=self.work
        )
        wall = time.perf_counter() - started
        cpu = child_cpu() - before
        with self.log.open("a") as log:
            log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"ansible-playbook exited {done.returncode}:\n{done.stdout[-3000:]}")
        retries = done.stdout.count("FAILED - RETRYING")
        return wall, cpu, {"ready_retries": retries}

    def close(self) -> None:
        """Stop the ControlPersist masters this run left (by their control sockets)."""
        for sock in self.control.glob("*"):
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "placeholder"],
                capture_output=True,
                timeout=10,
                check=False,
            )


# --- --real: the released product ----------------------------------------------------------

REAL_WAYS = ("reconciler", "floor")
REAL_SOURCE, REAL_TARGET = "2026.9.5", "2026.9.6"
REAL_PHASES = ("install", "restart to ready", "doctor")
REAL_READY_TIMEOUT_S = 300
NPM_FLAGS = "--no-audit --no-fund --allow-scripts=openclaw --engine-strict"  # the reconciler's

# Exit 0 once GET /readyz on the loopback port argv[1] answers 200, polling every 20 ms (as the
# reconciler's readiness wait does on the host); exit 1 after argv[2] ms.
READY_WAIT_JS = (
    "const [port,ms]=process.argv.slice(1).map(Number);const end=Date.now()+ms;"
    "const again=()=>{if(Date.now()>end)process.exit(1);setTimeout(poll,20)};"
    "const poll=()=>{const r=require('http').get({host:'127.0.0.1',port,path:'/readyz',"
    "timeout:2000},(s)=>{s.resume();if(s.statusCode===200)process.exit(0);again()});"
    "r.on('error',again);r.on('timeout',()=>r.destroy())};poll();"
)


class Laps:
    """Seconds between successive `lap(name)` calls, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def real_world(root: Path, way: str, hosts: int) -> Any:
    """A fresh RealWorld at REAL_SOURCE: `hosts` real sshds, the plugin installed the product's
    way, gateways ready behind HAProxy (minutes; not measured)."""
    from reconciler.sandbox.realworld import RealWorld

    prefix = {"reconciler": "rc", "floor": "fl"}[way]
    names = [f"{prefix}-{i + 1}" for i in range(hosts)]
    return RealWorld(root, initial=REAL_SOURCE, names=names, steps=(100,))


def real_reconcile(argv: list[str], what: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return wall


def run_reconciler_real(world: World, trace_out: Path) -> tuple[float, float, dict[str, Any]]:
    """Adopt the fleet (not timed), push the bump (not timed), then one traced `--once`."""
    world.bump(REAL_SOURCE, {}, message=f"fleet on {REAL_SOURCE}")
    real_reconcile(world.reconcile_argv(), "adoption")
    world.bump(REAL_TARGET, {}, message=f"openclaw {REAL_TARGET}")
    cli = world.reconcile_argv()[3:]  # drop `python -m reconciler`
    argv = [sys.executable, str(BENCH / "trace_reconcile.py"), "--out", str(trace_out), "--"]
    before = child_cpu()
    wall = real_reconcile([*argv, *cli], "traced reconcile --once")
    trace = json.loads(trace_out.read_text())
    hosts = {h.name: traced_phases(trace["spans"], h.name) for h in world.hosts}
    detail = {"hosts": hosts, "breakdown": trace["breakdown"]}
    return wall, child_cpu() - before, detail


def traced_phases(spans: list[dict[str, Any]], host: str) -> dict[str, float]:
    """One host's phases from the reconciler's trace: its `npm install` of the core, restart
    (FleetAgent.restart starts) to ready (the last FleetAgent.await_ready ends), and the
    `openclaw doctor --json` run after the restart (it runs while the gateway starts)."""
    mine = [x for x in spans if x["host"] == host]

    def of(kind: str, what: str) -> list[dict[str, Any]]:
        return [x for x in mine if x["kind"] == kind and x["what"] == what]

    restart = min(x["start"] for x in of("op", "restart"))
    doctors = [x for x in of("cmd", "openclaw doctor") if x["start"] >= restart]
    return {
        "install": round(sum(x["end"] - x["start"] for x in of("cmd", "npm install core")), 3),
        "restart to ready": round(max(x["end"] for x in of("op", "await_ready")) - restart, 3),
        "doctor": round(doctors[0]["end"] - doctors[0]["start"], 3),
        "doctor runs": len(of("cmd", "openclaw doctor")),
    }


def run_floor_real(world: World) -> tuple[float, float, dict[str, Any]]:
    """The floor on the real product: per host, one paramiko connection and nothing else."""
    started = time.perf_counter()
    hosts = {host.name: floor_host_real(world, host) for host in world.hosts}
    return time.perf_counter() - started, 0.0, {"hosts": hosts}


def floor_host_real(world: World, host: WorldHost) -> dict[str, float]:
    assert world.haproxy is not None
    lb = world.haproxy.driver()
    laps = Laps()
    client = FloorHost(world, host)
    try:
        laps.lap("connect")
        lb.set_weight(host.server, 0)
        laps.lap("drain")
        prefix, registry = q(str(host.prefix)), q(world.registry.url)
        install = f"npm install -g --prefix {prefix} --registry {registry} {NPM_FLAGS}"
        client.check(f"{install} openclaw@{REAL_TARGET}", timeout=900)
        laps.lap("install")
        client.check(q(str(host.home / "bin" / "openclaw-service")) + " restart")
        laps.lap("restart")
        ready_ms = REAL_READY_TIMEOUT_S * 1000
        client.check(f"node -e {q(READY_WAIT_JS)} {host.gateway_port} {ready_ms}")
        laps.lap("wait ready")
        client.check(f"OPENCLAW_GATEWAY_PORT={host.gateway_port} openclaw doctor --json")
        laps.lap("doctor")
        lb.set_weight(host.server, host.weight)
        laps.lap("weight back")
    finally:
        client.close()
    phases = laps.seconds
    phases["restart to ready"] = round(phases["restart"] + phases["wait ready"], 3)
    phases["host total"] = round(sum(v for k, v in phases.items() if k != "restart to ready"), 3)
    return phases


def run_real_way(root: Path, way: str, r: int, args: Any) -> Run:
    """Build a fresh world for one way, upgrade it, check it, tear it down."""
    world = real_world(root / f"{way}-{r}", way, args.hosts)
    try:
        if way == "reconciler":
            trace_out = RESULTS / "rollout_overhead_real.trace.json"
            RESULTS.mkdir(parents=True, exist_ok=True)
            wall, cpu, detail = run_reconciler_real(world, trace_out)
        else:
            wall, cpu, detail = run_floor_real(world)
        verify(world, REAL_TARGET, way, packages=("openclaw",))
    finally:
        world.close()
        shutil.rmtree(root / f"{way}-{r}", ignore_errors=True)
    return Run(r, way, REAL_SOURCE, REAL_TARGET, wall, cpu or None, detail)


def main_real(args: Any) -> int:
    start_load_sampler()
    byte_compile()
    tmp = Path(tempfile.mkdtemp(prefix="rollout-overhead-real-"))
    runs: list[Run] = []
    try:
        for r in range(1, args.rounds + 1):
            order = REAL_WAYS if r % 2 else REAL_WAYS[::-1]
            for way in order:
                runs.append(run_real_way(tmp, way, r, args))
                print(f"round {r} {way:<10}: {runs[-1].wall_s:6.1f} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize_real(runs, args.hosts)
    report_real(runs, summary, args)
    print()
    print(load_note())
    config = {"hosts": args.hosts, "rounds": args.rounds, "source": REAL_SOURCE}
    config |= {"target": REAL_TARGET, "steps": [100], "soak": "0s", "spec_plugins": {}}
    config["ansible"] = "skipped with --real"
    payload = {"config": config, "runs": [asdict(r) for r in runs], "summary": summary}
    write_results("rollout_overhead_real", payload)
    return 0


def summarize_real(runs: list[Run], n: int) -> dict[str, Any]:
    """Medians over rounds and hosts: wall per way, each phase per way, and the reconciler's
    overhead per host ((its wall - the floor's) / hosts, per round)."""
    per: dict[str, Any] = {}
    for way in REAL_WAYS:
        mine = [r for r in runs if r.way == way]
        hosts = [h for r in mine for h in r.detail["hosts"].values()]
        phases = {p: median([h[p] for h in hosts]) for p in REAL_PHASES}
        per[way] = {"n": len(mine), "wall_median_s": median([r.wall_s for r in mine])}
        per[way] |= {"per_host_s": per[way]["wall_median_s"] / n, "phases_median_s": phases}
    overheads = []
    for k in sorted({r.round for r in runs}):
        walls = {r.way: r.wall_s for r in runs if r.round == k}
        overheads.append((walls["reconciler"] - walls["floor"]) / n)
    ratio = per["reconciler"]["wall_median_s"] / per["floor"]["wall_median_s"]
    return {"ways": per, "overhead_per_host_s": median(overheads), "reconciler/floor": ratio}


def report_real(runs: list[Run], summary: dict[str, Any], args: Any) -> None:
    print(
        f"Real OpenClaw {REAL_SOURCE} -> {REAL_TARGET} (core only; the plugin stays as "
        f"installed), {args.hosts} real sshd hosts per way, HAProxy, steps [100], no soak; "
        f"{args.rounds} round(s), a fresh world per way per round. Ansible: skipped with --real."
    )
    print()
    header = ["way", "round", "host", *[f"{p} s" for p in REAL_PHASES]]
    rows = [
        [r.way, r.round, name, *[s(h[p], 1) for p in REAL_PHASES]]
        for r in runs
        for name, h in r.detail["hosts"].items()
    ]
    print(table(header, rows, "lrl" + "r" * len(REAL_PHASES)))
    print()
    rows = []
    for way in REAL_WAYS:
        w = summary["ways"][way]
        phases = [s(w["phases_median_s"][p], 1) for p in REAL_PHASES]
        rows.append([way, w["n"], s(w["wall_median_s"], 1), s(w["per_host_s"], 1), *phases])
    header = ["way", "runs", "wall s", "s per host", *[f"{p} s (median)" for p in REAL_PHASES]]
    print(table(header, rows))
    print()
    print(
        f"Reconciler overhead over the floor: {summary['overhead_per_host_s']:.1f} s per host "
        f"(reconciler/floor {summary['reconciler/floor']:.2f})."
    )
    last = next((r for r in reversed(runs) if r.way == "reconciler"), None)
    if last is not None:
        print()
        print("Where the last reconciler run's wall time went (bench/trace_reconcile.py):")
        print()
        print_breakdown(last.detail["breakdown"])


# --- the benchmark --------------------------------------------------------------------------


def build(
    root: Path, registry: LocalRegistry, ways: list[str], n: int, args: Any
) -> dict[str, World]:
    worlds: dict[str, World] = {}
    for way in ways:
        prefix = {"reconciler": "rc", "floor": "fl", "ansible": "an"}[way]
        world = World(
            root / way,
            names=[f"{prefix}-{i + 1}" for i in range(n)],
            registry=registry,
            initial=VERSIONS[0],
            steps=(100,),
            soak="0s",
        )
        worlds[way] = world
        for host in world.hosts:
            world.set_faults(
                host, install_delay_s=args.install_delay, ready_delay_s=args.ready_delay
            )
    return worlds


def adopt(world: World) -> None:
    """The fleet as it stands, committed and reconciled once (not measured)."""
    world.bump(VERSIONS[0], message=f"fleet on {VERSIONS[0]}")
    done = subprocess.run(
        world.reconcile_argv(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"adoption failed:\n{done.stderr[-3000:]}")


def profile(world: World, version: str) -> dict[str, Any]:
    """One more reconciler rollout under the tracer; its breakdown (also printed)."""
    world.bump(version)
    out = RESULTS / "rollout_overhead.trace.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    cli = world.reconcile_argv()[3:]  # drop `python -m reconciler`
    done = subprocess.run(
        [sys.executable, str(BENCH / "trace_reconcile.py"), "--out", str(out), "--", *cli],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"traced run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    data = json.loads(out.read_text())
    return {"table": done.stdout, "breakdown": data["breakdown"], "spans_file": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, help="hosts per fleet (default 5; --real: 2)")
    parser.add_argument(
        "--rounds", type=int, help="rounds, each runs every way once (default 5; --real: 1)"
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help=f"the released product ({REAL_SOURCE} -> {REAL_TARGET}): reconciler vs floor",
    )
    parser.add_argument(
        "--install-delay",
        type=float,
        default=2.0,
        help="seconds openclaw's postinstall sleeps (fault install_delay_s)",
    )
    parser.add_argument(
        "--ready-delay",
        type=float,
        default=1.0,
        help="seconds /readyz stays 503 after a start (fault ready_delay_s)",
    )
    parser.add_argument("--no-ansible", action="store_true", help="leave Ansible out")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="trace one more reconciler rollout (auto: when the target is missed)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.hosts = args.hosts or (2 if args.real else 5)
    args.rounds = args.rounds or (1 if args.real else 5)
    if args.real:
        return main_real(args)
    start_load_sampler()
    byte_compile()  # time the reconciler as installed, not compiling itself at every start

    ways = list(WAYS)
    ansible_note = "left out (--no-ansible)"
    playbook_bin: Path | None = None
    if args.no_ansible:
        ways.remove("ansible")
    else:
        playbook_bin, ansible_note = ensure_ansible()
        if playbook_bin is None:
            print(f"Ansible left out: {ansible_note}", file=sys.stderr)
            ways.remove("ansible")

    tmp = Path(tempfile.mkdtemp(prefix="rollout-overhead-"))
    registry = LocalRegistry.start(tmp / "registry")
    worlds: dict[str, World] = {}
    ansible: Ansible | None = None
    runs: list[Run] = []
    profiled: dict[str, Any] | None = None
    try:
        publish_standard_catalog(registry)
        worlds = build(tmp, registry, ways, args.hosts, args)
        adopt(worlds["reconciler"])
        if playbook_bin is not None:
            ansible = Ansible(playbook_bin, worlds["ansible"], tmp / "ansible-work")
        for r in range(args.rounds):
            source, target = VERSIONS if r % 2 == 0 else VERSIONS[::-1]
            order = ways[r % len(ways) :] + ways[: r % len(ways)]
            for way in order:
                world = worlds[way]
                if way == "reconciler":
                    wall, cpu, detail = run_reconciler(world, target)
                elif way == "floor":
                    wall, cpu, detail = run_floor(world, target)
                else:
                    assert ansible is not None
                    wall, cpu, detail = ansible.run(target)
                verify(world, target, way)
                runs.append(Run(r + 1, way, source, target, wall, cpu, detail))
                print(
                    f"round {r + 1} {way:<10} {source} -> {target}: {wall:6.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        summary = summarize(runs, ways, args.hosts)
        missed = summary["ratios"]["reconciler/floor"] > 1.10
        if args.profile == "always" or (args.profile == "auto" and missed):
            last = next(r.target for r in reversed(runs) if r.way == "reconciler")
            profiled = profile(
                worlds["reconciler"], VERSIONS[1] if last == VERSIONS[0] else VERSIONS[0]
            )
    finally:
        if ansible is not None:
            ansible.close()
        for world in worlds.values():
            world.close()
        registry.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    report(runs, ways, summary, args, ansible_note, profiled)
    print()
    print(load_note())
    write_results(
        "rollout_overhead",
        {
            "config": {
                "hosts": args.hosts,
                "rounds": args.rounds,
                "install_delay_s": args.install_delay,
                "ready_delay_s": args.ready_delay,
                "steps": [100],
                "soak": "0s",
                "packages": ["openclaw", *PLUGINS],
                "ansible": ansible_note,
            },
            "runs": [asdict(r) for r in runs],
            "summary": summary,
            "profile": profiled and {k: v for k, v in profiled.items() if k != "table"},
        },
    )
    return 0


def summarize(runs: list[Run], ways: list[str], n: int) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for way in ways:
        walls = [r.wall_s for r in runs if r.way == way]
        cpus = [r.cpu_s for r in runs if r.way == way and r.cpu_s is not None]
        per[way] = {
            "n": len(walls),
            "median_s": median(walls),
            "min_s": min(walls),
            "max_s": max(walls),
            "cpu_median_s": median(cpus) if cpus else None,
        }
    ratios: dict[str, float] = {}
    paired: dict[str, float] = {}
    for other in ways[1:]:
        ratios[f"reconciler/{other}"] = per["reconciler"]["median_s"] / per[other]["median_s"]
        rounds = sorted({r.round for r in runs})
        pairs = [
            next(x.wall_s for x in runs if x.round == k and x.way == "reconciler")
            / next(x.wall_s for x in runs if x.round == k and x.way == other)
            for k in rounds
        ]
        paired[f"reconciler/{other}"] = median(pairs)
    overhead = (per["reconciler"]["median_s"] - per["floor"]["median_s"]) / n
    floor_phases: dict[str, float] = {}
    for r in runs:
        if r.way == "floor":
            for k, v in r.detail["phases_s"].items():
                floor_phases.setdefault(k, 0.0)
                floor_phases[k] += v / sum(1 for x in runs if x.way == "floor")
    return {
        "ways": per,
        "ratios": ratios,
        "paired_ratios_median": paired,
        "overhead_per_host_s": overhead,
        "floor_phases_mean_s": floor_phases,
        "targets": {
            "reconciler <= 1.10 x floor": ratios["reconciler/floor"] <= 1.10,
            **(
                {"reconciler faster than ansible": ratios["reconciler/ansible"] < 1.0}
                if "reconciler/ansible" in ratios
                else {}
            ),
        },
    }


def report(
    runs: list[Run],
    ways: list[str],
    summary: dict[str, Any],
    args: Any,
    ansible_note: str,
    profiled: dict[str, Any] | None,
) -> None:
    print(
        f"Fleet: {args.hosts} real sshd hosts per way, openclaw + 2 plugins, steps [100], no "
        f"soak; install delay {args.install_delay:g} s, ready delay {args.ready_delay:g} s; "
        f"{args.rounds} rounds. Ansible: {ansible_note}."
    )
    print()
    rows = []
    for way in ways:
        w = summary["ways"][way]
        cpu = "" if w["cpu_median_s"] is None or way == "floor" else s(w["cpu_median_s"], 1)
        rows.append(
            [
                way,
                w["n"],
                s(w["median_s"], 1),
                s(w["min_s"], 1),
                s(w["max_s"], 1),
                s(w["median_s"] / args.hosts, 1),
                cpu,
            ]
        )
    print(
        table(["way", "runs", "median s", "min s", "max s", "s per host", "CPU s (median)"], rows)
    )
    print()
    rounds = sorted({r.round for r in runs})
    header = ["round", "upgrade", *[f"{w} s" for w in ways]]
    rows = []
    for k in rounds:
        mine = {r.way: r for r in runs if r.round == k}
        first = next(iter(mine.values()))
        rows.append([k, f"{first.source} -> {first.target}", *[s(mine[w].wall_s, 1) for w in ways]])
    print(table(header, rows))
    print()
    rows = []
    for name, value in summary["ratios"].items():
        target = "<= 1.10" if name == "reconciler/floor" else "< 1.00"
        met = value <= 1.10 if name == "reconciler/floor" else value < 1.0
        rows.append(
            [
                name,
                s(value),
                s(summary["paired_ratios_median"][name]),
                target,
                "met" if met else "MISSED",
            ]
        )
    print(table(["ratio of medians", "value", "median of per-round ratios", "target", ""], rows))
    print()
    print(f"Reconciler overhead over the floor: {summary['overhead_per_host_s']:.1f} s per host.")
    phases = summary["floor_phases_mean_s"]
    print("Floor, mean seconds per run: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if profiled is not None:
        print()
        print("Traced reconciler rollout (bench/trace_reconcile.py):")
        print()
        print(profiled["table"])


if __name__ == "__main__":
    raise SystemExit(main())
