"""`reconciler init` against real sshd hosts and a real npm registry: the keys it pins are the
hosts' own, the repository it writes validates once locked, and a refusal writes nothing."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pygit2
import pytest
from ruamel.yaml import YAML

from reconciler.cli import main
from reconciler.desired.knownhosts import KnownHosts
from reconciler.forge.scaffold import CI_FILES
from reconciler.sandbox.sshfleet import SSHFleet
from reconciler.sandbox.verdaccio import LocalRegistry


def init_argv(target: Path, fleet: SSHFleet, registry: str, *extra: str) -> list[str]:
    argv = ["init", str(target), "--fleet", "studio", "--registry", registry]
    argv += ["--ssh-key-file", str(fleet.client_key), *extra]
    for i, host in enumerate(fleet, 1):
        argv += ["--host", f"mac-{i}={host.user}@{host.address}:{host.port}"]
    return argv


def ssh_keygen_fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def test_init_pins_the_hosts_own_keys_and_validates_once_locked(
    tmp_path: Path, ssh_fleet: SSHFleet, registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "studio"

    code = main(init_argv(target, ssh_fleet, registry.url, "--openclaw", "2026.4.2"))

    out = capsys.readouterr().out
    assert code == 0, out
    pinned = KnownHosts.parse((target / "known_hosts").read_bytes())
    for host in ssh_fleet:
        [key] = [k for name, k in pinned.pairs if name == host.known_hosts_name()]
        assert f"{key.get_name()} {key.get_base64()}" == host.public_key()
        # The fingerprint printed for the operator is the one ssh-keygen gives on the host.
        assert ssh_keygen_fingerprint(host.host_key.with_name("host_ed25519.pub")) in out
    fleet = YAML(typ="safe").load((target / "fleet.yaml").read_text())
    assert [h["role"] for h in fleet["hosts"]] == ["canary", "stable", "stable"]
    assert fleet["openclaw"]["version"] == "2026.4.2"
    assert pygit2.Repository(str(target)).head_is_unborn  # a repository, nothing committed

    assert main(["validate", str(target)]) == 2  # no lock yet: said, not silently passed
    assert "openclaw.lock" in capsys.readouterr().err
    assert main(["lock", str(target)]) == 0
    assert main(["validate", str(target)]) == 0
    assert main(["lock", "--check", str(target)]) == 0


def test_init_takes_the_registrys_latest_release_when_none_is_given(
    tmp_path: Path, ssh_fleet: SSHFleet, registry: LocalRegistry
) -> None:
    target = tmp_path / "studio"
    assert main(init_argv(target, ssh_fleet, registry.url)) == 0
    fleet = YAML(typ="safe").load((target / "fleet.yaml").read_text())
    assert fleet["openclaw"]["version"] == "2026.9.6"  # the catalog's `latest`


def test_every_ci_file_is_written_and_parses(tmp_path: Path, ssh_fleet: SSHFleet) -> None:
    target = tmp_path / "studio"
    assert main(init_argv(target, ssh_fleet, "http://127.0.0.1:9/", "--openclaw", "2026.4.2")) == 0
    for name, ci in CI_FILES.items():
        document = YAML(typ="safe").load((target / ci.path).read_text())
        assert document, name
        assert f"--token-env {ci.token}" in (target / ci.path).read_text()
    assert "plan.md" in (target / ".gitignore").read_text()
    assert "fleet `studio`" in (target / "README.md").read_text()


def test_only_the_ci_files_asked_for(tmp_path: Path, ssh_fleet: SSHFleet) -> None:
    target = tmp_path / "studio"
    argv = init_argv(target, ssh_fleet, "http://127.0.0.1:9/", "--openclaw", "2026.4.2")
    assert main([*argv, "--ci", "gitlab"]) == 0
    assert (target / ".gitlab-ci.yml").exists()
    assert not (target / ".github").exists() and not (target / ".gitea").exists()


def test_a_non_empty_directory_is_refused_and_left_alone(
    tmp_path: Path, ssh_fleet: SSHFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "studio"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    code = main(init_argv(target, ssh_fleet, "http://127.0.0.1:9/", "--openclaw", "2026.4.2"))

    assert code == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studio"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_host_that_does_not_answer_is_named_and_nothing_is_written(
    tmp_path: Path, ssh_fleet: SSHFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "studio"
    argv = init_argv(target, ssh_fleet, "http://127.0.0.1:9/", "--openclaw", "2026.4.2")
    argv += ["--host", f"mac-9=openclaw@127.0.0.1:{closed_port()}", "--timeout", "3"]

    code = main(argv)

    assert code == 2
    assert "mac-9 (127.0.0.1 port" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no target, no staging left behind


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--host", "mac-1=openclaw@", "expected name=user@address[:port]"),
        ("--host", "Mac_1=openclaw@10.0.0.1", "name 'Mac_1' does not match"),
        ("--host", "mac-1=open claw@10.0.0.1", "user 'open claw' does not match"),
        ("--host", "mac-1=openclaw@10.0.0.1:70000", "port 70000 is not in 1-65535"),
        ("--host", "mac-1=openclaw@bad;rm", "is not a host name or IP address"),
        ("--lb", "haproxy:/run/admin.sock", "expected haproxy:unix:///path/admin.sock:BACKEND"),
        ("--registry", "ftp://registry", "expected an http(s):// URL"),
        ("--openclaw", "latest", "not an OpenClaw release"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, said: str
) -> None:
    argv = ["init", str(tmp_path / "studio"), "--fleet", "studio", "--registry", "http://r/"]
    argv += ["--openclaw", "2026.4.2", "--host", "mac-2=openclaw@10.0.0.2", flag, value]

    assert main(argv) == 2
    assert said in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_same_host_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["init", str(tmp_path / "s"), "--fleet", "studio", "--registry", "http://r/"]
    argv += ["--openclaw", "2026.4.2", "--host", "a=u@10.0.0.1", "--host", "a=u@10.0.0.2"]
    assert main(argv) == 2
    assert "give each host once" in capsys.readouterr().err
