"""The spec remote over SSH: a real sshd serving a real bare repository (git-upload-pack and
git-receive-pack over the connection), reached with a named key and a pinned known_hosts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

from reconciler.cli import main
from reconciler.record.gitstore import (
    STATUS_BRANCH,
    GitStore,
    RemoteRefused,
    SshAccess,
    StatusConflict,
)
from reconciler.sandbox.sshfleet import SSHFleet, generate_key


@dataclass
class Remote:
    fleet: SSHFleet
    bare: pygit2.Repository
    url: str
    head: str

    def access(self, **overrides: Path) -> SshAccess:
        return SshAccess(
            overrides.get("key_file", self.fleet.client_key),
            overrides.get("known_hosts", self.fleet.known_hosts),
        )


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    fleet = SSHFleet(tmp_path / "ssh", 1)
    try:
        host = fleet[0]
        bare = pygit2.init_repository(str(host.dir / "spec.git"), bare=True, initial_head="main")
        who = pygit2.Signature("operator", "op@example.com")
        blob = bare.create_blob(b"name: studio\n")
        builder = bare.TreeBuilder()
        builder.insert("fleet.yaml", blob, pygit2.enums.FileMode.BLOB)
        head = bare.create_commit("refs/heads/main", who, who, "spec", builder.write(), [])
        url = f"ssh://{host.user}@{host.address}:{host.port}{host.dir}/spec.git"
        yield Remote(fleet, bare, url, str(head))
    finally:
        fleet.close()


def test_fetch_and_push_over_ssh_with_the_pinned_host_key(remote: Remote, tmp_path: Path) -> None:
    store = GitStore(remote.url, tmp_path / "cache.git", ssh=remote.access())
    store.fetch()
    head = store.spec_head()
    assert head is not None and str(head.id) == remote.head

    pushed = store.commit_status(None, {"fleets/studio/rollout.json": b"{}\n"}, "observed")

    on_remote = remote.bare.references[f"refs/heads/{STATUS_BRANCH}"].target
    assert str(on_remote) == pushed


def test_a_second_writer_loses_the_compare_and_swap_over_ssh(
    remote: Remote, tmp_path: Path
) -> None:
    first = GitStore(remote.url, tmp_path / "first.git", ssh=remote.access())
    second = GitStore(remote.url, tmp_path / "second.git", ssh=remote.access())
    first.fetch()
    second.fetch()
    first.commit_status(None, {"a": b"1\n"}, "first")

    with pytest.raises(StatusConflict):
        second.commit_status(None, {"b": b"2\n"}, "second, built on nothing")


def test_a_host_key_that_is_not_pinned_is_refused(remote: Remote, tmp_path: Path) -> None:
    other = tmp_path / "other_known_hosts"
    remote.fleet.write_known_hosts(other, exclude=[remote.fleet[0].name])
    store = GitStore(remote.url, tmp_path / "cache.git", ssh=remote.access(known_hosts=other))

    with pytest.raises(RemoteRefused, match="Host key verification failed"):
        store.fetch()


def test_a_key_the_remote_does_not_accept_is_refused(remote: Remote, tmp_path: Path) -> None:
    stranger = generate_key(tmp_path / "stranger_ed25519")
    store = GitStore(remote.url, tmp_path / "cache.git", ssh=remote.access(key_file=stranger))

    with pytest.raises(RemoteRefused, match="Permission denied"):
        store.fetch()


def test_an_ssh_remote_without_a_key_and_known_hosts_is_refused_up_front(
    remote: Remote, tmp_path: Path
) -> None:
    with pytest.raises(RemoteRefused, match="--git-ssh-key"):
        GitStore(remote.url, tmp_path / "cache.git")
    scp_like = f"git@{remote.fleet[0].address}:spec.git"
    with pytest.raises(RemoteRefused, match="pinned known_hosts"):
        GitStore(scp_like, tmp_path / "cache2.git")


def test_the_cli_reaches_an_ssh_remote_with_both_flags_and_refuses_one(
    remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    access = remote.access()
    writer = GitStore(remote.url, tmp_path / "writer.git", ssh=access)
    writer.fetch()
    writer.commit_status(None, {"fleets/studio/rollout.json": b"{}\n"}, "mac-1: drained")
    base = ["history", "--remote", remote.url, "--fleet", "studio"]
    base += ["--cache", str(tmp_path / "cli-cache")]
    key = ["--git-ssh-key", str(access.key_file)]

    assert main([*base, *key]) == 2
    assert "go together" in capsys.readouterr().err
    assert main([*base, *key, "--git-known-hosts", str(access.known_hosts)]) == 0
    assert "mac-1: drained" in capsys.readouterr().out
