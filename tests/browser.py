"""Real headless Chromium for the fleet page's tests: Debian's build, driven by playwright.

The tests never download a browser: they launch `/usr/bin/chromium` (CI installs it with
apt-get). A machine without it fails the test that needs it, with the command that fixes that.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

CHROMIUM = "/usr/bin/chromium"
MISSING = (
    "Chromium is missing: the fleet page's tests drive Debian's Chromium "
    "(apt-get install chromium); they never download a browser"
)


def chromium_path() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        pytest.fail(MISSING)
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on the way out."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """What a page said and asked for while a test drove it."""

    page: Page
    errors: list[str] = field(default_factory=list)
    """Console errors and uncaught exceptions."""
    failed: list[str] = field(default_factory=list)
    """Requests that failed (refused, aborted, blocked by the CSP)."""
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.errors, f"the page logged errors: {self.errors}"
        assert not self.failed, f"requests failed: {self.failed}"


def watch(page: Page) -> Watched:
    watched = Watched(page)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"console: {message.text} at {message.location}")

    def failed(request: Request) -> None:
        watched.failed.append(f"{request.method} {request.url}: {request.failure}")

    page.on("console", console)
    page.on("pageerror", lambda error: watched.errors.append(f"pageerror: {error}"))
    page.on("requestfailed", failed)
    page.on("request", lambda request: watched.requests.append(request.url))
    return watched
