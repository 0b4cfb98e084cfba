"""A fleet of real OpenSSH servers on loopback, for tests, benchmarks and the demo.

The transport layer's promises (host keys pinned, commands killed at their timeout, reconnect
after a restart, HostUnreachable for a dead or frozen host) are about a real sshd's behaviour,
so they are tested against real sshds: one `/usr/sbin/sshd -D` per host, each on its own free
loopback port, with its own host key, HOME and npm prefix. Taking a host away is done the way
it happens in production: stop it (SIGTERM), freeze it (SIGSTOP), restart it, or give it a new
host key.

Every process started here is tracked by PID and stopped by PID (`close()`, also registered
with atexit as a last resort); nothing is ever killed by name. Linux only: it reads /proc to
find the per-connection sshd processes that belong to a host.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from paramiko.hostkeys import HostKeys

from reconciler.hosts.ssh import SSHTransport
from reconciler.sandbox.processes import free_port

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0
_PORT_ATTEMPTS = 5


def generate_key(path: Path, *, comment: str = "") -> Path:
    """An ed25519 key pair without passphrase at `path` (and `path`.pub); returns `path`."""
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path


@dataclass
class FleetHost:
    """One sshd of the fleet: a host as the reconciler sees it."""

    name: str
    port: int
    dir: Path
    user: str
    fleet: SSHFleet = field(repr=False)

    @property
    def address(self) -> str:
        return LOOPBACK

    @property
    def home(self) -> Path:
        """HOME of every command on this host (sshd `SetEnv`); the login cwd stays the real one."""
        return self.dir / "home"

    @property
    def prefix(self) -> Path:
        """The host's npm prefix: `npm i -g --prefix` target; `<prefix>/bin` is first on PATH."""
        return self.dir / "prefix"

    @property
    def host_key(self) -> Path:
        return self.dir / "host_ed25519"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pid(self) -> int | None:
        """PID of this host's listening sshd, or None while it is stopped."""
        return self.fleet.pid_of(self)

    def public_key(self) -> str:
        """`type base64` of the host key currently on disk."""
        kind, blob = self.host_key.with_name("host_ed25519.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    def known_hosts_name(self) -> str:
        return f"[{LOOPBACK}]:{self.port}"

    def transport(
        self,
        *,
        name: str | None = None,
        known_hosts: Path | None = None,
        key_file: Path | None = None,
        connect_timeout: float = 5,
        keepalive_s: int = 15,
        extra_path: Sequence[str] = (),
        base_env: Mapping[str, str] | None = None,
    ) -> SSHTransport:
        """An SSHTransport to this host (pass `name` to pose as another host on the same sshd)."""
        return SSHTransport(
            name or self.name,
            LOOPBACK,
            self.port,
            self.user,
            known_hosts=known_hosts or self.fleet.known_hosts,
            key_file=key_file or self.fleet.client_key,
            use_agent=False,
            connect_timeout=connect_timeout,
            keepalive_s=keepalive_s,
            extra_path=extra_path,
            base_env=base_env,
        )


class SSHFleet:
    """`n_hosts` sshds under `base_dir`, started at construction; `close()` stops them all.

    Every command on a host runs with HOME=<host dir>/home, PATH=<prefix>/bin, then `path`,
    then this process's PATH, and `env` (sshd `SetEnv`)."""

    def __init__(
        self,
        base_dir: Path,
        n_hosts: int,
        *,
        names: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        path: Sequence[str] = (),
    ) -> None:
        names = list(names) if names is not None else [f"host-{i + 1}" for i in range(n_hosts)]
        if len(names) != n_hosts or len(set(names)) != n_hosts:
            raise ValueError(f"need {n_hosts} distinct names, got {names!r}")
        self.base_dir = base_dir
        self.env = dict(env or {})
        self.path = list(path)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.client_key = base_dir / "client_ed25519"
        self.known_hosts = base_dir / "known_hosts"
        self.hosts: list[FleetHost] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._frozen: dict[str, list[int]] = {}
        base_dir.mkdir(parents=True, exist_ok=True)
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        generate_key(self.client_key, comment="reconciler-test-client")
        atexit.register(self.close)
        try:
            for name in names:
                self._add(name)
            self.write_known_hosts()
        except BaseException:
            self.close()
            raise

    # --- access ----------------------------------------------------------------------------

    def __enter__(self) -> SSHFleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[FleetHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, key: int | str) -> FleetHost:
        if isinstance(key, int):
            return self.hosts[key]
        for host in self.hosts:
            if host.name == key:
                return host
        raise KeyError(key)

    def pid_of(self, host: FleetHost) -> int | None:
        proc = self._procs.get(host.name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def session_pids(self, host: FleetHost) -> list[int]:
        """PIDs below the host's listening sshd: one sshd per connection, and their commands."""
        pid = self.pid_of(host)
        return _descendants(pid) if pid is not None else []

    # --- known_hosts -----------------------------------------------------------------------

    def known_hosts_text(
        self,
        *,
        hashed: bool = False,
        exclude: Sequence[str] = (),
        keys: Mapping[str, str] | None = None,
    ) -> str:
        """known_hosts lines for the fleet; `keys` overrides a host's `type base64` key."""
        lines = []
        for host in self.hosts:
            if host.name in exclude:
                continue
            name = host.known_hosts_name()
            if hashed:
                name = HostKeys.hash_host(name)
            lines.append(f"{name} {(keys or {}).get(host.name) or host.public_key()}\n")
        return "".join(lines)

    def write_known_hosts(
        self, path: Path | None = None, *, hashed: bool = False, exclude: Sequence[str] = ()
    ) -> Path:
        """Write known_hosts (default: the fleet's own file) listing every host's current key."""
        target = path or self.known_hosts
        target.write_text(self.known_hosts_text(hashed=hashed, exclude=exclude))
        return target

    # --- taking hosts away and back --------------------------------------------------------

    def start(self, host: FleetHost) -> None:
        """Start the host's sshd on its port with its host key; no-op when it runs."""
        if self.pid_of(host) is None:
            self._procs[host.name] = self._spawn(host)

    def stop(self, host: FleetHost) -> None:
        """Take the host down like a power-off: its sshd and every session below it, by PID."""
        proc = self._procs.pop(host.name, None)
        self._frozen.pop(host.name, None)
        if proc is None:
            return
        tree = _descendants(proc.pid)
        for pid in (proc.pid, *tree):
            _signal(pid, signal.SIGTERM)
            _signal(pid, signal.SIGCONT)  # a frozen process only acts on SIGTERM once resumed
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _reap_or_kill(tree)

    def freeze(self, host: FleetHost) -> None:
        """SIGSTOP the host's sshd and its sessions: connections stay open but nothing answers."""
        pid = self.pid_of(host)
        if pid is None:
            raise RuntimeError(f"{host.name} is not running")
        frozen = [pid, *_descendants(pid)]
        for member in frozen:
            _signal(member, signal.SIGSTOP)
        self._frozen[host.name] = frozen

    def thaw(self, host: FleetHost) -> None:
        """SIGCONT everything `freeze` stopped."""
        for pid in self._frozen.pop(host.name, []):
            _signal(pid, signal.SIGCONT)

    def rekey(self, host: FleetHost, *, trust: bool = False) -> None:
        """Give the host a NEW host key and restart it. known_hosts keeps the old key unless
        `trust`, so the next connection meets a changed key."""
        running = self.pid_of(host) is not None
        self.stop(host)
        generate_key(host.host_key, comment=host.name)
        if trust:
            self.write_known_hosts()
        if running:
            self.start(host)

    def close(self) -> None:
        """Stop every sshd this fleet started (frozen ones are resumed first), by PID."""
        for host in self.hosts:
            self.stop(host)
        atexit.unregister(self.close)

    # --- internals -------------------------------------------------------------------------

    def _add(self, name: str) -> None:
        host_dir = self.base_dir / name
        for sub in ("home", "prefix/bin"):
            (host_dir / sub).mkdir(parents=True, exist_ok=True)
        generate_key(host_dir / "host_ed25519", comment=name)
        client_pub = self.client_key.with_name(self.client_key.name + ".pub")
        (host_dir / "authorized_keys").write_text(client_pub.read_text())
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            host = FleetHost(name, free_port(), host_dir, self.user, self)
            try:
                self._procs[name] = self._spawn(host)
            except _PortTaken:
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            self.hosts.append(host)
            return

    def _spawn(self, host: FleetHost) -> subprocess.Popen[bytes]:
        config = host.dir / "sshd_config"
        config.write_text(self._config(host))
        with host.log.open("ab") as log:
            proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            _wait_listening(proc, host)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise
        return proc

    def _config(self, host: FleetHost) -> str:
        dirs = (str(host.prefix / "bin"), *self.path, os.environ.get("PATH", os.defpath))
        path = os.pathsep.join(dirs)
        setenv = {"HOME": str(host.home), "PATH": path, **self.env}
        for name, value in setenv.items():
            if '"' in value or "\n" in value:
                raise ValueError(f"cannot put {name}={value!r} in sshd_config")
        assignments = " ".join(f'"{name}={value}"' for name, value in setenv.items())
        return "\n".join(
            [
                f"Port {host.port}",
                f"ListenAddress {LOOPBACK}",
                f'HostKey "{host.host_key}"',
                f'AuthorizedKeysFile "{host.dir / "authorized_keys"}"',
                f'PidFile "{host.dir / "sshd.pid"}"',
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UseDNS no",
                "PrintMotd no",
                "MaxStartups 200",  # the benchmark opens dozens of connections at once
                "MaxSessions 64",
                "Subsystem sftp internal-sftp",
                f"SetEnv {assignments}",
                "",
            ]
        )


class _PortTaken(RuntimeError):
    """sshd could not bind its port: someone took it between free_port() and the bind."""


def _wait_listening(proc: subprocess.Popen[bytes], host: FleetHost) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = host.log.read_text(errors="replace")[-2000:]
            if "Bind to port" in log or "Address already in use" in log:
                raise _PortTaken(f"{host.name}: port {host.port} is taken")
            raise RuntimeError(f"{host.name}: sshd exited with {proc.returncode}:\n{log}")
        if _listening(host.port):
            return
        time.sleep(0.005)
    raise RuntimeError(f"{host.name}: sshd did not listen on {host.port} in {START_TIMEOUT_S}s")


def _listening(port: int) -> bool:
    """Is something LISTENing on 127.0.0.1:port? Read from /proc (a probe connection would
    leave a stray pre-auth sshd process behind)."""
    wanted = f"0100007F:{port:04X}"
    with Path("/proc/net/tcp").open() as table:
        for line in table:
            fields = line.split()
            if len(fields) > 3 and fields[1] == wanted and fields[3] == "0A":
                return True
    return False


def _descendants(root: int) -> list[int]:
    """Every live process below `root`, parents before children (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] != "Z":
                children.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap_or_kill(pids: Sequence[int]) -> None:
    """Wait for processes that are not our children to go; SIGKILL them after the grace."""
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.01)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
