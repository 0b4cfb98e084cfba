"""OpenSSH's known_hosts markers, against real sshds (paramiko reads neither: it raised an
untyped InvalidHostKey on them).

- `@revoked`: that key is refused for every host, before any command runs, even where another
  line pins it (the usual state after a key leaked: the old line is still there); a revoked
  key of the past beside the current one is harmless;
- `@cert-authority`: not supported (each host's own key is pinned); `validate` refuses it with
  its line (tests/cases/invalid/known-hosts-cert-authority), and a transport ignores the line;
- a line that is no key at all is skipped as OpenSSH skips it; the error is always typed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.knownhosts import KnownHosts
from reconciler.errors import HostKeyError
from reconciler.sandbox.sshfleet import SSHFleet, generate_key

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMPawsQqz4FnVUtw1kWpVuDAkxVINacbcY/uLTGQ/0PR"


def pinned(ssh_fleet: SSHFleet, tmp_path: Path, *extra: str, hashed: bool = False) -> Path:
    path = ssh_fleet.write_known_hosts(tmp_path / "known_hosts", hashed=hashed)
    path.write_text(path.read_text() + "".join(f"{line}\n" for line in extra))
    return path


@pytest.mark.parametrize("hashed", [False, True])
@pytest.mark.parametrize("names", ["*", "[127.0.0.1]:{port}"])
def test_a_revoked_key_is_refused_even_where_it_is_pinned(
    ssh_fleet: SSHFleet, tmp_path: Path, hashed: bool, names: str
) -> None:
    host = ssh_fleet[0]
    revoked = f"@revoked {names.format(port=host.port)} {host.public_key()}"
    known_hosts = pinned(ssh_fleet, tmp_path, revoked, hashed=hashed)
    marker = tmp_path / "ran"

    with pytest.raises(HostKeyError) as caught:
        host.transport(known_hosts=known_hosts).run(["touch", str(marker)], timeout=10)

    message = str(caught.value)
    assert "REVOKED" in message and "SHA256:" in message and str(known_hosts) in message
    assert not marker.exists(), "a command ran on a host whose key is revoked"


def test_a_key_revoked_in_the_past_beside_the_current_one_connects(
    ssh_fleet: SSHFleet, tmp_path: Path
) -> None:
    old = generate_key(tmp_path / "old_host_key")
    old_public = " ".join(old.with_name(old.name + ".pub").read_text().split()[:2])
    known_hosts = pinned(ssh_fleet, tmp_path, f"@revoked * {old_public}")
    with ssh_fleet[1].transport(known_hosts=known_hosts) as transport:
        assert transport.run(["true"], timeout=10).exit_code == 0


@pytest.mark.parametrize(
    "line",
    [
        f"@cert-authority *.example {OTHER_KEY}",
        "@revoked",  # a marker with nothing after it
        "not a key line at all",
        "@unknown-marker * " + OTHER_KEY,
    ],
)
def test_marker_and_junk_lines_never_break_a_connection(
    ssh_fleet: SSHFleet, tmp_path: Path, line: str
) -> None:
    known_hosts = pinned(ssh_fleet, tmp_path, line)
    with ssh_fleet[2].transport(known_hosts=known_hosts) as transport:
        assert transport.run(["true"], timeout=10).exit_code == 0


def test_parse_keeps_revoked_keys_and_names_unsupported_markers() -> None:
    text = (
        f"10.0.0.1 {OTHER_KEY}\n"
        f"@revoked * {OTHER_KEY}\n"
        f"@cert-authority *.example {OTHER_KEY}\n"
        "# a comment\n"
    ).encode()
    known = KnownHosts.parse(text)

    assert known.revoked == frozenset({OTHER_KEY})
    assert known.unsupported == ((3, "@cert-authority"),)
    assert known.has("10.0.0.1", 22)
    assert known.revoked_for("10.0.0.1", 22) == [OTHER_KEY]
    assert known.pinned().lookup("10.0.0.1") is None, "a revoked key is never trusted"
