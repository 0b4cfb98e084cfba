"""The operator's commands on a real fleet (sshd hosts, the stand-in, a git daemon): `history`
reads the flight recorder, `unfreeze` lifts a freeze with a commit of its own, and `selfHeal`
converges a host that drifted while the fleet was Complete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, product_version

OLD, NEW = "2026.4.2", "2026.4.3"
MATRIX = "@openclaw/matrix"


def cli(world: World, *argv: str) -> subprocess.CompletedProcess[str]:
    """`reconciler <argv> --remote ... --fleet sandbox` (reconcile: `--once` too)."""
    if argv[0] == "reconcile":
        full = world.reconcile_argv(*argv[1:])
    else:
        full = [sys.executable, "-m", "reconciler", *argv, "--remote", world.remote]
        full += ["--fleet", "sandbox", "--cache", str(world.root / "cli-cache")]
    env = {**os.environ, "COLUMNS": "1000"}
    return subprocess.run(full, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def world(tmp_path: Path, registry: LocalRegistry) -> Iterator[World]:
    with World(
        tmp_path / "world", names=("mac-1", "mac-2"), steps=(100,), registry=registry,
        extra_rollout={"selfHeal": True},
    ) as built:  # fmt: skip
        built.bump(OLD, message="fleet on 2026.4.2")
        assert cli(built, "reconcile").returncode == 0
        yield built


def test_history_reads_the_flight_recorder_newest_first(world: World) -> None:
    world.bump(NEW)
    done = cli(world, "reconcile")
    assert done.returncode == 0
    # a long run says where it stands: steps done of the plan, elapsed, the estimate left
    assert re.search(r"mac-1: drained \(weight 0\) \[step 2/\d+, \d+s elapsed, about", done.stderr)

    shown = cli(world, "history", "-n", "50")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout
    for subject in ("mac-1: bookmarked", "mac-1: drained", "mac-2: openclaw 2026.4.3 running"):
        assert subject in lines, lines
    assert lines.index("complete: fleet on openclaw 2026.4.3") < lines.index("mac-1: drained")
    as_json = json.loads(cli(world, "history", "-n", "50", "--json").stdout)
    assert as_json[0]["subject"].startswith("rollout") and "complete" in as_json[0]["subject"]


def test_unfreeze_lifts_the_freeze_with_a_commit_and_the_next_commit_moves(world: World) -> None:
    world.set_faults(world.host("mac-2"), doctor_red=[NEW])
    world.bump(NEW)
    assert cli(world, "reconcile").returncode == 2
    assert "frozen" in cli(world, "status").stdout.lower()

    lifted = cli(world, "unfreeze", "--reason", "mac-2's config fixed by hand")

    assert lifted.returncode == 0, lifted.stderr
    assert "unfrozen" in lifted.stdout
    shown = cli(world, "history", "-n", "5").stdout
    assert "unfrozen by operator: mac-2's config fixed by hand" in shown
    assert cli(world, "unfreeze", "--reason", "again").stdout.startswith("fleet sandbox is not")
    world.set_faults(world.host("mac-2"))
    world.commit(world.spec_files(NEW), "retry 2026.4.3")
    assert cli(world, "reconcile").returncode == 0
    assert {product_version(h, "openclaw") for h in world.hosts} == {NEW}


def test_self_heal_converges_a_host_that_drifted_while_complete(world: World) -> None:
    mac2 = world.host("mac-2")
    world.install(mac2, OLD, {MATRIX: "2026.4.4"})  # by hand, on a Complete fleet

    healed = cli(world, "reconcile")

    assert healed.returncode == 0, healed.stderr
    assert "self-heal" in healed.stderr
    assert product_version(mac2, MATRIX) == OLD, "the drifted plugin was not converged back"
    assert world.weights() == {"mac-1": 100, "mac-2": 100}
    shown = cli(world, "history", "-n", "30").stdout
    assert "drift" in shown and "mac-2" in shown
