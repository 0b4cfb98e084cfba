"""A World on the real OpenClaw: real sshd hosts running the released product behind HAProxy.

The same world as `reconciler.sandbox.world.World` (hosts, load balancer, a spec remote on a
git daemon), with the real product where the stand-in was: Node 26, `openclaw` from the
public registry, plugins installed the product's way (`openclaw plugins install --pin`,
tracked installs the gateway loads), a gateway with token auth under a service script, and
HAProxy checking /readyz. `ProductView` reads each host the way the product reports itself,
with the product's own commands, so a test compares the fleet with its spec without trusting
anything the reconciler recorded.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.sandbox import realproduct as rp
from reconciler.sandbox.sshfleet import SSHFleet
from reconciler.sandbox.tools import SandboxError
from reconciler.sandbox.traffic import probe
from reconciler.sandbox.world import World, WorldHost

READY_TIMEOUT_S = 240.0
NAMES = ("mac-1", "mac-2")


@dataclass(frozen=True)
class PublicRegistry:
    """The registry this machine's npm uses: nothing to start or stop."""

    url: str

    def stop(self) -> None:
        return None


class RealWorld(World):
    """Two hosts (by default) on the real product at `initial`, with `PLUGIN` at the same
    release; HAProxy in front. Build, use, `close()`."""

    plugin_names = (rp.PLUGIN,)
    command_timeout = "3m"  # a real doctor takes 8-30 s on 2 CPUs; npm view over the network

    def __init__(
        self,
        root: Path,
        *,
        initial: str = rp.RELEASES[0],
        names: Sequence[str] = NAMES,
        steps: Sequence[int] = (50, 100),
        extra_rollout: Mapping[str, object] | None = None,
    ) -> None:
        self.tools = rp.tools_dir()
        self.node_bin = rp.ensure_node(self.tools)
        self.token = secrets.token_hex(16)
        super().__init__(
            root,
            names=names,
            initial=initial,
            steps=steps,
            lb="haproxy",
            extra_rollout={
                "probeTimeout": "2m",
                "installTimeout": "10m",
                "minFreeDiskMb": 1024,
                **dict(extra_rollout or {}),
            },
        )

    # --- World's hooks -------------------------------------------------------------------

    def _start_registry(self) -> PublicRegistry:
        return PublicRegistry(rp.public_registry(rp.node_env(self.tools)))

    def _ssh_fleet(self, names: Sequence[str]) -> SSHFleet:
        return SSHFleet(
            self.root / "ssh", len(names), names=list(names), env=rp.ca_env(),
            path=[str(self.node_bin)],
        )  # fmt: skip

    def _bring_up(self, initial: str) -> None:
        def one(host: WorldHost) -> None:
            self.install(host, initial, self.plugins(initial))
            self.start_gateway(host)

        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(one, self.hosts))

    def host_env(self, host: WorldHost) -> dict[str, str]:
        env = rp.node_env(self.tools, super().host_env(host))
        env["PATH"] = f"{host.prefix / 'bin'}:{env['PATH']}"
        return {**env, **rp.ca_env()}

    def restart_argv(self, host: WorldHost) -> list[str]:
        return [str(host.home / "bin" / rp.SERVICE), "restart"]

    def stop_argv(self, host: WorldHost) -> list[str]:
        return [str(host.home / "bin" / rp.SERVICE), "stop"]

    def host_path(self, host: WorldHost) -> list[str]:
        return [str(self.node_bin)]

    def install(self, host: WorldHost, core: str, plugins: Mapping[str, str]) -> None:
        """The state an operator leaves a host in: the release, gateway config with token
        auth, plugins installed the product's way."""
        rp.copy_release(core, host.prefix, self.tools)
        rp.host_npmrc(host.home, self.tools)
        rp.install_service(host.home, host.gateway_port)
        env = self.host_env(host)
        rp.openclaw(["config", "set", "gateway.mode", "local"], env)
        rp.openclaw(["config", "set", "gateway.auth.token", self.token], env)
        for name, version in plugins.items():
            rp.openclaw(["plugins", "install", f"npm:{name}@{version}", "--pin"], env)

    def start_gateway(self, host: WorldHost) -> None:
        self.service(host, "start")
        wait_ready(host, READY_TIMEOUT_S)
        if host not in self._gateways:
            self._gateways.append(host)

    def stop_gateway(self, host: WorldHost) -> None:
        if (host.home / "bin" / rp.SERVICE).exists():
            self.service(host, "stop")

    def service(self, host: WorldHost, verb: str) -> None:
        argv = [str(host.home / "bin" / rp.SERVICE), verb]
        rp.run(argv, self.host_env(host), timeout=60)

    def reset(self, host: WorldHost, core: str, plugins: Mapping[str, str]) -> None:
        """Put a host back the way an operator would after a rollout that could not finish:
        gateway stopped, the product's state and the install made anew, serving at its
        weight."""
        self.stop_gateway(host)
        for state in (".openclaw", ".openclaw-service"):
            shutil.rmtree(host.home / state, ignore_errors=True)
        self.install(host, core, plugins)
        self.start_gateway(host)
        if self.haproxy is not None:
            self.haproxy.driver().set_weight(host.server, host.weight)

    def reset_where(self, core: str, plugins: Mapping[str, str]) -> list[str]:
        """`reset` every host whose product view differs from `core` and `plugins` at full
        weight, in parallel; the names of those reset."""
        views = self.views()
        wrong = [h for h in self.hosts if views[h.name].differences(core, plugins, h.weight)]
        if wrong:
            with ThreadPoolExecutor(len(wrong)) as pool:
                list(pool.map(lambda h: self.reset(h, core, plugins), wrong))
        return [h.name for h in wrong]

    # --- the product's own view --------------------------------------------------------

    def crash_at_start(self, host: WorldHost, version: str | None) -> None:
        rp.crash_at_start(host.home, version)

    def openclaw(self, host: WorldHost, *argv: str, env: Mapping[str, str] | None = None) -> str:
        """Run the real openclaw on a host; its stdout."""
        return rp.openclaw(argv, env or self.host_env(host)).stdout

    def view(self, host: WorldHost) -> ProductView:
        return ProductView.read(self, host)

    def views(self) -> dict[str, ProductView]:
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            return {
                h.name: view
                for h, view in zip(self.hosts, pool.map(self.view, self.hosts), strict=True)
            }


@dataclass(frozen=True)
class ProductView:
    """A host as the product itself reports it, read with its own commands and endpoints."""

    version: str | None
    """`openclaw --version` (the installed binary)."""
    running: str | None
    """/startupz's version (the running gateway); None when nothing answers."""
    ready: bool
    plugins: dict[str, dict[str, Any]]
    """`openclaw plugins list --json`, non-bundled plugins by id: version, status, enabled."""
    doctor: tuple[str, ...]
    """`openclaw doctor --json` findings as `severity checkId`."""
    weight: int | None
    config_version: str | None = None
    """`meta.lastTouchedVersion` of the host's openclaw.json (the downgrade guard's key)."""
    errors: tuple[str, ...] = field(default=())

    @classmethod
    def read(cls, world: RealWorld, host: WorldHost) -> ProductView:
        errors: list[str] = []

        def cli(*argv: str) -> Any:
            try:
                out = world.openclaw(host, *argv)
                return json.loads(out) if "--json" in argv else out
            except (SandboxError, ValueError) as exc:
                errors.append(f"openclaw {' '.join(argv)}: {exc}")
                return None

        line = cli("--version") or ""
        listing = cli("plugins", "list", "--json") or {}
        doctor = cli("doctor", "--json") or {}
        status, startupz = probe(host.gateway_port, "/startupz")
        return cls(
            version=line.split()[1] if len(line.split()) > 1 else None,
            running=(startupz or {}).get("version") if status else None,
            ready=probe(host.gateway_port, "/readyz")[0] == 200,
            plugins={
                p["id"]: {key: p.get(key) for key in ("version", "status", "enabled")}
                for p in listing.get("plugins", [])
                if p.get("origin") != "bundled"
            },
            doctor=tuple(f"{f['severity']} {f['checkId']}" for f in doctor.get("findings", [])),
            weight=world.weights().get(host.server),
            config_version=_last_touched(host.home / ".openclaw" / "openclaw.json"),
            errors=tuple(errors),
        )

    def differences(self, core: str, plugins: Mapping[str, str], weight: int) -> list[str]:
        """How this host differs from the spec (empty: the product agrees with it)."""
        wrong = [f"cannot read {e}" for e in self.errors]
        if self.version != core:
            wrong.append(f"openclaw --version is {self.version}, spec {core}")
        if self.running != core:
            wrong.append(f"/startupz runs {self.running}, spec {core}")
        if not self.ready:
            wrong.append("/readyz is not 200")
        for name, version in plugins.items():
            seen = self.plugins.get(name.removeprefix("@openclaw/"))
            if seen is None:
                wrong.append(f"plugins list has no {name}")
            elif (seen["version"], seen["status"], seen["enabled"]) != (version, "loaded", True):
                wrong.append(f"plugins list: {name} is {seen}, spec {version} loaded and enabled")
        wrong += [f"doctor: {f}" for f in self.doctor if f.startswith("error ")]
        if self.weight != weight:
            wrong.append(f"HAProxy weight {self.weight}, spec {weight}")
        return wrong


def _last_touched(config: Path) -> str | None:
    try:
        meta = json.loads(config.read_text()).get("meta") or {}
    except (OSError, ValueError):
        return None
    version = meta.get("lastTouchedVersion")
    return version if isinstance(version, str) else None


def wait_ready(host: WorldHost, timeout: float) -> None:
    """Until the host's gateway answers /readyz 200; SandboxError with its log after `timeout`."""
    deadline = time.monotonic() + timeout
    while probe(host.gateway_port, "/readyz", 2.0)[0] != 200:
        if time.monotonic() >= deadline:
            log = host.home / ".openclaw-service" / "gateway.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise SandboxError(f"{host.name}: gateway not ready after {timeout:g}s:\n{tail}")
        time.sleep(0.5)
