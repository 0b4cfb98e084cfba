"""The spec repo's pinned SSH host keys (`known_hosts`, reviewed in git).

Parsed with paramiko's own known_hosts reader so that plain, `[host]:port` and hashed
(`|1|salt|hash`) entries mean exactly what they mean to OpenSSH.
"""

from __future__ import annotations

from dataclasses import dataclass

from paramiko.hostkeys import HostKeyEntry, HostKeys, InvalidHostKey


@dataclass(frozen=True)
class KnownHosts:
    """Pinned host keys, read once from bytes (a file or a git blob)."""

    text: bytes
    keys: HostKeys

    @classmethod
    def parse(cls, text: bytes) -> KnownHosts:
        keys = HostKeys()
        for line in text.decode("utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = HostKeyEntry.from_line(line)
            except (InvalidHostKey, ValueError):
                continue
            if entry is not None and entry.key is not None:
                for name in entry.hostnames:
                    keys.add(name, entry.key.get_name(), entry.key)
        return cls(text=text, keys=keys)

    @staticmethod
    def entry_name(address: str, port: int) -> str:
        """How OpenSSH names a host in known_hosts: `addr`, or `[addr]:port` off port 22."""
        return address if port == 22 else f"[{address}]:{port}"

    def has(self, address: str, port: int) -> bool:
        return self.keys.lookup(self.entry_name(address, port)) is not None
