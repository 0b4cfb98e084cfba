"""The fleet page without a daemon: `reconciler status --html FILE` is one file that works
offline (checked in real Chromium with every request but the file's own refused), the
timeline's geometry, and text from the status branch shown as text.

The status branches here are real git (pygit2) with real status documents, made by hand so
that times, weights and subjects are exactly what a test needs.
"""

from __future__ import annotations

import dataclasses
import html.parser
import itertools
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2
import pytest

from reconciler.record.documents import (
    Freeze,
    Readiness,
    RolloutRecord,
    seal_readiness,
    with_lb_weights,
)
from reconciler.record.gitstore import STATUS_BRANCH
from reconciler.record.status import Transition
from reconciler.views.page import Mark, collect, render_page
from reconciler.views.timeline import LANE_H, MARK_GAP, Chart, chart
from tests.browser import chromium, watch
from tests.test_server import readiness, rollout

FLEET = "minis"
T0 = 1_795_000_000  # 2026-11-18 11:06:40 UTC
WHO = "reconciler", "reconciler@example.com"


@dataclass
class StatusBranch:
    """A bare repository with a spec commit on main and a status branch grown by hand."""

    repo: pygit2.Repository
    files: dict[str, bytes] = field(default_factory=dict)
    head: pygit2.Oid | None = None

    @classmethod
    def create(cls, path: Path) -> StatusBranch:
        return cls(pygit2.init_repository(str(path), bare=True, initial_head="main"))

    def spec(self, subject: str) -> str:
        """An operator's spec commit on main (the page shows its subject)."""
        blob = self.repo.create_blob(b"# the spec\n")
        builder = self.repo.TreeBuilder()
        builder.insert("README.md", blob, pygit2.enums.FileMode.BLOB)
        who = pygit2.Signature("Operator", "operator@example.com", T0 - 60, 0)
        return str(self.repo.create_commit(
            "refs/heads/main", who, who, subject, builder.write(), []
        ))  # fmt: skip

    def status(
        self,
        at: int,
        subject: str,
        *,
        spec: str,
        nodes: Sequence[Readiness] = (),
        record: RolloutRecord | None = None,
        freeze: Freeze | None = None,
        thaw: bool = False,
    ) -> str:
        """One status commit at `at` (seconds since the epoch), as the engine writes them."""
        host = subject.partition(": ")[0]
        t = Transition(FLEET, subject, spec_commit=spec, node=host if " " not in host else None)
        for doc in nodes:
            t.readiness(doc)
        if record is not None:
            t.put("rollout.json", record.model_copy(update={"spec_commit": spec}))
        if freeze is not None or thaw:
            t.put("freeze.json", freeze)
        for path, data in t.files.items():
            if data is None:
                self.files.pop(path, None)
            else:
                self.files[path] = data
        index = pygit2.Index()
        for path, data in sorted(self.files.items()):
            entry = pygit2.IndexEntry(path, self.repo.create_blob(data), pygit2.enums.FileMode.BLOB)
            index.add(entry)
        who = pygit2.Signature(*WHO, at, 0)
        parents = [self.head] if self.head is not None else []
        self.head = self.repo.create_commit(
            None, who, who, t.message(), index.write_tree(self.repo), parents
        )
        self.repo.references.create(f"refs/heads/{STATUS_BRANCH}", self.head, force=True)
        return str(self.head)


def node(
    host: str, weight: int, *, core: str = "2026.4.3", reasons: Sequence[str] = ()
) -> Readiness:
    """A host's readiness with `weight` on its one profile; red with `reasons` when given."""
    doc = readiness(host, core=core, green=not reasons)
    if reasons:
        body = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc = seal_readiness({**body, "reasons": list(reasons)})
    return with_lb_weights(doc, {"default": weight})


def upgrade_story(branch: StatusBranch, spec_subject: str = "openclaw 2026.4.3") -> str:
    """mac-1 upgraded (drained, installed, back to 100), mac-2 red after its upgrade and
    restored; the spec commit's id."""
    spec = branch.spec(spec_subject)
    progressing = rollout({"mac-1": "Pending", "mac-2": "Pending"})
    progressing = progressing.model_copy(update={"phase": "Progressing"})
    branch.status(T0, "rollout 0d1a26e67d8f started: openclaw 2026.4.2 -> 2026.4.3", spec=spec,
                  nodes=[node("mac-1", 100, core="2026.4.2"), node("mac-2", 100, core="2026.4.2")],
                  record=progressing)  # fmt: skip
    steps = [
        (2, "mac-1: bookmarked (openclaw 2026.4.2, weights mac-1=100)", None),
        (3, "mac-1: drained (weight 0)", node("mac-1", 0, core="2026.4.2")),
        (30, "mac-1: installed openclaw 2026.4.3", None),
        (30, "mac-1: restarted", None),
        (31, "mac-1: openclaw 2026.4.3 running, doctor green, ready", node("mac-1", 0)),
        (31, "mac-1: weight 100%", node("mac-1", 100)),
        (33, "mac-2: bookmarked (openclaw 2026.4.2, weights mac-2=100)", None),
        (34, "mac-2: drained (weight 0)", node("mac-2", 0, core="2026.4.2")),
        (60, "mac-2: installed openclaw 2026.4.3", None),
        (61, "mac-2: restarted", None),
    ]
    for dt, subject, doc in steps:
        branch.status(T0 + dt, subject, spec=spec, nodes=[doc] if doc else [])
    red = node("mac-2", 0, reasons=["profile default: doctor config.schema.invalid (error)"])
    frozen = Freeze(fleet=FLEET, reason="mac-2 red after upgrade", host="mac-2",
                    spec_commit=spec, created_at="2026-11-18T11:08:02Z")  # fmt: skip
    branch.status(T0 + 82, "mac-2: red after upgrade; restoring from bookmark, fleet frozen",
                  spec=spec, nodes=[red], freeze=frozen)  # fmt: skip
    failed = rollout({"mac-1": "Done", "mac-2": "RolledBack"}).model_copy(
        update={"phase": "Failed"}
    )
    branch.status(T0 + 95, "mac-2: restored to openclaw 2026.4.2 from bookmark 2, weights "
                  "{'mac-2': 100}", spec=spec, nodes=[node("mac-2", 100, core="2026.4.2")],
                  record=failed)  # fmt: skip
    return spec


# --- the HTML export ---------------------------------------------------------------------------


class Elements(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text of each <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def elements(document: str) -> Elements:
    parsed = Elements()
    parsed.feed(document)
    parsed.close()
    return parsed


def export(branch: StatusBranch, tmp_path: Path) -> Path:
    """`reconciler status --html` of the branch's fleet, as an operator runs it."""
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--remote", branch.repo.path,
         "--fleet", FLEET, "--cache", str(tmp_path / "cache"), "--html", str(out / "fleet.html")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fleet.html"], "the export is one file"
    return out / "fleet.html"


def test_the_html_export_is_one_file_that_needs_no_network(tmp_path: Path) -> None:
    branch = StatusBranch.create(tmp_path / "remote.git")
    upgrade_story(branch)
    page_file = export(branch, tmp_path)
    document = page_file.read_text()

    parsed = elements(document)
    # One <link>: the empty icon, which keeps a browser from asking a server for /favicon.ico
    assert [a for tag, a in parsed.tags if tag == "link"] == [{"rel": "icon", "href": "data:,"}]
    pointing = [
        (tag, name, value)
        for tag, attrs in parsed.tags
        for name, value in attrs.items()
        if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data")
        and not (value or "").startswith("#")
        and (tag, name, value) != ("link", "href", "data:,")
    ]
    assert not pointing, f"attributes that point outside the file: {pointing}"
    css = "\n".join(parsed.styles) + "".join(a.get("style") or "" for _, a in parsed.tags)
    assert "@import" not in css and "url(" not in css
    assert len([t for t, _ in parsed.tags if t == "script"]) == 1
    assert [a for t, a in parsed.tags if t == "script"] == [{}], "a script loads a source"

    with chromium() as browser:
        page = browser.new_page()
        watched = watch(page)
        refused: list[str] = []

        def route(r: object) -> None:
            from playwright.sync_api import Route

            assert isinstance(r, Route)
            if r.request.url.startswith("file:"):
                r.continue_()
            else:
                refused.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        page.focus(".mark")  # its detail line: the inline script runs offline too
        detail = page.inner_text("#mark-detail")
        assert "status commit" in detail, detail
        lanes = page.eval_on_selector_all("g.lane", "gs => gs.map(g => g.dataset.host)")
        assert lanes == ["mac-1", "mac-2"]
        assert page.locator("table.hosts tbody th[scope=row]").all_inner_texts() == [
            "mac-1",
            "mac-2",
        ]
        assert refused == [], f"the exported page asked the network for {refused}"
        assert watched.requests == [page_file.as_uri()], watched.requests
        watched.assert_clean()


# --- the timeline --------------------------------------------------------------------------------


START = datetime(2026, 11, 18, 13, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def steps(path: str) -> list[tuple[str, float]]:
    """An SVG path of M/H/V commands as [(command, value)] (M gives its y)."""
    out = []
    for command, numbers in re.findall(r"([MHV])([-\d.,]+)", path):
        out.append((command, float(numbers.split(",")[-1])))
    return out


def ys(path: str) -> list[float]:
    """The heights a step path visits, in order (larger is lower on the screen)."""
    return [value for command, value in steps(path) if command in "MV"]


def test_the_timeline_has_a_lane_per_host_and_steps_down_at_a_drain_and_back_up() -> None:
    series = {
        "mac-1": [(at(0), 100), (at(10), 0), (at(40), 100)],
        "mac-2": [(at(0), 100), (at(50), 0), (at(90), 100)],
    }
    marks = [
        Mark("mac-1", at(10), "drain", "a" * 40, "mac-1: drained (weight 0)", 0),
        Mark("mac-2", at(50), "drain", "b" * 40, "mac-2: drained (weight 0)", 0),
    ]
    drawn = chart(series, marks, end=at(120))
    assert isinstance(drawn, Chart)

    assert [lane.host for lane in drawn.lanes] == ["mac-1", "mac-2"]
    one, two = drawn.lanes
    assert two.top >= one.top + LANE_H, "lanes overlap"
    for lane in drawn.lanes:
        full, drained, back = ys(lane.path)
        assert drained > full, f"{lane.host}: the line does not go down at the drain"
        assert back == full, f"{lane.host}: the line does not come back up"
        assert lane.top <= full < drained <= lane.top + LANE_H, "the line leaves its lane"
        assert lane.changes == 2 and lane.last_weight == 100
    # the drain happens where the mark is, in each lane's own time
    drain_x = {m.host: m.x for m in drawn.marks}
    for lane in drawn.lanes:
        horizontal = [value for command, value in steps(lane.path) if command == "H"]
        assert horizontal[0] == pytest.approx(drain_x[lane.host], abs=0.1)
    assert drain_x["mac-1"] < drain_x["mac-2"]
    assert drawn.marks[0].y == pytest.approx(ys(one.path)[1], abs=0.1), "a mark off its line"


@pytest.mark.parametrize("second", [30, 600], ids=["mid-chart", "at-the-right-edge"])
def test_marks_of_the_same_second_are_not_drawn_on_top_of_each_other(second: int) -> None:
    series = {"mac-1": [(at(0), 100), (at(second), 0)]}
    same_second = [
        Mark("mac-1", at(second), kind, f"{i}" * 40, f"mac-1: {kind}", 0)
        for i, kind in enumerate(("drain", "install", "restart", "verified", "red", "restored"))
    ]
    drawn = chart(series, same_second, end=at(second))
    assert drawn is not None

    xs = [m.x for m in drawn.marks]
    assert all(b - a >= MARK_GAP for a, b in itertools.pairwise(xs)), xs
    assert max(xs) + 6 <= drawn.width, f"a mark is pushed off the chart: {xs}"
    assert [m.kind for m in drawn.marks] == [m.kind for m in same_second], "order lost"


# --- text from the status branch -----------------------------------------------------------------

SCRIPT = "<script>alert('status')</script>"
IMG = '<img src="x" onerror="alert(1)">'


def test_text_from_the_status_branch_is_shown_as_text(tmp_path: Path) -> None:
    branch = StatusBranch.create(tmp_path / "remote.git")
    spec = upgrade_story(branch, spec_subject=f"openclaw 2026.4.3 {SCRIPT}")
    branch.status(T0 + 100, f"mac-1: drained (weight 0) {SCRIPT}", spec=spec,
                  nodes=[node("mac-1", 0, reasons=[f"profile default: {IMG}"])])  # fmt: skip
    document = render_page([collect(branch.repo, FLEET)])

    parsed = elements(document)
    assert [t for t, _ in parsed.tags].count("script") == 1, "text became a <script>"
    assert "img" not in [t for t, _ in parsed.tags], "text became an <img>"
    assert "&lt;script&gt;alert(" in document

    with chromium() as browser:
        page = browser.new_page()
        watched = watch(page)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.set_content(document)
        assert page.evaluate("document.scripts.length") == 1
        assert f"openclaw 2026.4.3 {SCRIPT}" in page.inner_text("main")
        health = page.inner_text("#host-minis-mac-1 td.health")
        assert "red" in health and IMG in health, health
        labels = page.eval_on_selector_all(
            ".mark", "ms => ms.map(m => m.getAttribute('aria-label'))"
        )
        assert any(SCRIPT in label for label in labels), labels
        assert dialogs == []
        watched.assert_clean()


def test_ids_are_unique_on_a_page_of_two_fleets(tmp_path: Path) -> None:
    branch = StatusBranch.create(tmp_path / "remote.git")
    upgrade_story(branch)
    page = collect(branch.repo, FLEET)
    document = render_page([page, dataclasses.replace(page, fleet="studio")])

    ids = [a["id"] for _, a in elements(document).tags if a.get("id")]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_peers_that_disagree_are_each_named_once_with_their_fields(tmp_path: Path) -> None:
    branch = StatusBranch.create(tmp_path / "remote.git")
    spec = branch.spec("openclaw 2026.4.3")
    upgraded = node("mac-1", 100)
    record = rollout(dict.fromkeys(("mac-1", "mac-2", "mac-3"), "Pending"),
                     golden=upgraded.fingerprint)  # fmt: skip
    old = [node(h, 100, core="2026.4.2") for h in ("mac-2", "mac-3")]
    branch.status(T0, "rollout started", spec=spec, nodes=[upgraded, *old], record=record)

    page = collect(branch.repo, FLEET)
    assert [host for host, _ in page.disagreeing] == ["mac-2", "mac-3"]
    text = re.sub(r"<[^>]+>", "", render_page([page]))
    for host, fields in page.disagreeing:
        assert fields and any("2026.4.2" in f for f in fields)
        assert text.count(f"{host} differs on: ") == 1
