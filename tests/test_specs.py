"""Every spec shipped in specs/ is valid, locked, and plans a readable rollout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import main

SPECS = sorted(p.parent for p in (Path(__file__).parent.parent / "specs").glob("*/fleet.yaml"))


def test_there_are_specs() -> None:
    assert {p.name for p in SPECS} >= {"example", "sandbox"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_is_valid_with_a_fresh_lock(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(spec), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] and out["problems"] == []


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_plans_every_host(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(spec), "--json"]) == 3
    plan = json.loads(capsys.readouterr().out)["plans"][0]
    hosts = {h for s in plan["steps"] for h in s["hosts"]}
    assert hosts == set(plan["order"]) and len(hosts) == 3
    assert plan["warnings"] == []
