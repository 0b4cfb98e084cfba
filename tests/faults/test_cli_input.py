"""Bad command-line and daemon-config input: one clear line on stderr and exit 2, never a
traceback (the real CLI, as a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *argv],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize("fleet", ["../../evil", "Lab", "a/b", "-x", "x" * 64, ""])
@pytest.mark.parametrize("command", ["status", "history", "unfreeze", "reconcile"])
def test_a_fleet_that_is_no_fleet_name_is_refused_before_anything(
    command: str, fleet: str, tmp_path: Path
) -> None:
    extra = {"unfreeze": ["--reason", "x"], "reconcile": ["--once"]}.get(command, [])
    done = cli(command, "--remote", str(tmp_path / "absent"), f"--fleet={fleet}", *extra)
    assert done.returncode == 2, done.stderr
    assert "--fleet" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "absent").exists()


CONFIGS = {
    "missing secret file": (
        "remote: /tmp/x\nfleets: [lab]\nwebhookSecrets:\n  github:\n    file: {tmp}/absent\n",
        "webhookSecrets.github.file: cannot read",
    ),
    "unknown key": ("remote: /tmp/x\nfleets: [lab]\nwebhooks: {{}}\n", "webhooks"),
    "not a mapping": ("- remote\n", "expected a mapping"),
    "bad yaml": ("remote: [\n", "cannot read the configuration"),
    "bad port": ("remote: /tmp/x\nfleets: [lab]\nhttp:\n  port: 70000\n", "http.port"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_a_bad_daemon_config_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    text, expected = CONFIGS[case]
    config = tmp_path / "config.yaml"
    config.write_text(text.format(tmp=tmp_path))
    done = cli("run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_absent_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = cli("run", "--config", str(tmp_path / "none.yaml"))
    assert done.returncode == 2 and "cannot read the configuration" in done.stderr
    assert "Traceback" not in done.stderr
