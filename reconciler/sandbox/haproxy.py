"""A real HAProxy on loopback, for tests, benchmarks and the demo.

Canary traffic only means something if a real load balancer moves it, so the HAProxy driver
and the rollout's traffic split are tested against the real thing: `haproxy -db -f CFG` as our
own process (its own process group), with an admin `stats socket` (unix, and optionally TCP on
loopback), one HTTP frontend on a free loopback port and one backend with a `server` line per
gateway. `restart()` is a real fault: HAProxy forgets every runtime change and comes back with
the config's weights and zeroed counters. Every process is stopped by its PID.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from reconciler.lb import LBError
from reconciler.lb.haproxy import HAProxy, check_name
from reconciler.sandbox.processes import stop_group

HAPROXY = "haproxy"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0
_SUN_PATH_MAX = 97  # haproxy refuses longer stats socket paths ("too long (max 97)")
_PORT_ATTEMPTS = 3
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/@+=,%~-]+")


class HAProxyError(RuntimeError):
    """The sandbox HAProxy could not be configured or started."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class HAProxyProcess:
    """One HAProxy in front of `servers` (name -> loopback port), started on construction."""

    def __init__(
        self,
        directory: Path,
        backend: str,
        servers: Mapping[str, int],
        *,
        weights: Mapping[str, int] | None = None,
        tcp_socket: bool = False,
        check_path: str | None = None,
        wait_up: bool = True,
    ) -> None:
        self.directory = directory
        self.backend = check_name(backend, "backend")
        self.servers = {check_name(name, "server"): port for name, port in servers.items()}
        self.config_weights = {name: (weights or {}).get(name, 100) for name in self.servers}
        self.check_path = check_path
        self.directory.mkdir(parents=True, exist_ok=True)
        self._socket_dir = _socket_dir(directory)
        self.socket_path = self._socket_dir / "admin.sock"
        self.tcp_port = free_port() if tcp_socket else None
        self.frontend_port = free_port()
        self.config_path = directory / "haproxy.cfg"
        self.log_path = directory / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)
        try:
            self.start(wait_up=wait_up)
        except BaseException:
            self.close()
            raise

    # --- addresses -----------------------------------------------------------------------

    @property
    def socket_address(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_address(self) -> str | None:
        return f"tcp://{LOOPBACK}:{self.tcp_port}" if self.tcp_port else None

    @property
    def frontend_url(self) -> str:
        return f"http://{LOOPBACK}:{self.frontend_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def driver(self, *, timeout: float = 2.0, tcp: bool = False) -> HAProxy:
        """The reconciler's driver for this HAProxy's backend."""
        address = self.tcp_address if tcp else self.socket_address
        if address is None:
            raise HAProxyError("this HAProxy was started without a TCP stats socket")
        return HAProxy(address, self.backend, timeout=timeout)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, *, wait_up: bool = True) -> None:
        """Write the config, start HAProxy, wait for the socket (and every server UP)."""
        if self.pid is not None:
            return
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.config_path.write_text(self.config())
            self.process = self._spawn()
            try:
                self._wait_socket()
                break
            except _PortTaken:
                self.stop()
                if attempt == _PORT_ATTEMPTS:
                    raise
                self.frontend_port = free_port()
                self.tcp_port = free_port() if self.tcp_port else None
        if wait_up:
            self.wait_servers_up()

    def restart(self, *, wait_up: bool = True) -> None:
        """Stop and start again: weights go back to the config's, counters to zero."""
        self.stop()
        self.start(wait_up=wait_up)

    def stop(self) -> None:
        """SIGTERM the HAProxy process group by its id, SIGKILL after a grace; reap it."""
        process, self.process = self.process, None
        if process is not None:
            stop_group(process, STOP_GRACE_S)

    def close(self) -> None:
        """Stop HAProxy and remove the short socket directory if one was made."""
        self.stop()
        atexit.unregister(self.stop)
        if self._socket_dir != self.directory:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> HAProxyProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- health --------------------------------------------------------------------------

    def server_rows(self) -> dict[str, dict[str, str]]:
        """`show stat` rows of this backend's servers, every column as HAProxy prints it."""
        text = self.driver().command(f"show stat {self.backend} 4 -1")
        reader = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {row["svname"]: row for row in reader if row.get("pxname") == self.backend}

    def wait_servers_up(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every server is UP after a completed health check (not just assumed UP)."""
        deadline = time.monotonic() + timeout
        rows: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            rows = self.server_rows()
            if rows and all(_checked_up(row) for row in rows.values()):
                return
            time.sleep(0.05)
        states = {name: (row.get("status"), row.get("check_status")) for name, row in rows.items()}
        raise HAProxyError(f"servers not UP after {timeout:g}s: {states}")

    # --- internals -----------------------------------------------------------------------

    def config(self) -> str:
        """The haproxy.cfg this process runs with."""
        sockets = [f"    stats socket {self.socket_path} mode 600 level admin"]
        if self.tcp_port:
            sockets.append(f"    stats socket ipv4@{LOOPBACK}:{self.tcp_port} level admin")
        check = [f"    option httpchk GET {self.check_path}"] if self.check_path else []
        lines = [
            "global",
            *sockets,
            "    stats timeout 10s",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 10s",
            "    timeout server 10s",
            "frontend fe",
            f"    bind {LOOPBACK}:{self.frontend_port}",
            f"    default_backend {self.backend}",
            f"backend {self.backend}",
            "    balance roundrobin",
            *check,
            *(self._server_line(name, port) for name, port in self.servers.items()),
            "",
        ]
        return "\n".join(lines)

    def _server_line(self, name: str, port: int) -> str:
        weight = self.config_weights[name]
        return (
            f"    server {name} {LOOPBACK}:{port} weight {weight} check inter 200ms fall 2 rise 1"
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        haproxy = shutil.which(HAPROXY)
        if haproxy is None:
            raise HAProxyError("haproxy is not installed (apt-get install haproxy)")
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [haproxy, "-db", "-f", str(self.config_path)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def _wait_socket(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                log = self.log_path.read_text(errors="replace")[-2000:]
                if "cannot bind socket" in log or "Address already in use" in log:
                    raise _PortTaken(log)
                raise HAProxyError(f"haproxy exited while starting:\n{log}")
            with contextlib.suppress(LBError):
                if self.driver(timeout=0.5).command("show info").startswith("Name: HAProxy"):
                    return
            time.sleep(0.02)
        raise HAProxyError(f"haproxy socket {self.socket_path} did not answer in time")


class _PortTaken(HAProxyError):
    """A port chosen free was taken before HAProxy bound it."""


def _checked_up(row: Mapping[str, str]) -> bool:
    status = row.get("status", "")
    check = row.get("check_status", "")
    return status == "UP" and check.startswith(("L4OK", "L7OK"))


def _socket_dir(directory: Path) -> Path:
    """`directory`, or a short private dir under /tmp when a socket path there is too long."""
    if not _SAFE_PATH.fullmatch(str(directory)):
        raise HAProxyError(f"{directory}: path unsafe to write into haproxy.cfg")
    if len(str(directory / "admin.sock")) <= _SUN_PATH_MAX:
        return directory
    return Path(tempfile.mkdtemp(prefix="haproxy-"))
