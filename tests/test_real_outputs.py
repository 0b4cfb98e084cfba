"""The fact parsers on output captured from the REAL openclaw (2026.9.5 and 2026.9.6).

tests/data/real/ holds what the released product printed on a test host of the real-product
lane (HOME paths rewritten): `plugins list --json`, `doctor --json`, `health --json`, and
`update --json` refusing a downgrade. The
lane itself parses the same commands live (tests/realproduct/); these pin the exact bytes, so
a parser change that the real shape would break fails in the fast suite too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import CommandFailed, FactParseError
from reconciler.hosts import operations, productfacts
from reconciler.hosts.transport import CommandResult

REAL = Path(__file__).parent / "data" / "real"


def result(argv: tuple[str, ...], name: str, exit_code: int = 0) -> CommandResult:
    return CommandResult(argv, exit_code, (REAL / name).read_bytes(), b"", 0.1, False)


def test_plugins_list_reads_tracked_and_bundled_plugins() -> None:
    listed = productfacts.parse_plugins(
        "mac-1", result(productfacts.plugins().argv, "plugins-list-2026.9.5.json")
    )

    by_id = {p.id: p for p in listed}
    assert by_id["discord"] == productfacts.Plugin(
        id="discord",
        version="2026.9.5",
        origin="global",
        status="loaded",
        enabled=True,
        install_spec="@openclaw/discord@2026.9.5",
    )
    assert {(p.origin, p.status, p.enabled) for p in listed if p.id != "discord"} == {
        ("bundled", "disabled", False),
        ("bundled", "loaded", True),
    }


def test_plugins_list_without_a_plugins_array_is_refused() -> None:
    bad = CommandResult(productfacts.plugins().argv, 0, b'{"workspaceDir": "/x"}', b"", 0.1, False)
    with pytest.raises(FactParseError, match="plugins"):
        productfacts.parse_plugins("mac-1", bad)


def test_real_doctor_on_a_healthy_host_is_one_loopback_warning() -> None:
    doctor = productfacts.parse_doctor(
        "mac-1", result(productfacts.doctor().argv, "doctor-2026.9.6.json")
    )

    assert doctor.ok is False and doctor.checks_run == 35
    assert [(f.severity, f.check_id) for f in doctor.findings] == [
        ("warning", "core/doctor/node-hosting-preconditions")
    ]


def test_real_health_is_a_reachable_ok_snapshot() -> None:
    health = productfacts.parse_health(
        "mac-1", result(productfacts.health().argv, "health-2026.9.6.json")
    )

    assert health.reachable and health.ok is True


def test_a_refused_downgrade_is_reported_in_the_products_own_words() -> None:
    """`openclaw update --tag 2026.9.5 --yes --json` on 2026.9.6 after it migrated the state:
    status error, reason database-schema-preflight, and the product's sentence on stderr."""
    argv = ("openclaw", "update", "--tag", "2026.9.5", "--json", "--yes", "--no-restart")
    refused = result(argv, "update-downgrade-refused-2026.9.6.json", exit_code=1)
    with pytest.raises(CommandFailed) as caught:
        operations.check_update("mac-1", refused)
    assert "status 'error'" in str(caught.value)
    assert (
        "Update refused: state database /home/openclaw/.openclaw/state/openclaw.sqlite has "
        "schema 18; target supports 17; writer build 2026.9.6." in str(caught.value)
    )
