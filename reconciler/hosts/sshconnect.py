"""Opening one SSH connection to a host: pinned host keys, the socket, the client key, and
the typed error for every way that can fail.

It exists apart from `reconciler.hosts.ssh` (which runs commands over the connection) because
deciding whether a host may be talked to at all is its own, security-relevant concern:

* **Host keys are pinned.** Keys come only from the spec repo's known_hosts file (plain,
  `[addr]:port` and hashed entries). An unknown key or a changed key raises `HostKeyError`
  naming the host, the address and the offered key's fingerprint. There is no trust-on-first-use
  (unknown keys are never added or merely warned about): a rollout must never talk to a host it
  cannot identify.
* **The socket is ours**, with TCP_NODELAY: Nagle plus delayed ACK would turn every small
  SSH request/response into ~40 ms.
* **paramiko's exceptions never leak**: refused, silent, unauthenticated and mis-keyed hosts
  each raise their own `HostError` subclass, worded for the operator.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from reconciler.desired.knownhosts import KnownHosts
from reconciler.errors import AuthenticationError, HostKeyError, HostUnreachable

# paramiko's transport thread logs (with a traceback) every handshake we abandon on purpose,
# e.g. a frozen host that never sends its banner. We raise a typed error for those already;
# without any logging configured, Python's last-resort handler would print that noise to stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class _RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Refuses every host whose key known_hosts does not list (paramiko calls this)."""

    def __init__(self, host: str, known_hosts: Path, known: KnownHosts) -> None:
        self.host = host
        self.known_hosts = known_hosts
        self.known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.known.is_revoked(key):
            raise HostKeyError(self.host, _revoked(hostname, key, self.known_hosts))
        raise HostKeyError(
            self.host,
            f"unknown host key: {hostname} offered {key.get_name()} {key.fingerprint}, "
            f"which {self.known_hosts} does not list; verify the key out of band and add it "
            "to known_hosts (refusing to connect)",
        )


def _revoked(hostname: str, key: paramiko.PKey, known_hosts: Path) -> str:
    return (
        f"REVOKED host key: {hostname} offered {key.get_name()} {key.fingerprint}, which "
        f"{known_hosts} marks @revoked (refusing to connect)"
    )


@dataclass(frozen=True)
class SSHEndpoint:
    """Where and how to connect: one host's address, user, pinned keys and credentials."""

    host: str
    address: str
    port: int
    user: str
    known_hosts: Path
    key_file: Path | None
    use_agent: bool
    connect_timeout: float
    keepalive_s: int

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


def connect(endpoint: SSHEndpoint, pkey: paramiko.PKey | None) -> paramiko.SSHClient:
    """A connected, authenticated client whose host key known_hosts pins; else a HostError."""
    client = paramiko.SSHClient()
    try:
        known = KnownHosts.parse(endpoint.known_hosts.read_bytes())
    except OSError as exc:
        raise HostKeyError(
            endpoint.host,
            f"cannot read known_hosts {endpoint.known_hosts}: {exc.strerror or exc}",
        ) from exc
    client.get_host_keys().update(known.pinned())  # a revoked key is never trusted
    client.set_missing_host_key_policy(
        _RejectUnknownHostKey(endpoint.host, endpoint.known_hosts, known)
    )
    sock = open_socket(endpoint)
    timeout = endpoint.connect_timeout
    try:
        client.connect(
            endpoint.address,
            port=endpoint.port,
            username=endpoint.user,
            sock=sock,
            pkey=pkey,
            allow_agent=endpoint.use_agent,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
        )
    except BaseException as exc:
        client.close()
        sock.close()
        raise connect_error(endpoint, known, exc) from exc
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(endpoint.keepalive_s)
    return client


def connect_error(endpoint: SSHEndpoint, known: KnownHosts, exc: BaseException) -> BaseException:
    """Translate what paramiko raised during connect into our typed host errors."""
    host = endpoint.host
    if isinstance(exc, HostKeyError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException) and known.is_revoked(exc.key):
        return HostKeyError(host, _revoked(endpoint.target, exc.key, endpoint.known_hosts))
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            host,
            f"host key CHANGED for {endpoint.address}:{endpoint.port}: {endpoint.known_hosts} "
            f"lists {exc.expected_key.get_name()} {exc.expected_key.fingerprint}, the host "
            f"offered {exc.key.get_name()} {exc.key.fingerprint}. Either the host was "
            "reinstalled or someone is intercepting the connection; verify before updating "
            "known_hosts",
        )
    if isinstance(exc, paramiko.AuthenticationException) or (
        isinstance(exc, paramiko.SSHException) and "authentication methods" in str(exc)
    ):
        return AuthenticationError(
            host, f"{endpoint.target} refused our credentials ({_credentials(endpoint)}): {exc}"
        )
    if isinstance(exc, paramiko.SSHException | EOFError | OSError):
        detail = str(exc) or type(exc).__name__
        if detail == "No existing session":  # paramiko's words for "handshake timed out"
            detail = "no SSH handshake (the server accepted the connection but never spoke)"
        return HostUnreachable(
            host,
            f"SSH handshake with {endpoint.target} failed within "
            f"{endpoint.connect_timeout:g}s: {detail}",
        )
    return exc


def _credentials(endpoint: SSHEndpoint) -> str:
    parts = [f"key {endpoint.key_file}"] if endpoint.key_file is not None else []
    if endpoint.use_agent:
        parts.append("ssh-agent")
    return ", ".join(parts)


def load_key(host: str, key_file: Path) -> paramiko.PKey:
    """The client's private key; AuthenticationError when it cannot be read."""
    try:
        return paramiko.PKey.from_path(key_file)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise AuthenticationError(host, f"cannot load key {key_file}: {exc}") from exc


def open_socket(endpoint: SSHEndpoint) -> socket.socket:
    """A TCP connection to the host's sshd, with Nagle off; HostUnreachable when none."""
    where = f"{endpoint.address}:{endpoint.port}"
    try:
        sock = socket.create_connection(
            (endpoint.address, endpoint.port), timeout=endpoint.connect_timeout
        )
    except ConnectionRefusedError as exc:
        raise HostUnreachable(
            endpoint.host, f"connection refused by {where} (is sshd running?)"
        ) from exc
    except TimeoutError as exc:
        raise HostUnreachable(
            endpoint.host,
            f"no TCP answer from {where} within {endpoint.connect_timeout:g}s",
        ) from exc
    except OSError as exc:
        raise HostUnreachable(
            endpoint.host, f"cannot connect to {where}: {exc.strerror or exc}"
        ) from exc
    # Nagle + delayed ACK turn every small request/response into ~40 ms; SSH is all small.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock
