"""Shared pytest plugins: real parts for the integration tests."""

pytest_plugins = [
    "tests.fixtures.sshfleet",
    "tests.fixtures.registry",
    "tests.fixtures.haproxy",
    "tests.fixtures.webhook",
]
