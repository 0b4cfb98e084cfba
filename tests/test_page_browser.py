"""The fleet page in real headless Chromium, served by a real daemon (`reconciler run`, as
tests/test_daemon.py starts it) while it rolls a sandbox fleet out over SSH.

What a person watching the page would see is checked against the status branch itself: the
page names the status commit it was built from (`data-status-commit`), and the test reads the
remote's status branch at that commit with `reconciler.views.page.collect`. Waits are bounded polls
of the page or of the status branch, never a timing goal.

`test_screenshot_of_a_red_and_restored_rollout` also makes docs/fleet-page.png, when
UPDATE_DOCS_SCREENSHOT=1 (else only in tmp_path).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2
import pytest

from reconciler.sandbox.faults import versioned
from reconciler.sandbox.processes import free_port
from reconciler.sandbox.world import Registry, World
from reconciler.views.page import FleetPage, collect
from tests.browser import chromium, watch
from tests.test_daemon import Daemon, rollout, wait_for

if TYPE_CHECKING:  # playwright itself is imported by tests.browser, which says if it is missing
    from playwright.sync_api import Page

FLEET = "sandbox"
TOKEN = "page-token-for-tests"
DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "fleet-page.png"
PAGE_WAIT_S = 120.0

ADOPTION_WAIT_S = 360.0


class PageDaemon(Daemon):
    """`reconciler run --config` serving the page (and, with `token`, wanting it)."""

    def __init__(self, root: Path, remote: str, port: int, *, token: str | None = None) -> None:
        http: dict[str, Any] = {"bind": "127.0.0.1", "port": port}
        env = dict(os.environ)
        if token is not None:
            http["pageToken"] = {"env": "TEST_PAGE_TOKEN"}
            env["TEST_PAGE_TOKEN"] = token
        self.config = root / "page-daemon.yaml"
        config = {"remote": remote, "fleets": [FLEET], "cache": str(root / "daemon-cache"),
                  "pollInterval": 2.0, "http": http}  # fmt: skip
        self.config.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        self.port = port
        self.log = (root / "daemon.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        wait_for("the daemon's /healthz", self.healthy, 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture
def served(tmp_path: Path, registry: Registry) -> Iterator[tuple[World, PageDaemon]]:
    """A sandbox fleet of three hosts on openclaw 2026.4.2, adopted by a running daemon."""
    with World(tmp_path / "w", names=("mac-1", "mac-2", "mac-3"), steps=(100,),
               registry=registry) as world:  # fmt: skip
        daemon = PageDaemon(world.root, world.remote, free_port())
        try:
            world.bump("2026.4.2")
            # Bounded generously: on a busy CI machine (the real-product lane beside this) three
            # hosts' first observations (doctor each) took over two minutes once.
            adopted = lambda: (rollout(world) or {}).get("phase") == "Complete"  # noqa: E731
            wait_for("adoption", adopted, ADOPTION_WAIT_S)
            yield world, daemon
            assert daemon.stop() == 0
        finally:
            daemon.kill()


# --- what the page shows, read from the DOM -----------------------------------------------------

SHOWN = """() => {
  const section = document.querySelector("main section");
  const rows = [...document.querySelectorAll("table.hosts tbody tr")].map(tr => ({
    host: tr.querySelector("th[scope=row]").innerText.trim(),
    installed: tr.querySelector("td.installed").innerText.trim(),
    weight: tr.querySelector("td.weight").innerText.trim(),
    health: tr.querySelector("td.health").innerText.trim(),
  }));
  const lanes = [...document.querySelectorAll("svg.timeline g.lane")].map(g => ({
    host: g.dataset.host, changes: Number(g.dataset.changes), last: Number(g.dataset.last),
  }));
  const marks = [...document.querySelectorAll("svg.timeline .mark")].map(m => ({
    id: m.id, commit: m.dataset.commit, kind: m.dataset.kind, label: m.getAttribute("aria-label"),
  }));
  return {
    statusCommit: section ? section.dataset.statusCommit : null,
    phase: (document.querySelector("main h2 .phase") || {}).textContent || null,
    rows, lanes, marks,
    loaded: window.__loaded === 1,
  };
}"""


def shown(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(SHOWN)
    return result


def open_page(page: Page, url: str) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_load_state("load")
    page.evaluate("window.__loaded = 1")  # a full reload would lose it; the live swap does not
    return shown(page)


def wait_for_page(
    page: Page, what: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll what the (live) page shows until `predicate` holds; what it showed then."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        seen[:] = [shown(page)]
        return predicate(seen[0])

    wait_for(f"the page to show {what} (last seen: phase {_phase(seen)})", check, PAGE_WAIT_S)
    return seen[0]


def _phase(seen: list[dict[str, Any]]) -> str:
    return str(seen[0]["phase"]) if seen else "nothing"


def status_at(world: World, commit: str) -> FleetPage:
    """The remote's status branch as it was at `commit` (waiting for the daemon's push)."""

    def pushed() -> bool:
        try:
            world.status_repo().revparse_single(commit)
        except (KeyError, ValueError, pygit2.GitError):
            return False
        return True

    wait_for(f"status commit {commit[:12]} on the remote", pushed, 60)
    return collect(world.status_repo(), FLEET, at=commit)


def weight_text(weights: dict[str, int | None], desired: dict[str, int]) -> str:
    """A weight cell's text as the page writes it: `profile: weight (desired)` per profile."""
    return "\n".join(
        f"{p}: {'-' if w is None else w}" + (f" ({desired[p]})" if p in desired else "")
        for p, w in weights.items()
    )


def assert_table_is_the_status_branch(world: World, now: dict[str, Any]) -> FleetPage:
    """The hosts table shows what the status branch held at the page's status commit."""
    assert now["statusCommit"], "the page does not name its status commit"
    truth = status_at(world, now["statusCommit"])
    assert now["phase"] == truth.status["phase"]
    expected = [
        {
            "host": h.name,
            "installed": h.installed,
            "weight": weight_text(dict(h.weights), dict(h.desired)),
        }
        for h in truth.hosts
    ]
    table = [{k: row[k] for k in ("host", "installed", "weight")} for row in now["rows"]]
    assert table == expected, f"the table is not the status branch at {now['statusCommit']}"
    assert [h.name for h in truth.hosts] == [h.name for h in world.hosts]
    return truth


def mark_count(now: dict[str, Any]) -> int:
    return len(now["marks"])


def changes(now: dict[str, Any]) -> int:
    return sum(lane["changes"] for lane in now["lanes"])


# --- the tests -----------------------------------------------------------------------------------


def test_the_live_page_follows_a_rollout(served: tuple[World, PageDaemon]) -> None:
    world, daemon = served
    # mac-1 takes a while to be ready on the new release: the page has time to show it mid-way
    world.set_faults(world.host("mac-1"), ready_delay_s=versioned(12, "2026.4.3"))
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        watched = watch(page)
        before = open_page(page, daemon.url)
        assert before["phase"] == "Complete" and before["loaded"]
        assert [lane["host"] for lane in before["lanes"]] == ["mac-1", "mac-2", "mac-3"]
        assert page.locator("svg.timeline").get_attribute("data-series") == "3"
        assert_table_is_the_status_branch(world, before)

        bump = world.bump("2026.4.3")
        mid = wait_for_page(
            page,
            "the rollout under way, with marks it added",
            lambda now: now["phase"] == "Progressing" and mark_count(now) > mark_count(before),
        )
        assert mid["loaded"], "the page was reloaded, not refreshed in place"
        assert [lane["host"] for lane in mid["lanes"]] == ["mac-1", "mac-2", "mac-3"]
        truth = assert_table_is_the_status_branch(world, mid)
        assert truth.status["specCommit"] == bump

        focused = tab_to_a_mark(page)
        assert_detail_shows(page, focused, world)
        # the next live refresh swaps <main> and keeps the focused mark and its detail
        page.evaluate("document.querySelector('main section').dataset.old = '1'")
        wait_for_page(page, "a live refresh", lambda now: _refreshed(page))
        assert page.evaluate("document.activeElement && document.activeElement.id") == focused
        assert_detail_shows(page, focused, world)

        done = wait_for_page(
            page,
            "the finished rollout",
            lambda now: now["phase"] == "Complete" and now["statusCommit"] != mid["statusCommit"],
        )
        assert done["loaded"], "the page was reloaded, not refreshed in place"
        assert changes(done) > changes(mid) >= changes(before)
        assert all(lane["last"] == 100 for lane in done["lanes"]), done["lanes"]
        assert_table_is_the_status_branch(world, done)
        watched.assert_clean()
    assert (rollout(world) or {}).get("appliedCommit") == bump


def _refreshed(page: Page) -> bool:
    return bool(page.evaluate("!document.querySelector('main section').dataset.old"))


def tab_to_a_mark(page: Page) -> str:
    """Press Tab until a mark of the timeline has the focus; its id."""
    page.locator("body").focus()
    for _ in range(400):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "(() => { const a = document.activeElement;"
            " return a && a.classList.contains('mark') ? a.id : null; })()"
        )
        if focused:
            return str(focused)
    pytest.fail("Tab never reached a mark of the timeline")


def assert_detail_shows(page: Page, mark_id: str, world: World) -> None:
    """`#mark-detail` names the focused mark's status commit, a commit of the status branch."""
    commit = page.get_attribute(f"#{mark_id}", "data-commit")
    assert commit, mark_id
    detail = page.inner_text("#mark-detail")
    assert f"status commit {commit[:12]}" in detail, detail
    found = world.status_repo().get(commit)
    assert isinstance(found, pygit2.Commit)
    assert found.message.split("\n", 1)[0] in detail


def test_screenshot_of_a_red_and_restored_rollout(
    served: tuple[World, PageDaemon], tmp_path: Path
) -> None:
    """mac-2 goes red after its upgrade: the page shows it red with the reasons the status
    branch holds and a red mark; then it is restored, and the finished page is screenshot.

    Its first restore cannot succeed (the old release crashes at start until the test clears
    that fault), so the red state stays on the status branch until the page has shown it."""
    world, daemon = served
    mac2 = world.host("mac-2")
    world.set_faults(mac2, doctor_red=["2026.4.3"], crash_at_start=["2026.4.2"])
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme="light")
        watched = watch(page)
        open_page(page, daemon.url)
        world.bump("2026.4.3")

        red = wait_for_page(page, "mac-2 red after its upgrade", showing("red", "mac-2", "red"))
        truth = status_at(world, red["statusCommit"])
        host = next(h for h in truth.hosts if h.name == "mac-2")
        assert host.green is False and host.reasons, "the status branch does not hold mac-2 red"
        assert _health(red, "mac-2").splitlines()[: 1 + len(host.reasons)] == [
            "red",
            *host.reasons,
        ]
        assert any("doctor_red" in reason for reason in host.reasons), host.reasons
        reds = [m for m in red["marks"] if m["kind"] == "red"]
        assert len(reds) == 1 and reds[0]["label"].startswith("mac-2 red"), reds
        assert (page.locator(f"#{reds[0]['id']} title").text_content() or "").startswith(
            "mac-2: red after"
        )

        world.set_faults(mac2)  # the old release starts again: the next restore succeeds
        done = wait_for_page(page, "mac-2 restored", showing("restored", "mac-2", "green"))
        assert done["loaded"], "the page was reloaded, not refreshed in place"
        assert done["phase"] == "Failed"
        assert_table_is_the_status_branch(world, done)
        assert "Frozen" in page.inner_text("main .notice")
        frame_the_picture(page, reds[0]["id"])
        assert reds[0]["commit"][:12] in page.inner_text("#mark-detail")
        shot = tmp_path / "fleet-page.png"
        page.screenshot(path=str(shot))
        watched.assert_clean()
    assert png_size(shot) == (1280, 800)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_PNG.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_PNG)


FRAME = """mark => {
  const m = document.getElementById(mark);
  m.focus(); m.blur();  // its detail stays in the bar, without a focus ring in the picture
  const bar = document.getElementById("mark-detail").offsetHeight;
  const table = document.querySelector("table.hosts").getBoundingClientRect().top;
  window.scrollTo(0, table + window.scrollY - bar - 8);
}"""


def frame_the_picture(page: Page, mark_id: str) -> None:
    """The red mark's detail in the bar at the top, then the hosts table and the timeline."""
    page.evaluate(FRAME, mark_id)


def showing(kind: str, host: str, health: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a page has a mark of `kind` and its Health cell of `host` says `health`."""
    return lambda now: (
        any(m["kind"] == kind for m in now["marks"]) and _health(now, host).startswith(health)
    )


def _health(now: dict[str, Any], host: str) -> str:
    return str(next(r["health"] for r in now["rows"] if r["host"] == host))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_page_wants_its_bearer_token(tmp_path: Path) -> None:
    """With `http.pageToken` set, `/` (and its live part) answers 401 without the token."""
    remote = pygit2.init_repository(str(tmp_path / "spec.git"), bare=True)
    daemon = PageDaemon(tmp_path, remote.path, free_port(), token=TOKEN)
    try:

        def get(path: str, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
            try:
                headers = {"Authorization": authorization} if authorization else {}
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            finally:
                connection.close()

        status, headers, body = get("/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), body
        assert b"<html" not in body
        assert get("/?part=main")[0] == 401
        assert get("/", "Bearer not-the-token")[0] == 401
        assert get("/", f"Basic {TOKEN}")[0] == 401
        status, headers, body = get("/", f"Bearer {TOKEN}")
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert b'<main id="main">' in body
        status, _, body = get("/?part=main", f"Bearer {TOKEN}")
        assert status == 200 and body.lstrip().startswith(b'<p id="mark-detail"')
        assert get("/healthz")[0] == 200, "health checks need no token"
        assert daemon.stop() == 0
    finally:
        daemon.kill()
