"""`reconciler plan` on real git repositories: a bump, a revert, a plugin-only change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from ruamel.yaml import YAML

from reconciler.canonical import sha256_of
from reconciler.cli import main
from reconciler.desired.lock import LockedPackage, build_lock
from reconciler.desired.spec import Fleet
from reconciler.record.documents import seal_readiness
from reconciler.rollout.planner import host_order, plan, step_weight
from tests.gitrepo import SpecRepo

EXAMPLE = Path(__file__).parent.parent / "specs" / "example"


def fleet_yaml(core: str = "2026.4.2", plugins: str = "2026.4.2", **changes: object) -> bytes:
    text = (EXAMPLE / "fleet.yaml").read_text()
    text = text.replace("version: 2026.4.2", f"version: {core}")
    text = text.replace('": 2026.4.2', f'": {plugins}')
    for old, new in changes.items():
        text = text.replace(old.replace("_", " "), str(new))
    return text.encode()


def lock_bytes(data: bytes) -> bytes:
    fleet = Fleet.model_validate(YAML(typ="safe").load(data))
    packages = [
        LockedPackage(name=name, version=version, integrity="sha512-AAAA")
        for name, version in fleet.packages().items()
    ]
    return build_lock(fleet, packages).to_bytes()


def spec_commit(repo: SpecRepo, data: bytes, message: str) -> str:
    files = {"fleet.yaml": data, "openclaw.lock": lock_bytes(data)}
    files["known_hosts"] = (EXAMPLE / "known_hosts").read_bytes()
    return repo.commit(files, message)


@pytest.fixture
def repo(tmp_path: Path) -> SpecRepo:
    repo = SpecRepo(tmp_path / "spec")
    spec_commit(repo, fleet_yaml(), "studio on 2026.4.2")
    return repo


def run_plan(
    repo: SpecRepo, base: str, head: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict]:
    code = main(["plan", "--repo", str(repo.path), "--base", base, "--head", head, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_bump_plans_every_host_in_role_order_with_each_weight_step(repo, capsys):
    base = str(repo.repo.head.target)
    head = spec_commit(repo, fleet_yaml("2026.4.3", "2026.4.3"), "bump to 2026.4.3")
    code, out = run_plan(repo, base, head, capsys)
    assert code == 3
    p = out["plans"][0]
    assert p["order"] == ["mac-1", "mac-2", "mac-3"]
    assert {(c["subject"], c["before"], c["after"]) for c in p["changes"]} == {
        ("openclaw", "2026.4.2", "2026.4.3"),
        ("@openclaw/discord", "2026.4.2", "2026.4.3"),
        ("@openclaw/matrix", "2026.4.2", "2026.4.3"),
    }
    ids = [s["id"] for s in p["steps"]]
    assert ids[:9] == [
        "mac-1/bookmark",
        "mac-1/drain",
        "mac-1/preflight",
        "mac-1/install",
        "mac-1/restart",
        "mac-1/verify",
        "mac-1/ramp-10",
        "mac-1/ramp-50",
        "mac-1/ramp-100",
    ]
    assert len(ids) == 27
    install = next(s for s in p["steps"] if s["id"] == "mac-2/install")
    assert [p["name"] for p in install["packages"]] == [
        "openclaw",
        "@openclaw/discord",
        "@openclaw/matrix",
    ]
    ramp = next(s for s in p["steps"] if s["id"] == "mac-2/ramp-10")
    assert ramp["weights"] == {"mac-2": 10, "mac-2-tenant-b": 5}
    assert ramp["soakS"] == 300
    assert p["headCommit"] == head and p["baseCommit"] == base


def test_revert_of_the_bump_plans_the_way_back(repo, capsys):
    spec_commit(repo, fleet_yaml("2026.4.3", "2026.4.3"), "bump to 2026.4.3")
    bump = str(repo.repo.head.target)
    revert = repo.revert(bump, f'Revert "bump to 2026.4.3"\n\nThis reverts commit {bump}.')
    code, out = run_plan(repo, bump, revert, capsys)
    assert code == 3
    p = out["plans"][0]
    core = next(c for c in p["changes"] if c["subject"] == "openclaw")
    assert (core["before"], core["after"]) == ("2026.4.3", "2026.4.2")
    assert any("downgrade" in w for w in p["warnings"])
    assert next(s["id"] for s in p["steps"]) == "mac-1/bookmark"


def test_plugin_only_change_installs_but_keeps_the_core(repo, capsys):
    base = str(repo.repo.head.target)
    data = fleet_yaml().replace(b'"@openclaw/matrix": 2026.4.2', b'"@openclaw/matrix": 2026.4.3')
    head = spec_commit(repo, data, "matrix 2026.4.3")
    code, out = run_plan(repo, base, head, capsys)
    assert code == 3
    changes = out["plans"][0]["changes"]
    assert [(c["kind"], c["subject"]) for c in changes] == [("plugin", "@openclaw/matrix")]


def test_weight_only_change_ramps_without_installing(repo, capsys):
    base = str(repo.repo.head.target)
    data = fleet_yaml().replace(b"weight: 20", b"weight: 40")
    head = spec_commit(repo, data, "witness takes more")
    code, out = run_plan(repo, base, head, capsys)
    assert code == 3
    steps = out["plans"][0]["steps"]
    assert [s["id"] for s in steps] == ["mac-3/ramp-100"]
    assert steps[0]["weights"] == {"mac-3": 40}


def test_no_change_exits_zero(repo, capsys):
    head = str(repo.repo.head.target)
    data = fleet_yaml().replace(b"# Three Mac minis", b"# Four Mac minis, one day")
    comment_only = spec_commit(repo, data, "comment")
    code, out = run_plan(repo, head, comment_only, capsys)
    assert code == 0
    assert out["plans"][0]["steps"] == []


def test_invalid_head_exits_two_with_location(repo, capsys):
    base = str(repo.repo.head.target)
    bad = fleet_yaml("2026.4.3", "2026.4.3").replace(
        b"user: openclaw\n    role: stable", b"user: 'x;y'\n    role: stable"
    )
    head = repo.commit({"fleet.yaml": bad}, "broken")
    code, out = run_plan(repo, base, head, capsys)
    assert code == 2
    paths = {p["path"] for p in out["problems"]}
    assert "$.hosts[1].user" in paths


def test_plan_is_readable_as_plain_text_when_piped(repo):
    base = str(repo.repo.head.target)
    head = spec_commit(repo, fleet_yaml("2026.4.3", "2026.4.3"), "bump")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "plan",
            "--repo",
            str(repo.path),
            "--base",
            base,
            "--head",
            head,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("fleet studio: rolling, 27 steps")
    assert any("core" in line and "2026.4.2 -> 2026.4.3" in line for line in lines)
    assert "order: mac-1 -> mac-2 -> mac-3" in lines
    assert any("mac-1" in line and "ramp" in line and "10%" in line for line in lines)
    assert "\x1b[" not in proc.stdout


def test_plan_identity_is_stable_and_follows_the_content():
    fleet = Fleet.model_validate(YAML(typ="safe").load(fleet_yaml("2026.4.3", "2026.4.3")))
    assert plan(fleet, None).sha256 == plan(fleet, None).sha256
    other = fleet.model_copy(update={"name": "other"})
    assert plan(other, None).sha256 != plan(fleet, None).sha256


@pytest.mark.parametrize(
    ("desired", "percent", "expected"),
    [(100, 10, 10), (20, 10, 2), (5, 10, 1), (50, 0, 0), (0, 50, 0), (7, 50, 4)],
)
def test_step_weight(desired, percent, expected):
    assert step_weight(desired, percent) == expected


def test_explicit_order_beats_roles():
    data = fleet_yaml() + b""
    fleet = Fleet.model_validate(YAML(typ="safe").load(data))
    reordered = fleet.model_copy(
        update={"rollout": fleet.rollout.model_copy(update={"order": ["mac-3", "mac-1", "mac-2"]})}
    )
    assert [h.name for h in host_order(reordered)] == ["mac-3", "mac-1", "mac-2"]


def observed(host: str, *, ready: bool, weight: int, node: str = "24.16.0") -> bytes:
    """A node document as the status branch holds it (readiness of one host)."""
    profile = {"profile": "default", "port": 18789, "readyz": ready, "lbWeight": weight}
    basis: dict[str, object] = {"core": "2026.4.2"}
    doc = seal_readiness(
        {
            "schemaVersion": 1, "fleet": "studio", "host": host,
            "observedAt": "2026-12-01T09:00:00Z", "specCommit": "0" * 40, "lockSha256": None,
            "nodeVersion": node, "installed": {"core": "2026.4.2"}, "profiles": [profile],
            "green": ready, "reasons": [], "basis": basis, "fingerprint": sha256_of(basis),
        }
    )  # fmt: skip
    return doc.model_dump_json(by_alias=True).encode()


def status_branch(repo: SpecRepo, files: dict[str, bytes]) -> None:
    """The status branch of the spec repository, holding `files` (the reconciler's records)."""
    index = pygit2.Index()
    for path, data in files.items():
        index.add(pygit2.IndexEntry(path, repo.repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    who = pygit2.Signature("reconciler", "reconciler@example.com")
    repo.repo.create_commit(
        "refs/heads/reconciler/status", who, who, "observed", index.write_tree(repo.repo), []
    )


def test_plan_names_the_hosts_out_of_service_and_starts_with_them(repo, capsys):
    """The status branch last saw mac-2's gateway down: the plan says so, shows the budget,
    and takes mac-2 first."""
    status = {
        "fleets/studio/nodes/mac-1.json": observed("mac-1", ready=True, weight=100),
        "fleets/studio/nodes/mac-2.json": observed("mac-2", ready=False, weight=0),
    }
    parent = repo.repo.head.target
    status_branch(repo, status)
    bump = spec_commit(repo, fleet_yaml("2026.4.3", "2026.4.3"), "openclaw 2026.4.3")

    code, out = run_plan(repo, str(parent), bump, capsys)

    [plan] = out["plans"]
    assert code == 3 and plan["order"][0] == "mac-2" and plan["repairFirst"] == ["mac-2"]
    assert plan["maxUnavailable"] == 1
    why = plan["outOfService"]["mac-2"]
    assert "gateway default not ready" in why and "at weight 0" in why
    assert "mac-1" not in plan["outOfService"]
    main(["plan", "--repo", str(repo.path), "--base", str(parent), "--head", bump])
    text = capsys.readouterr().out
    assert "out of service: mac-2: gateway default not ready" in text
    assert "the rollout starts with it" in text and "at most 1 host(s) out of service" in text


def test_the_rollout_order_follows_roles_not_the_order_hosts_are_listed_in() -> None:
    data = YAML(typ="safe").load(fleet_yaml())
    data["hosts"] = list(reversed(data["hosts"]))  # witness, stable, canary
    assert [h["role"] for h in data["hosts"]] == ["witness", "stable", "canary"]

    assert plan(Fleet.model_validate(data), None).order == ["mac-1", "mac-2", "mac-3"]
    data["rollout"]["roles"] = ["witness", "canary", "stable"]
    assert plan(Fleet.model_validate(data), None).order == ["mac-3", "mac-1", "mac-2"]
    data["rollout"]["order"] = ["mac-2", "mac-3", "mac-1"]  # an explicit order wins
    explicit = plan(Fleet.model_validate(data), None)
    assert explicit.order == ["mac-2", "mac-3", "mac-1"]
    assert [s.hosts[0] for s in explicit.steps if s.action == "bookmark"] == explicit.order


def test_plan_names_the_hosts_whose_last_seen_node_the_target_refuses(repo, capsys):
    """The status branch recorded each host's Node: a target whose engines.node excludes one
    is said before the merge, not found out on the host."""
    status = {
        "fleets/studio/nodes/mac-1.json": observed("mac-1", ready=True, weight=100),
        "fleets/studio/nodes/mac-2.json": observed("mac-2", ready=True, weight=100, node="22.1.0"),
    }
    status_branch(repo, status)
    parent = str(repo.repo.head.target)
    data = fleet_yaml("2026.4.3", "2026.4.3")
    fleet = Fleet.model_validate(YAML(typ="safe").load(data))
    packages = [
        LockedPackage(
            name=name, version=version, integrity="sha512-AAAA",
            engines_node=">=24.16.0" if name == "openclaw" else None,
        )
        for name, version in fleet.packages().items()
    ]  # fmt: skip
    files = {"fleet.yaml": data, "openclaw.lock": build_lock(fleet, packages).to_bytes()}
    files["known_hosts"] = (EXAMPLE / "known_hosts").read_bytes()
    bump = repo.commit(files, "openclaw 2026.4.3 (needs Node 24.16)")

    code, out = run_plan(repo, parent, bump, capsys)

    assert code == 3
    warnings = out["plans"][0]["warnings"]
    assert any(w.startswith("mac-2: node 22.1.0 does not satisfy engines.node") for w in warnings)
    assert not any(w.startswith("mac-1:") for w in warnings)


def test_plan_as_a_pr_comment_in_markdown(repo, capsys):
    """One comment per fleet: a hidden marker to update it in place, the changes, the order
    with roles, the steps folded per host, the estimate, and what would hold the rollout."""
    freeze = json.dumps(
        {"fleet": "studio", "reason": "mac-2 red on 2026.4.4", "createdAt": "2026-12-01T09:00:00Z"}
    ).encode()
    status_branch(
        repo,
        {
            "fleets/studio/nodes/mac-2.json": observed("mac-2", ready=False, weight=0),
            "fleets/studio/freeze.json": freeze,
        },
    )
    parent = str(repo.repo.head.target)
    bump = spec_commit(repo, fleet_yaml("2026.4.3", "2026.4.3"), "openclaw 2026.4.3")

    code = main(["plan", "--repo", str(repo.path), "--base", parent, "--head", bump,
                 "--format", "markdown"])  # fmt: skip

    text = capsys.readouterr().out
    assert code == 3
    assert text.startswith("<!-- openclaw-reconciler plan: studio -->\n")
    assert "| core | `openclaw` | 2026.4.2 | 2026.4.3 |" in text
    assert "**Order:** mac-2 (stable) → mac-1 (canary) → mac-3 (witness)" in text
    assert text.count("<details><summary>") == 3 and "<summary>mac-1: " in text
    assert "about **" in text
    assert "> ⚠️ mac-2 is out of service: gateway default not ready" in text
    assert "> ⚠️ the fleet is frozen: mac-2 red on 2026.4.4" in text

    main(["plan", "--repo", str(repo.path), "--base", bump, "--head", bump, "--format", "markdown"])
    assert "No changes: nothing to roll out" in capsys.readouterr().out
