"""The HAProxy driver: weights and counters through the runtime API (`stats socket`).

Small self-hosted fleets put HAProxy in front of their gateways, and its runtime API moves
weights without a reload. Each call opens one connection, sends one command line and reads
until HAProxy closes it (non-interactive mode), with a deadline on connect and read, so a hung
HAProxy costs at most `timeout` and never leaves a half-read answer on a shared connection.

What HAProxy 2.6 actually prints, and why the parsing looks the way it does:

- every line of what we send is executed, and `;` separates commands too, so a name with a
  newline, `;` or a space would inject a second command: names are checked before sending;
- success of `set weight` / `set server` is an empty line; failure is one line of text
  ("No such server.", "No such backend.", "Absolute weight can only be between 0 and 256");
- `show servers state <backend>` starts with a format version line (`1`), then a `# `-prefixed
  space-separated header; `srv_uweight` is the weight `set weight` set (kept while the server
  is in drain or maint), `srv_iweight` the weight from the config, `srv_admin_state` a bit
  field (0x01 forced maint, 0x08 forced drain). One round trip gives every server, which is
  why `weights()` uses it rather than `get weight` per server (`20 (initial 10)`);
- `show stat <backend> 4 -1` is CSV with a `# pxname,svname,...` header and a trailing comma;
  a server with weight 0 still shows status `UP` (only `set server ... state drain` shows
  `DRAIN`), and the weight column keeps the user weight while draining.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from reconciler.lb.base import LBConfigError, LBError, ServerStats

State = Literal["ready", "drain", "maint"]
STATES: tuple[State, ...] = ("ready", "drain", "maint")
MAX_WEIGHT = 256
MAX_RESPONSE = 4 * 1024 * 1024
# HAProxy identifiers: letters, digits, '-', '_', '.', ':' (see its config manual).
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,255}")
_ADMF_MAINT = 0x01 | 0x02 | 0x20  # forced, inherited, resolution failure
_ADMF_DRAIN = 0x08 | 0x10  # forced, inherited
_CONFIG_ERRORS = (
    "No such server",
    "No such backend",
    "No such proxy",
    "Can't find backend",
    "Permission denied",
    "Unknown command",
    "Absolute weight",
)
_STAT_SERVERS = 4  # `show stat` type mask: servers only


@dataclass(frozen=True)
class ServerState:
    """One row of `show servers state`: what a bookmark needs to put a server back."""

    server: str
    weight: int
    initial_weight: int
    state: State
    operational: bool


@dataclass(frozen=True)
class Snapshot:
    """Weights and admin states of every server of a backend, JSON-friendly."""

    weights: dict[str, int]
    states: dict[str, State] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, int] | dict[str, str]]:
        states: dict[str, str] = dict(self.states)
        return {"weights": dict(self.weights), "states": states}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Mapping[str, object]]) -> Snapshot:
        weights = {str(k): int(str(v)) for k, v in doc.get("weights", {}).items()}
        states = {str(k): _state(str(v)) for k, v in doc.get("states", {}).items()}
        return cls(weights=weights, states=states)


def check_name(name: str, what: str) -> str:
    """`name` if it is a plain HAProxy identifier; anything else could inject a command."""
    if not _NAME.fullmatch(name):
        raise LBConfigError(
            f"haproxy {what} name {name!r} is not a plain identifier "
            "(letters, digits, '.', '_', ':', '-')"
        )
    return name


def _state(value: str) -> State:
    for state in STATES:
        if value == state:
            return state
    raise LBConfigError(f"haproxy server state {value!r} is not one of {', '.join(STATES)}")


def parse_address(address: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """`unix:///path/admin.sock` or `tcp://host:port` as a socket family and address."""
    if address.startswith("unix://") and len(address) > len("unix://"):
        return socket.AF_UNIX, address[len("unix://") :]
    match = re.fullmatch(r"tcp://\[?([A-Za-z0-9.:-]+?)\]?:([0-9]{1,5})", address)
    if match and 0 < int(match.group(2)) < 65536:
        host = match.group(1)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, int(match.group(2)))
    raise LBConfigError(
        f"haproxy address {address!r}: expected unix:///path/to/socket or tcp://host:port"
    )


class HAProxy:
    """One backend of one HAProxy, driven over its runtime API (`level admin` needed)."""

    def __init__(self, address: str, backend: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self.backend = check_name(backend, "backend")
        self.timeout = timeout
        self._family, self._sockaddr = parse_address(address)

    # --- the wire ------------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Send one command line, return HAProxy's whole answer (LBError when unreachable)."""
        if "\n" in line or "\r" in line or ";" in line:
            raise LBConfigError(f"refusing to send more than one command to haproxy: {line!r}")
        deadline = time.monotonic() + self.timeout
        try:
            with socket.socket(self._family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self._sockaddr)
                sock.sendall(line.encode() + b"\n")
                return _read_all(sock, deadline).decode(errors="replace")
        except TimeoutError:
            raise LBError(
                f"haproxy at {self.address}: no answer to {line!r} within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise LBError(f"haproxy at {self.address}: cannot run {line!r}: {exc}") from None

    def _checked(self, line: str, *, server: str | None = None) -> str:
        """Run a command whose success is an empty answer; classify any text as an error."""
        answer = self.command(line).strip()
        if answer:
            raise self._error(line, answer, server)
        return answer

    def _error(self, line: str, answer: str, server: str | None) -> LBError | LBConfigError:
        where = f"haproxy at {self.address}, backend {self.backend!r}"
        if server is not None:
            where += f", server {server!r}"
        first = answer.splitlines()[0]
        if first.startswith(_CONFIG_ERRORS):
            hint = " (the stats socket needs `level admin`)" if "Permission" in first else ""
            return LBConfigError(f"{where}: {line!r} answered {first!r}{hint}")
        return LBError(f"{where}: {line!r} answered {first!r}")

    # --- reading -------------------------------------------------------------------------

    def server_states(self) -> dict[str, ServerState]:
        """Every server of the backend from `show servers state <backend>`."""
        line = f"show servers state {self.backend}"
        answer = self.command(line)
        rows = _parse_servers_state(answer)
        if rows is None:
            raise self._error(line, answer.strip() or "nothing", None)
        return {row.server: row for row in rows}

    def weights(self) -> dict[str, int]:
        return {name: row.weight for name, row in self.server_states().items()}

    def initial_weights(self) -> dict[str, int]:
        """The weights of HAProxy's config: what it goes back to after a restart."""
        return {name: row.initial_weight for name, row in self.server_states().items()}

    def get_weight(self, server: str) -> tuple[int, int]:
        """(current, initial) from `get weight`, which prints `10 (initial 100)`."""
        line = f"get weight {self.backend}/{check_name(server, 'server')}"
        answer = self.command(line).strip()
        match = re.fullmatch(r"([0-9]+) \(initial ([0-9]+)\)", answer)
        if not match:
            raise self._error(line, answer or "nothing", server)
        return int(match.group(1)), int(match.group(2))

    def stats(self) -> dict[str, ServerStats]:
        """Per-server counters from `show stat <backend> 4 -1` (CSV)."""
        line = f"show stat {self.backend} {_STAT_SERVERS} -1"
        answer = self.command(line)
        if not answer.startswith("# pxname,"):
            raise self._error(line, answer.strip() or "nothing", None)
        return {row.server: row for row in parse_show_stat(answer, self.backend)}

    def info(self) -> dict[str, str]:
        """`show info` as a dict (Pid, Uptime_sec, ...): a changed Pid means a restart."""
        info = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        return info

    # --- writing -------------------------------------------------------------------------

    def set_weight(self, server: str, weight: int) -> None:
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise LBConfigError(f"haproxy weight {weight!r} for {server!r}: expected 0-256")
        name = check_name(server, "server")
        self._checked(f"set weight {self.backend}/{name} {weight}", server=server)

    def set_state(self, server: str, state: State) -> None:
        """`set server <backend>/<server> state ready|drain|maint`."""
        name = check_name(server, "server")
        self._checked(f"set server {self.backend}/{name} state {_state(state)}", server=server)

    def snapshot(self) -> Snapshot:
        rows = self.server_states().values()
        return Snapshot(
            weights={r.server: r.weight for r in rows}, states={r.server: r.state for r in rows}
        )

    def restore(self, snapshot: Snapshot) -> None:
        """Put weights and admin states back as `snapshot` recorded them (states first)."""
        for server, state in snapshot.states.items():
            self.set_state(server, state)
        for server, weight in snapshot.weights.items():
            self.set_weight(server, weight)

    def close(self) -> None:
        return None  # one connection per command: nothing stays open


def _read_all(sock: socket.socket, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise OSError(f"answer larger than {MAX_RESPONSE} bytes")
        chunks.append(chunk)


def _parse_servers_state(answer: str) -> list[ServerState] | None:
    """Rows of `show servers state`, or None when the answer is not that table."""
    lines = answer.splitlines()
    if len(lines) < 2 or not lines[1].startswith("# "):
        return None
    header = lines[1][2:].split()
    rows = []
    for line in filter(None, lines[2:]):
        values = line.split()
        if len(values) != len(header):
            return None
        try:
            rows.append(_server_state(dict(zip(header, values, strict=True))))
        except (KeyError, ValueError):
            return None
    return rows


def _server_state(row: Mapping[str, str]) -> ServerState:
    admin = int(row["srv_admin_state"])
    state: State = "maint" if admin & _ADMF_MAINT else "drain" if admin & _ADMF_DRAIN else "ready"
    return ServerState(
        server=row["srv_name"],
        weight=int(row["srv_uweight"]),
        initial_weight=int(row["srv_iweight"]),
        state=state,
        operational=row["srv_op_state"] == "2",
    )


def parse_show_stat(text: str, backend: str | None = None) -> list[ServerStats]:
    """Server rows of `show stat` CSV (header `# pxname,svname,...`), optionally one backend."""
    body = text[2:] if text.startswith("# ") else text
    reader = csv.DictReader(io.StringIO(body))
    stats = []
    for row in reader:
        if row.get("svname") in (None, "FRONTEND", "BACKEND"):
            continue
        if backend is not None and row.get("pxname") != backend:
            continue
        stats.append(
            ServerStats(
                server=row["svname"],
                weight=_int(row.get("weight")),
                sessions=_int(row.get("scur")),
                requests=_int(row.get("stot")),
                responses_5xx=_int(row.get("hrsp_5xx")),
                status=row.get("status") or "",
            )
        )
    return stats


def _int(value: str | None) -> int:
    """A CSV counter; HAProxy leaves fields empty where they do not apply (tcp mode)."""
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
