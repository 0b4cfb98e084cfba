"""From a host in the spec to a live `Transport`: SSH for real hosts, local for this machine.

Both kinds get the same PATH additions (the host's `path` entries, then `<npmPrefix>/bin`) so
that `openclaw`, `node` and `npm` resolve the same way whichever transport runs a fact. SSH keys
are chosen in a fixed order (the caller's, the spec's `keyFile`, the file named by `keyEnv`,
else the agent) so that which identity is used never depends on what happens to be loaded.

A `~/` in a spec path means the host's HOME. Locally that is `home` (or ours); over SSH it can
only be known on the host, so when the spec uses one we ask the host once (`printenv HOME`)
and build the transport with absolute paths: nothing ever depends on a remote shell expanding
a quoted `~`.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.desired.spec import Fleet, Host, seconds
from reconciler.hosts import facts
from reconciler.hosts.local import LocalTransport
from reconciler.hosts.ssh import SSHTransport
from reconciler.hosts.transport import Transport


def path_entries(host: Host) -> list[str]:
    """Dirs to prepend to PATH, in order: the spec's `path`, then `<npmPrefix>/bin`."""
    entries = list(host.path)
    if host.npm_prefix is not None:
        entries.append(posixpath.join(host.npm_prefix, "bin"))
    return entries


def _uses_home(entries: Sequence[str]) -> bool:
    return any(e == "~" or e.startswith("~/") for e in entries)


def _expand(entries: Sequence[str], home: str) -> list[str]:
    return [
        posixpath.join(home, e[2:]) if e.startswith("~/") else home if e == "~" else e
        for e in entries
    ]


def transport_for(
    fleet: Fleet,
    host: Host,
    *,
    known_hosts_path: Path,
    key_file: Path | None = None,
    base_env: Mapping[str, str] | None = None,
) -> Transport:
    """The transport the spec describes for `host` (not yet connected, unless a `~/` PATH entry
    forces one question to an SSH host). `base_env` is added to every command's environment."""
    if host.transport == "local":
        return _local(host, base_env)
    return _ssh(fleet, host, known_hosts_path, key_file, base_env)


def _local(host: Host, base_env: Mapping[str, str] | None) -> LocalTransport:
    home = Path(host.home).expanduser() if host.home is not None else None
    entries = _expand(path_entries(host), str(home or Path.home()))
    return LocalTransport(host.name, home=home, extra_path=entries, base_env=base_env)


def _ssh(
    fleet: Fleet,
    host: Host,
    known_hosts: Path,
    key_file: Path | None,
    base_env: Mapping[str, str] | None,
) -> SSHTransport:
    key = key_file or _spec_key(fleet)
    entries = path_entries(host)

    def build(extra_path: Sequence[str]) -> SSHTransport:
        return SSHTransport(
            host.name,
            host.address.strip("[]"),
            host.port,
            host.user,
            known_hosts=known_hosts,
            key_file=key,
            use_agent=key is None,
            connect_timeout=seconds(fleet.ssh.connect_timeout),
            extra_path=extra_path,
            base_env=base_env,
        )

    if not _uses_home(entries):
        return build(entries)
    probe = build([])
    try:
        home = facts.gather(probe, facts.home_dir(), timeout=seconds(fleet.ssh.command_timeout))
    finally:
        probe.close()
    return build(_expand(entries, home))


def _spec_key(fleet: Fleet) -> Path | None:
    """The spec's key: `ssh.keyFile`, else the path in the env var `ssh.keyEnv`, else None."""
    if fleet.ssh.key_file is not None:
        return Path(fleet.ssh.key_file).expanduser()
    if fleet.ssh.key_env is not None:
        value = os.environ.get(fleet.ssh.key_env)
        if not value:
            raise ValueError(
                f"ssh.keyEnv names {fleet.ssh.key_env}, which is not set in this environment"
            )
        return Path(value).expanduser()
    return None
