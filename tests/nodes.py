"""OpenClaw "nodes" for the facts/operations/readiness tests: real sshd hosts, real npm.

A node is one sshd of the session's `ssh_fleet` plus a directory of its own (HOME, npm prefix,
npm cache) and a free gateway port, so tests never see each other's installs or gateways even
though they share the three sshds. The reconciler reaches it exactly as in production: a spec
`Host` (transport ssh, `npmPrefix`, `serviceManager: command` with the stand-in's
`openclaw gateway restart`) turned into a transport by `connect.transport_for`. The test
registry's npm settings (auth token userconfig, cache inside the node's dir) travel as
environment variables through the transport.

Every gateway a node starts is stopped by the PID in its pidfile at teardown. Each profile's
openclaw.json is set up with a gateway token (the product runs no gateway without auth), written
as an operator would before anything is installed (so it carries no meta.lastTouchedVersion).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.spec import Fleet, Host
from reconciler.hosts.connect import transport_for
from reconciler.hosts.transport import Transport
from reconciler.sandbox.faults import FaultValue, set_faults
from reconciler.sandbox.processes import free_port
from reconciler.sandbox.sshfleet import FleetHost, SSHFleet
from reconciler.sandbox.verdaccio import LocalRegistry

RESTART = ["openclaw", "gateway", "restart"]
STOP = ["openclaw", "gateway", "stop"]


def fleet_spec(
    registry_url: str,
    hosts: Sequence[Host],
    *,
    version: str = "2026.4.3",
    plugins: Mapping[str, str] | None = None,
    install: str = "npm",
    **rollout: Any,
) -> Fleet:
    """A fleet spec over `hosts` installing from `registry_url`."""
    return Fleet.model_validate(
        {
            "name": "testfleet",
            "openclaw": {
                "version": version,
                "plugins": dict(plugins or {}),
                "install": install,
                "registry": registry_url,
            },
            "rollout": {"probeTimeout": "20s", "installTimeout": "2m", **rollout},
            "loadBalancer": {"driver": "file", "address": "/tmp/weights.json"},
            "ssh": {"connectTimeout": "5s", "commandTimeout": "60s"},
            "hosts": [h.model_dump(by_alias=True, exclude_none=True) for h in hosts],
        }
    )


@dataclass
class Node:
    """One test host: an sshd, a directory of its own and a spec `Host` pointing at both."""

    name: str
    sshd: FleetHost
    root: Path
    registry: LocalRegistry
    ports: list[int]
    profile_names: list[str | None]
    extra_env: dict[str, str] = field(default_factory=dict)
    opened: list[Transport] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def prefix(self) -> Path:
        return self.root / "prefix"

    @property
    def port(self) -> int:
        return self.ports[0]

    def host(self, **overrides: Any) -> Host:
        """The spec's view of this node."""
        profiles = [
            {"port": port, **({"name": name} if name else {})}
            for port, name in zip(self.ports, self.profile_names, strict=True)
        ]
        spec: dict[str, Any] = {
            "name": self.name,
            "address": self.sshd.address,
            "port": self.sshd.port,
            "user": self.sshd.user,
            "npmPrefix": str(self.prefix),
            "serviceManager": "command",
            "restartCommand": RESTART,
            "stopCommand": STOP,
            "profiles": profiles,
        }
        return Host.model_validate({**spec, **overrides})

    def env(self) -> dict[str, str]:
        """What the transport adds to every command: HOME and the test registry's npm config."""
        return {
            "HOME": str(self.home),
            "npm_config_userconfig": str(self.registry.npmrc),
            "npm_config_cache": str(self.root / "npm-cache"),
            "npm_config_update_notifier": "false",
            **self.extra_env,
        }

    def transport(self, fleet: Fleet) -> Transport:
        made = transport_for(
            fleet,
            fleet.host(self.name),
            known_hosts_path=self.sshd.fleet.known_hosts,
            key_file=self.sshd.fleet.client_key,
            base_env=self.env(),
        )
        self.opened.append(made)
        return made

    def set_faults(self, **faults: FaultValue) -> None:
        set_faults(self.home, **faults)

    def gateway_pids(self) -> list[int]:
        pids = []
        for pid_file in self.home.glob(".openclaw*/gateway.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pid_file.read_text().strip()))
        return pids

    def stop_gateways(self) -> None:
        """Stop every gateway this node's pidfiles name, by PID (only if it IS a gateway)."""
        for pid in self.gateway_pids():
            if _is_gateway(pid):
                _kill(pid)

    def close(self) -> None:
        self.stop_gateways()
        for made in self.opened:
            made.close()


def _is_gateway(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"gateway" in argv and b"run" in argv and state != "Z"


def _kill(pid: int, grace: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _is_gateway(pid):
            time.sleep(0.02)
        if not _is_gateway(pid):
            return


MakeNode = Callable[..., Node]


@pytest.fixture
def make_node(ssh_fleet: SSHFleet, registry: LocalRegistry, tmp_path: Path) -> Iterator[MakeNode]:
    """Factory: `make_node("alpha", sshd=0, profiles=[None, "work"])`; `sshd` may also be a
    FleetHost of another fleet (e.g. `fresh_ssh_host`), `npm_registry` another registry."""
    nodes: list[Node] = []

    def make(
        name: str,
        *,
        sshd: int | FleetHost = 0,
        profiles: Sequence[str | None] = (None,),
        npm_registry: LocalRegistry | None = None,
    ) -> Node:
        server = ssh_fleet[sshd] if isinstance(sshd, int) else sshd
        node = Node(
            name,
            server,
            tmp_path / name,
            npm_registry or registry,
            ports=[free_port() for _ in profiles],
            profile_names=list(profiles),
        )
        node.home.mkdir(parents=True)
        for profile in profiles:
            state = node.home / (f".openclaw-{profile}" if profile else ".openclaw")
            state.mkdir()
            config = {"gateway": {"auth": {"token": f"token-{name}"}}}
            (state / "openclaw.json").write_text(json.dumps(config))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
