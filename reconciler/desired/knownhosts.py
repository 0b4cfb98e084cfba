"""The spec repo's pinned SSH host keys (`known_hosts`, reviewed in git).

Parsed with paramiko's own known_hosts reader so that plain, `[host]:port` and hashed
(`|1|salt|hash`) entries mean exactly what they mean to OpenSSH. OpenSSH's markers, which
paramiko does not read (it raises on them): `@revoked` is honoured (that key is refused for
every host, even where another line pins it); `@cert-authority` is not supported (the
reconciler pins each host's own key), so `validate` refuses it with its line.
"""

from __future__ import annotations

from dataclasses import dataclass

from paramiko.hostkeys import HostKeyEntry, HostKeys, InvalidHostKey
from paramiko.pkey import PKey


@dataclass(frozen=True)
class KnownHosts:
    """Pinned host keys, read once from bytes (a file or a git blob)."""

    text: bytes
    keys: HostKeys
    pairs: tuple[tuple[str, PKey], ...] = ()
    """(host name, key) of every key line, in file order."""
    revoked: frozenset[str] = frozenset()
    """`type base64` of every key a `@revoked` line names."""
    unsupported: tuple[tuple[int, str], ...] = ()
    """(line number, marker) of every marker line other than `@revoked`."""

    @classmethod
    def parse(cls, text: bytes) -> KnownHosts:
        keys = HostKeys()
        pairs: list[tuple[str, PKey]] = []
        revoked: set[str] = set()
        unsupported: list[tuple[int, str]] = []
        for number, raw in enumerate(text.decode("utf-8", errors="replace").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                marker, _, rest = line.partition(" ")
                if marker == "@revoked":
                    revoked.update(_key_of(rest))
                else:
                    unsupported.append((number, marker))
                continue
            entry = _entry(line)
            if entry is not None and entry.key is not None:
                for name in entry.hostnames:
                    keys.add(name, entry.key.get_name(), entry.key)
                    pairs.append((name, entry.key))
        return cls(text, keys, tuple(pairs), frozenset(revoked), tuple(unsupported))

    def is_revoked(self, key: PKey) -> bool:
        return f"{key.get_name()} {key.get_base64()}" in self.revoked

    def pinned(self) -> HostKeys:
        """The keys to trust: every pinned key but the revoked ones."""
        trusted = HostKeys()
        for name, key in self.pairs:
            if not self.is_revoked(key):
                trusted.add(name, key.get_name(), key)
        return trusted

    @staticmethod
    def entry_name(address: str, port: int) -> str:
        """How OpenSSH names a host in known_hosts: `addr`, or `[addr]:port` off port 22."""
        return address if port == 22 else f"[{address}]:{port}"

    def has(self, address: str, port: int) -> bool:
        return self.keys.lookup(self.entry_name(address, port)) is not None

    def revoked_for(self, address: str, port: int) -> list[str]:
        """The `type base64` of keys pinned for a host that a `@revoked` line names."""
        found = self.keys.lookup(self.entry_name(address, port))
        keys: list[PKey] = list(found.values()) if found is not None else []
        return [f"{k.get_name()} {k.get_base64()}" for k in keys if self.is_revoked(k)]


def _entry(line: str) -> HostKeyEntry | None:
    try:
        return HostKeyEntry.from_line(line)
    except (InvalidHostKey, ValueError):
        return None  # not a key line OpenSSH would use either


def _key_of(rest: str) -> list[str]:
    """`type base64` of a marker line's key (after the marker), if it is one."""
    entry = _entry(rest)
    if entry is None or entry.key is None:
        return []
    return [f"{entry.key.get_name()} {entry.key.get_base64()}"]
