"""The real-product lane never passes by being skipped: a skip here is reported as a failure.

A lane that quietly skips (a release that could not be installed, a missing Node) would leave
CI green with the real product untested. An xfail is not a skip: it is a known failure that
turns red (strict) once fixed.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"the real-product lane must not skip: {report.longrepr}"
