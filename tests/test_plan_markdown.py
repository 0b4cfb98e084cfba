"""Golden PR comments (`plan --format markdown`) for a bump, a revert, a red-held fleet and a
Node refusal, built in real git repositories; commit ids are normalised to `<base>`/`<head>`
(`normalise`). `UPDATE_GOLDEN=1` rewrites a golden file and fails: review the diff, then commit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.cli import main
from reconciler.desired.lock import LockedPackage, build_lock
from reconciler.desired.spec import Fleet
from reconciler.rollout.planner import Change, plan
from reconciler.views.render import plan_markdown
from tests.gitrepo import SpecRepo
from tests.test_plan import EXAMPLE, fleet_yaml, observed, status_branch

GOLDEN = Path(__file__).parent / "golden" / "plan-markdown"
NODES = "fleets/studio/nodes"


def spec(core: str = "2026.4.2", plugins: dict[str, str] | None = None, **edits: str) -> bytes:
    """The example fleet without its maintenance windows (they follow the wall clock), with
    the core at `core`, the plugins named in `plugins` at their version, and `edits` (old text
    -> new text) applied."""
    text = fleet_yaml(core).decode()
    text = re.sub(r"(?ms)^windows:\n.*?(?=^\S)", "", text)
    assert "windows:" not in text
    for name, version in (plugins or {}).items():
        text = text.replace(f'"{name}": 2026.4.2', f'"{name}": {version}')
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text.encode()


def commit_spec(
    repo: SpecRepo, data: bytes, message: str, *, engines_node: str | None = None
) -> str:
    """Commit `data` with its lock (the core's engines.node as given) and the known hosts."""
    fleet = fleet_of(data)
    packages = [
        LockedPackage(
            name=name, version=version, integrity="sha512-AAAA",
            engines_node=engines_node if name == "openclaw" else None,
        )
        for name, version in fleet.packages().items()
    ]  # fmt: skip
    files = {"fleet.yaml": data, "openclaw.lock": build_lock(fleet, packages).to_bytes()}
    files["known_hosts"] = (EXAMPLE / "known_hosts").read_bytes()
    return repo.commit(files, message)


def healthy(**node: str) -> dict[str, bytes]:
    """Status-branch node documents: every host ready at its weight, on Node 24.16.0 unless
    `node` says otherwise."""
    weights = {"mac-1": 100, "mac-2": 100, "mac-3": 20}
    return {
        f"{NODES}/{h}.json": observed(h, ready=True, weight=w, node=node.get(h, "24.16.0"))
        for h, w in weights.items()
    }


def markdown_plan(repo: SpecRepo, base: str, head: str, capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["plan", "--repo", str(repo.path), "--base", base, "--head", head]
    code = main([*argv, "--format", "markdown"])
    out = capsys.readouterr().out
    assert code == 3, out
    return normalise(out, base=base, head=head)


def fleet_of(data: bytes) -> Fleet:
    return Fleet.model_validate(YAML(typ="safe").load(data))


def normalise(text: str, *, base: str, head: str) -> str:
    """The only thing in the output that is not the same on every run of the same history:
    the commit ids (as the plan shows them, 12 characters)."""
    return text.replace(base[:12], "<base>").replace(head[:12], "<head>")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.fail("golden file rewritten; review the diff")
    assert text == path.read_text(), f"{path} differs (UPDATE_GOLDEN=1 rewrites it)"


# --- the scenarios -----------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> SpecRepo:
    repo = SpecRepo(tmp_path / "spec")
    commit_spec(repo, spec(), "studio on 2026.4.2", engines_node=">=22.14.0")
    return repo


def bump_commit(repo: SpecRepo) -> str:
    data = spec("2026.4.3", {"@openclaw/discord": "2026.4.3"})
    return commit_spec(repo, data, "openclaw 2026.4.3, discord 2026.4.3", engines_node=">=22.14.0")


def test_bump(repo, capsys):
    """Core and one plugin bumped on a healthy fleet: nothing to warn about."""
    status_branch(repo, healthy())
    base = str(repo.repo.head.target)
    head = bump_commit(repo)
    check_golden("bump.md", markdown_plan(repo, base, head, capsys))


def test_revert(repo, capsys):
    """The revert of that bump: a downgrade, which the plan says."""
    status_branch(repo, healthy())
    bump = bump_commit(repo)
    message = f'Revert "openclaw 2026.4.3, discord 2026.4.3"\n\nThis reverts commit {bump}.'
    head = repo.revert(bump, message)
    check_golden("revert.md", markdown_plan(repo, bump, head, capsys))


def test_red_held(tmp_path, capsys):
    """mac-2 went red and the fleet froze; a quiet fleet whose analysis needs no requests."""
    repo = SpecRepo(tmp_path / "spec")
    quiet = {"minRequests: 50": "minRequests: 0"}
    base = commit_spec(repo, spec(**quiet), "studio on 2026.4.2")
    freeze = {
        "fleet": "studio", "reason": "mac-2 red after restart: gateway default not ready",
        "host": "mac-2", "createdAt": "2026-12-01T09:05:00Z",
    }  # fmt: skip
    status = healthy()
    status[f"{NODES}/mac-2.json"] = observed("mac-2", ready=False, weight=0)
    status["fleets/studio/freeze.json"] = json.dumps(freeze).encode()
    status_branch(repo, status)
    head = commit_spec(repo, spec("2026.4.3", **quiet), "openclaw 2026.4.3")
    check_golden("red-held.md", markdown_plan(repo, base, head, capsys))


def test_node_refusal(repo, capsys):
    """The target's engines.node excludes the Node mac-2 last ran."""
    status_branch(repo, healthy(**{"mac-2": "22.1.0"}))
    base = str(repo.repo.head.target)
    data = spec("2026.4.3", {"@openclaw/discord": "2026.4.3"})
    head = commit_spec(repo, data, "openclaw 2026.4.3 (Node 24.16)", engines_node=">=24.16.0")
    check_golden("node-refusal.md", markdown_plan(repo, base, head, capsys))


# --- what the golden files must say, and that they render --------------------------------------

GOLDEN_FILES = ("bump.md", "revert.md", "red-held.md", "node-refusal.md")
WARNINGS = {
    "bump.md": [],
    "revert.md": ["downgrade: openclaw 2026.4.3 -> 2026.4.2 (a rollback?)"],
    "red-held.md": [
        "mac-2 is out of service: gateway default not ready; profile default at weight 0",
        "canary analysis: minRequests is 0, so one request in a soak decides it",
        "the fleet is frozen: mac-2 red after restart",
    ],
    "node-refusal.md": [
        "mac-2: node 22.1.0 does not satisfy engines.node '>=24.16.0' of openclaw@2026.4.3"
    ],
}


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_each_golden_file_says_what_a_reviewer_needs(name):
    """The marker, the estimate, the steps folded in execution order, and exactly the warnings
    of its scenario (in that order), so a careless regeneration cannot drop one."""
    text = (GOLDEN / name).read_text()
    assert text.startswith("<!-- openclaw-reconciler plan: studio -->\n")
    assert re.search(r"about \*\*\d+m\d\ds\*\* \(`<base>` → `<head>`\)", text)
    order = re.search(r"^\*\*Order:\*\* (.*)$", text, re.M)
    assert order is not None
    hosts = [part.split(" ")[0] for part in order.group(1).split(" → ")]
    assert re.findall(r"<summary>([a-z0-9-]+): \d+ steps?</summary>", text) == hosts
    numbers = [int(n) for n in re.findall(r"^\| (\d+) \|", text, re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and numbers
    warnings = re.findall(r"^> ⚠️ (.*)$", text, re.M)
    assert len(warnings) == len(WARNINGS[name])
    for line, expected in zip(warnings, WARNINGS[name], strict=True):
        assert line.startswith(expected), (line, expected)


def cells(line: str) -> int:
    """The cells of a table row: split at each `|` not escaped (a code span does not protect
    one)."""
    return len(re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|")))


def ragged_rows(text: str) -> list[str]:
    """Table rows whose cell count is not their header's."""
    bad, header = [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            header = None
        elif header is None and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = cells(line)
        elif header is not None and cells(line) != header:
            bad.append(line)
    return bad


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_every_table_row_has_its_headers_cells(name):
    assert ragged_rows((GOLDEN / name).read_text()) == []


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_file_renders_as_markdown(name):
    """markdown-it (installed with rich) reads every table as a table, the marker and the
    folds as HTML, and each warning as a paragraph of its own."""
    markdown_it = pytest.importorskip("markdown_it")
    text = (GOLDEN / name).read_text()
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    assert tokens[0].type == "html_block" and tokens[0].content.startswith("<!-- ")
    tables = sum(1 for line in text.splitlines() if line.startswith("|---"))
    assert sum(t.type == "table_open" for t in tokens) == tables
    folds = re.findall(r"^<details><summary>.*</summary>$", text, re.M)
    html = [t.content.strip() for t in tokens if t.type == "html_block"][1:]
    assert html == [part for fold in folds for part in (fold, "</details>")]
    quoted = False
    paragraphs = []
    for t in tokens:
        quoted = {"blockquote_open": True, "blockquote_close": False}.get(t.type, quoted)
        if quoted and t.type == "inline":
            paragraphs.append(t.content)
    assert paragraphs == [w.removeprefix("> ") for w in re.findall(r"^> ⚠️ .*$", text, re.M)]


# --- not golden: the wall clock, and cases the four scenarios do not reach ---------------------


def test_a_closed_maintenance_window_is_said(repo, capsys):
    """Not golden: `held_notices` reads the wall clock. A deny window of every day from 00:00
    for 24h (UTC) is closed at any time, so the notice needs no pinned clock; with no open
    minute in the next 8 days it names no opening time either."""
    never = 'windows:\n  - kind: deny\n    start: "00:00"\n    duration: 24h\nloadBalancer:'
    base = str(repo.repo.head.target)
    head = commit_spec(repo, spec("2026.4.3", **{"loadBalancer:": never}), "openclaw 2026.4.3")
    text = markdown_plan(repo, base, head, capsys)
    assert "> ⚠️ no maintenance window is open now: the rollout waits for one" in text.splitlines()


def test_markdown_of_plans_the_scenarios_do_not_reach():
    """A host added reads as added, an all-at-once plan folds its fleet steps once, a `|` in a
    cell is escaped, and npm scoped names are code spans (bare, GitHub would notify a team)."""
    data = YAML(typ="safe").load(spec())
    head = fleet_of(spec())
    roles = {h.name: h.role for h in head.hosts}
    added = plan(head, None, base=Fleet.model_validate({**data, "hosts": data["hosts"][:2]}))
    assert "| host-added | `mac-3` | (none) | (added) |" in plan_markdown(added, roles)

    at_once = {**data, "rollout": {**data["rollout"], "strategy": "all-at-once"}}
    text = plan_markdown(plan(Fleet.model_validate(at_once), None, base=head), roles)
    assert "all-at-once, 1 step, about" in text
    assert re.findall("<summary>.*</summary>", text) == [
        "<summary>mac-1, mac-2, mac-3: 1 step</summary>"
    ]

    piped = Change(kind="registry", subject="openclaw.registry", before="a|b", after="c")
    text = plan_markdown(added.model_copy(update={"changes": [piped]}), roles)
    assert "| registry | `openclaw.registry` | a\\|b | c |" in text and ragged_rows(text) == []

    warned = added.model_copy(update={"warnings": ["@openclaw/matrix@2026.4.3: peer range"]})
    text = plan_markdown(warned, roles)
    assert "> ⚠️ `@openclaw/matrix@2026.4.3`: peer range" in text
    assert "then `@openclaw/discord@2026.4.2` then" in text
