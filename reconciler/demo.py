"""`reconciler demo`: the whole story on this machine, against real parts, in one command.

It builds a sandbox (a local npm registry with the stand-in OpenClaw, three local "hosts" each
with its own HOME, npm prefix and running gateway, a load balancer, and a spec repository on a
git daemon), then plays what an operator lives through: the fleet adopted as it stands, a bump
rolled out host by host, a second bump on which one host goes red (restored, frozen, broadcast),
and the revert of that bump. Each chapter checks that the story happened (versions, phases,
weights, the freeze); `run` exits 1 when one did not, so "the demo runs green" means the story
is true. With HAProxy installed, real requests flow through it during the rollouts, so the
soaks' canary analysis counts them. It ends by printing the status branch's log and where the
sandbox lives; the processes are stopped, the files stay for inspection.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from reconciler.record.gitstore import GitStore
from reconciler.record.status import read_status
from reconciler.rollout.engine import PassResult
from reconciler.rollout.events import Event
from reconciler.sandbox.traffic import Traffic
from reconciler.sandbox.world import World
from reconciler.serve.daemon import SpecNotifier, engine_for, run_until_settled
from reconciler.views import report

Expect = Callable[[PassResult], list[str]]

DEFAULT_DIR = Path.home() / ".cache" / "openclaw-reconciler" / "sandbox"


class DemoNotifier(SpecNotifier):
    """Shows every broadcast in the terminal, as the chat channel would."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def notify(self, event: object) -> None:
        super().notify(event)
        if isinstance(event, Event) and event.kind in ("failure", "gate", "drift"):
            self.console.print(f"[red]broadcast ({event.kind})[/]: {event.message[:300]}")


def _table(world: World, last: PassResult | None) -> Table:
    table = Table("host", "role", "openclaw", "weight", title=last.message[:100] if last else "")
    weights = world.weights()
    for host in world.hosts:
        pkg = host.prefix / "lib" / "node_modules" / "openclaw" / "package.json"
        version = _version(pkg)
        table.add_row(host.name, host.role, version, str(weights.get(host.server, "-")))
    return table


def _version(package_json: Path) -> str:
    try:
        return str(json.loads(package_json.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "-"


class Demo:
    """The story, chapter by chapter."""

    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.console = console
        self.notifier = DemoNotifier(console)
        lb: Literal["file", "haproxy"] = "haproxy" if shutil.which("haproxy") else "file"
        console.print(f"building the sandbox in {root} (registry, 3 hosts, {lb} LB, git remote)")
        self.world = World(root, transport="local", soak="2s", lb=lb)
        self.store = GitStore(self.world.remote, root / "cache" / "repo.git")
        self.engine = engine_for(self.store, "sandbox", notifier=self.notifier, lease_s=30.0)
        self.problems: list[str] = []

    def chapter(self, title: str, act: Callable[[], object], expect: Expect) -> PassResult:
        self.console.rule(title)
        act()
        traffic = Traffic(self.world.haproxy.frontend_port) if self.world.haproxy else None
        if traffic is not None:
            traffic.start()
        try:
            result = self._run()
        finally:
            statuses = traffic.stop() if traffic is not None else {}
        if statuses:
            counts = ", ".join(f"{n} x {s or 'no answer'}" for s, n in sorted(statuses.items()))
            self.console.print(f"requests through the load balancer meanwhile: {counts}")
        missed = expect(result)
        for problem in missed:
            self.console.print(f"[red]the story did not happen[/]: {title}: {problem}")
        self.problems += [f"{title}: {p}" for p in missed]
        return result

    def _run(self) -> PassResult:
        last: list[PassResult] = []
        with Live(_table(self.world, None), console=self.console, refresh_per_second=4) as live:

            def on_pass(result: PassResult) -> None:
                last[:] = [result]
                if result.acted or result.requeue_after:
                    live.console.print(f"[bold]{result.phase:<11}[/] {result.message}")
                live.update(_table(self.world, result))

            result = run_until_settled(self.engine, on_pass=on_pass, max_failures=4)
        if not self.console.is_terminal:
            self.console.line()  # Live leaves a piped output on the table's last line
        return result

    def play(self) -> None:
        w = self.world
        self.chapter(
            "1. the fleet as it stands, committed",
            lambda: w.bump("2026.4.2"),
            lambda r: self.settled(r, "Complete", ["2026.4.2"] * 3),
        )
        self.chapter(
            "2. PR merged: openclaw 2026.4.3, rolled out one host at a time",
            lambda: w.bump("2026.4.3"),
            lambda r: self.settled(r, "Complete", ["2026.4.3"] * 3),
        )
        w.set_faults(w.host("mac-2"), doctor_red=["2026.4.4"])
        bad: list[str] = []
        failed = self.chapter(
            "3. openclaw 2026.4.4: mac-2 goes red after its upgrade",
            lambda: bad.append(w.bump("2026.4.4")),
            lambda r: self.settled(r, "Failed", ["2026.4.4", "2026.4.3", "2026.4.3"], frozen=True),
        )
        self.console.print(f"rollout ended {failed.phase}: {failed.message[:200]}")
        self.chapter(
            "4. git revert of the 2026.4.4 bump: back to 2026.4.3",
            lambda: w.revert(bad[0]),
            lambda r: self.settled(r, "Complete", ["2026.4.3"] * 3),
        )
        self.console.rule("the status branch (git log reconciler/status)")
        self.store.fetch()
        report.print_history(list(report.history(self.store, "sandbox", 200)), self.console)
        self.console.rule("reconciler status")
        report.print_status(report.status_doc(read_status(self.store, "sandbox")), self.console)

    def settled(
        self, result: PassResult, phase: str, cores: list[str], *, frozen: bool = False
    ) -> list[str]:
        """What differs from the chapter's ending: the phase, each host's installed openclaw
        (in host order), full weights (a failed chapter's red host too: it was restored), and
        whether the fleet is frozen."""
        problems = [] if result.phase == phase else [f"phase {result.phase}, expected {phase}"]
        have = [
            _version(h.prefix / "lib/node_modules/openclaw/package.json") for h in self.world.hosts
        ]
        if have != cores:
            problems.append(f"openclaw versions {have}, expected {cores}")
        weights = self.world.weights()
        wrong = {
            h.server: weights.get(h.server)
            for h in self.world.hosts
            if weights.get(h.server) != h.weight
        }
        if wrong:
            problems.append(f"weights {wrong}, expected each host's full weight")
        self.store.fetch()
        if (read_status(self.store, "sandbox").freeze is not None) != frozen:
            problems.append("the fleet is frozen" if not frozen else "no freeze was recorded")
        return problems

    def close(self) -> None:
        self.notifier.flush(10.0)
        self.world.close()


def run(directory: Path | None, console: Console | None = None) -> int:
    console = console or Console(highlight=False)
    root = directory or DEFAULT_DIR
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{root.name}.lock").open("w") as lock:
        try:  # a second demo would delete the first one's sandbox under it
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"[red]another demo is running in {root}[/]: pass --dir for another")
            return 2
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        demo = Demo(root, console)
        try:
            demo.play()
        finally:
            demo.close()
    git_log = [
        "git",
        "--git-dir",
        str(demo.world.remote_path),
        "log",
        "--oneline",
        "reconciler/status",
    ]
    console.print(f"\nsandbox: {root}")
    console.print(f"status branch: {' '.join(git_log)}")
    console.print(f"spec repo (working copy): {root / 'work'}")
    if demo.problems:
        console.print(f"[red]the demo's story did not happen ({len(demo.problems)} problems)[/]")
        return 1
    return 0
