"""Shared pytest plugins: real parts for the integration tests."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.sshfleet",
    "tests.fixtures.registry",
    "tests.fixtures.haproxy",
    "tests.fixtures.webhook",
    "tests.fixtures.forge",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-product lane first: it is the longest module (minutes of real installs), so
    with `-n 2 --dist loadfile` one worker starts on it while the other takes the rest."""
    items.sort(key=lambda item: item.get_closest_marker("realproduct") is None)
