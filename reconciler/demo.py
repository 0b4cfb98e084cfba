"""`reconciler demo`: the whole story on this machine, against real parts, in one command.

It builds a sandbox (a local npm registry with the stand-in OpenClaw, three local "hosts" each
with its own HOME, npm prefix and running gateway, a load balancer, and a spec repository on a
git daemon), then plays what an operator lives through: the fleet adopted as it stands, a bump
rolled out host by host, a second bump on which one host goes red (restored, frozen, broadcast),
and the revert of that bump. It ends by printing the status branch's log and where the sandbox
lives; the processes are stopped, the files stay for inspection.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from reconciler import report
from reconciler.daemon import SpecNotifier, engine_for, run_until_settled
from reconciler.engine import PassResult
from reconciler.gitstore import GitStore
from reconciler.notify import Event
from reconciler.sandbox.world import World
from reconciler.status import read_status

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

    def chapter(self, title: str, act: Callable[[], object]) -> PassResult:
        self.console.rule(title)
        act()
        last: list[PassResult] = []
        with Live(_table(self.world, None), console=self.console, refresh_per_second=4) as live:

            def on_pass(result: PassResult) -> None:
                last[:] = [result]
                if result.acted or result.requeue_after:
                    live.console.print(f"[bold]{result.phase:<11}[/] {result.message}")
                live.update(_table(self.world, result))

            result = run_until_settled(self.engine, on_pass=on_pass, max_failures=4)
        return result

    def play(self) -> None:
        w = self.world
        self.chapter("1. the fleet as it stands, committed", lambda: w.bump("2026.4.2"))
        self.chapter("2. PR merged: openclaw 2026.4.3, rolled out one host at a time",
                     lambda: w.bump("2026.4.3"))  # fmt: skip
        w.set_faults(w.host("mac-2"), doctor_red=["2026.4.4"])
        bad: list[str] = []
        failed = self.chapter(
            "3. openclaw 2026.4.4: mac-2 goes red after its upgrade",
            lambda: bad.append(w.bump("2026.4.4")),
        )
        self.console.print(f"rollout ended {failed.phase}: {failed.message[:200]}")
        self.chapter(
            "4. git revert of the 2026.4.4 bump: back to 2026.4.3", lambda: w.revert(bad[0])
        )
        self.console.rule("the status branch (git log reconciler/status)")
        self.store.fetch()
        report.print_history(list(report.history(self.store, "sandbox", 200)), self.console)
        self.console.rule("reconciler status")
        report.print_status(report.status_doc(read_status(self.store, "sandbox")), self.console)

    def close(self) -> None:
        self.notifier.flush(10.0)
        self.world.close()


def run(directory: Path | None, console: Console | None = None) -> int:
    console = console or Console(highlight=False)
    root = directory or DEFAULT_DIR
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
    return 0
