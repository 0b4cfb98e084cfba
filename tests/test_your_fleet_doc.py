"""docs/your-fleet.md, run: every `reconciler` command in it parses, its fleet file validates
(with a known_hosts made by its own `ssh-keyscan` line against a real sshd), and its HAProxy
configuration passes `haproxy -c`. The reconcile itself is what the demo and the engine tests
do against real hosts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.cli import build_parser, main
from reconciler.sandbox.sshfleet import SSHFleet

DOC = Path(__file__).resolve().parent.parent / "docs" / "your-fleet.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def commands() -> list[list[str]]:
    lines = [line for block in blocks("sh") for line in block.splitlines()]
    return [shlex.split(line.split(" #", 1)[0]) for line in lines if line.startswith("reconciler ")]


def test_every_reconciler_command_of_the_page_parses() -> None:
    found = commands()
    assert {argv[1] for argv in found} >= {"lock", "validate", "plan", "reconcile", "status"}
    parser = build_parser()
    for argv in found:
        parser.parse_args([a.replace('"$PWD"', ".").replace("$PWD", ".") for a in argv[1:]])


def test_the_fleet_file_validates_with_a_known_hosts_from_its_keyscan_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [fleet_yaml] = blocks("yaml")
    [keyscan] = [
        line
        for block in blocks("sh")
        for line in block.splitlines()
        if line.startswith("ssh-keyscan")
    ]
    fleet = SSHFleet(tmp_path / "ssh", 1)
    try:
        host = fleet[0]
        spec = YAML(typ="safe").load(fleet_yaml)
        spec["hosts"][0]["address"], spec["hosts"][0]["port"] = host.address, host.port
        argv = shlex.split(keyscan.split(">")[0])
        argv[argv.index("-p") + 1], argv[-1] = str(host.port), host.address
        scanned = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    finally:
        fleet.close()
    (tmp_path / "known_hosts").write_text(scanned.stdout)
    YAML().dump(spec, tmp_path / "fleet.yaml")

    code = main(["validate", str(tmp_path), "--no-lock"])

    assert code == 0, capsys.readouterr()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is installed by .ci/run")
def test_the_haproxy_configuration_is_accepted_by_haproxy(tmp_path: Path) -> None:
    [config] = blocks("haproxy")
    socket = tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config.replace("/run/haproxy/admin.sock", str(socket)))
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "server gw-1 " in config and "level admin" in config
