"""A whole fleet on one machine: registry, hosts, gateways, a load balancer and a spec remote.

The engine tests, the benchmarks and `reconciler demo` all need the same world: a local npm
registry with the stand-in OpenClaw, N hosts (real sshds, or local directories) each with its
own npm prefix, HOME and a running gateway, a load balancer (a weights file, or a real
HAProxy), and a spec repository on a real git remote (git daemon) that an "operator" pushes
bumps and reverts to. Everything is built from the real parts in this package and stopped by
PID in `close()`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pygit2

from reconciler.desired.resolve import resolve_lock
from reconciler.desired.spec import Fleet
from reconciler.sandbox.catalog import publish_standard_catalog
from reconciler.sandbox.faults import FaultValue, set_faults
from reconciler.sandbox.gitd import GitDaemon
from reconciler.sandbox.haproxy import HAProxyProcess
from reconciler.sandbox.processes import free_port
from reconciler.sandbox.sshfleet import SSHFleet
from reconciler.sandbox.verdaccio import LocalRegistry, npm_install_global, standin_bin

OPERATOR = pygit2.Signature("Operator", "operator@example.com")
PLUGINS = ("@openclaw/discord", "@openclaw/matrix")
COMMAND_TIMEOUT = "60s"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WorldHost:
    """One host of the world: where its files live and where its gateway listens."""

    name: str
    role: str
    home: Path
    prefix: Path
    gateway_port: int
    weight: int
    ssh_port: int | None = None

    @property
    def server(self) -> str:
        return self.name

    @property
    def gateway_token(self) -> str:
        """The gateway's auth token (the product refuses to run a gateway without one)."""
        return f"sandbox-{self.name}"


def host_environment(host: WorldHost) -> dict[str, str]:
    """The environment of a command an operator runs on `host` (this process's, with the
    host's HOME, npm prefix first on PATH and its gateway port)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "npm_"))}
    path = f"{host.prefix / 'bin'}{os.pathsep}{keep.get('PATH', os.defpath)}"
    return {
        **keep,
        "HOME": str(host.home),
        "PATH": path,
        "OPENCLAW_GATEWAY_PORT": str(host.gateway_port),
    }


def product_version(
    host: WorldHost, package: str = "openclaw", env: Mapping[str, str] | None = None
) -> str | None:
    """The version of `package` on `host` as the product has it: the core from the npm
    prefix, a plugin from `openclaw plugins list --json` (a tracked install; an npm copy
    beside the core is not one); None when it has none."""
    if package == "openclaw":
        path = host.prefix / "lib" / "node_modules" / "openclaw" / "package.json"
        return json.loads(path.read_text())["version"] if path.exists() else None
    listed = subprocess.run(
        [str(standin_bin(host.prefix)), "plugins", "list", "--json"],
        env=dict(env or host_environment(host)),
        cwd=host.home,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    if listed.returncode != 0:
        return None
    for plugin in json.loads(listed.stdout)["plugins"]:
        spec = (plugin.get("trust") or {}).get("installSpec") or ""
        if plugin.get("origin") != "bundled" and spec.rpartition("@")[0] == package:
            return str(plugin["version"])
    return None


class Registry(Protocol):
    """Where the world's hosts install from: a LocalRegistry, or the real product's."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


class World:
    """Build with `World(root, ...)`, use, then `close()` (also a context manager)."""

    plugin_names: tuple[str, ...] = PLUGINS
    command_timeout = COMMAND_TIMEOUT

    def __init__(
        self,
        root: Path,
        *,
        names: Sequence[str] = ("mac-1", "mac-2", "mac-3"),
        transport: Literal["ssh", "local"] = "ssh",
        initial: str = "2026.4.2",
        steps: Sequence[int] = (10, 50, 100),
        soak: str = "0s",
        registry: Registry | None = None,
        weights: Sequence[int] | None = None,
        extra_rollout: Mapping[str, object] | None = None,
        webhook: str | None = None,
        webhook_secret_env: str | None = None,
        lb: Literal["file", "haproxy"] = "file",
    ) -> None:
        self.root = root
        self.transport = transport
        self.steps = list(steps)
        self.soak = soak
        self.extra_rollout = dict(extra_rollout or {})
        self.webhook = webhook
        self.webhook_secret_env = webhook_secret_env
        self._own_registry = registry is None
        self._gateways: list[WorldHost] = []
        self.ssh: SSHFleet | None = None
        self.gitd: GitDaemon | None = None
        self.haproxy: HAProxyProcess | None = None
        self.lb = lb
        root.mkdir(parents=True, exist_ok=True)
        try:
            self.registry = registry or self._start_registry()
            self.hosts = self._make_hosts(names, weights)
            self.lb_file = root / "lb" / "weights.json"
            self._write_weights()
            self._bring_up(initial)
            if lb == "haproxy":
                self.haproxy = HAProxyProcess(
                    root / "haproxy",
                    "openclaw",
                    {h.server: h.gateway_port for h in self.hosts},
                    weights={h.server: h.weight for h in self.hosts},
                    check_path="/readyz",
                )
            self.gitd = GitDaemon(root / "git")
            self.remote_path, self.remote = self.gitd.create("spec")
            self.work = pygit2.init_repository(str(root / "work"), bare=False, initial_head="main")
        except BaseException:
            self.close()
            raise

    # --- parts ---------------------------------------------------------------------------

    def _start_registry(self) -> Registry:
        registry = LocalRegistry.start(self.root / "registry")
        publish_standard_catalog(registry)
        return registry

    def _make_hosts(self, names: Sequence[str], weights: Sequence[int] | None) -> list[WorldHost]:
        roles = ["canary", *["stable"] * max(0, len(names) - 2), "witness"][: len(names)]
        weights = list(weights or [100] * len(names))
        if self.transport == "ssh":
            self.ssh = self._ssh_fleet(names)
            return [
                WorldHost(h.name, roles[i], h.home, h.prefix, free_port(), weights[i], h.port)
                for i, h in enumerate(self.ssh.hosts)
            ]
        hosts = []
        for i, name in enumerate(names):
            base = self.root / "hosts" / name
            (base / "home").mkdir(parents=True, exist_ok=True)
            (base / "prefix").mkdir(parents=True, exist_ok=True)
            hosts.append(
                WorldHost(name, roles[i], base / "home", base / "prefix", free_port(), weights[i])
            )
        return hosts

    def _ssh_fleet(self, names: Sequence[str]) -> SSHFleet:
        return SSHFleet(self.root / "ssh", len(names), names=list(names))

    def _bring_up(self, initial: str) -> None:
        """Give every host its starting install and a running gateway."""
        for host in self.hosts:
            self.install(host, initial, self.plugins(initial))
            self.start_gateway(host)

    def plugins(self, version: str) -> dict[str, str]:
        """The world's plugins, each pinned at `version`."""
        return dict.fromkeys(self.plugin_names, version)

    def host(self, name: str) -> WorldHost:
        return next(h for h in self.hosts if h.name == name)

    def host_env(self, host: WorldHost) -> dict[str, str]:
        return host_environment(host)

    def install(self, host: WorldHost, core: str, plugins: Mapping[str, str]) -> None:
        """Install directly (the 'before' state an operator already has): the core with npm,
        the plugins the product's way (tracked installs, which it loads)."""
        assert isinstance(self.registry, LocalRegistry)
        env = self.host_env(host)
        npm_install_global(self.registry, host.prefix, [f"openclaw@{core}"], env=env)
        env["npm_config_registry"] = self.registry.url
        for name, version in plugins.items():
            self.openclaw(
                host, "plugins", "install", f"npm:{name}@{version}", "--pin", "--force", env=env
            )

    def version(self, host: WorldHost, package: str = "openclaw") -> str | None:
        return product_version(host, package, self.host_env(host))

    def openclaw(self, host: WorldHost, *argv: str, env: Mapping[str, str] | None = None) -> str:
        """Run the host's openclaw as an operator would; its stdout."""
        done = subprocess.run(
            [str(standin_bin(host.prefix)), *argv],
            env=dict(env or self.host_env(host)),
            cwd=host.home,
            check=True,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        return done.stdout

    def start_gateway(self, host: WorldHost) -> None:
        """Set the gateway's token as an operator would (`config set`), then start it."""
        binary = str(standin_bin(host.prefix))
        for argv in (
            [binary, "config", "set", "gateway.auth.token", host.gateway_token],
            [binary, "gateway", "start"],
        ):
            subprocess.run(
                argv,
                env=self.host_env(host),
                cwd=host.home,
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_S,
            )
        self._gateways.append(host)

    def stop_gateway(self, host: WorldHost) -> None:
        binary = standin_bin(host.prefix)
        if binary.exists():
            subprocess.run(
                [str(binary), "gateway", "stop"],
                env=self.host_env(host),
                cwd=host.home,
                capture_output=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )

    def set_faults(self, host: WorldHost, **faults: FaultValue) -> None:
        set_faults(host.home, **faults)

    def _write_weights(self) -> None:
        self.lb_file.parent.mkdir(parents=True, exist_ok=True)
        servers = {h.server: h.weight for h in self.hosts}
        self.lb_file.write_text(json.dumps({"servers": servers}, indent=2) + "\n")

    def weights(self) -> dict[str, int]:
        if self.haproxy is not None:
            return self.haproxy.driver().weights()
        servers: dict[str, int] = json.loads(self.lb_file.read_text())["servers"]
        return servers

    def weight_history(self) -> list[dict[str, object]]:
        log = self.lb_file.with_name(self.lb_file.name + ".history.jsonl")
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    # --- the spec repository -------------------------------------------------------------

    def fleet_yaml(self, core: str, plugins: Mapping[str, str] | None = None) -> str:
        plugins = self.plugins(core) if plugins is None else plugins
        lines = [
            "apiVersion: reconciler.openclaw.ai/v1",
            "kind: Fleet",
            "name: sandbox",
            "openclaw:",
            f"  version: {core}",
            f"  registry: {self.registry.url}",
            "  plugins:" + ("" if plugins else " {}"),
            *(f'    "{n}": {v}' for n, v in plugins.items()),
            "rollout:",
            *(f"  {k}: {json.dumps(v)}" for k, v in self._rollout().items()),
            *self._load_balancer(),
            *self._notifications(),
            "ssh:",
            f"  commandTimeout: {self.command_timeout}",
            *([f"  keyFile: {self.ssh.client_key}"] if self.ssh else []),
            "hosts:",
        ]
        for h in self.hosts:
            lines += [
                f"  - name: {h.name}",
                "    address: 127.0.0.1",
                f"    port: {h.ssh_port or 22}",
                f"    user: {self._user()}",
                f"    role: {h.role}",
                f"    transport: {self.transport}",
                *([f"    home: {h.home}"] if self.transport == "local" else []),
                f"    npmPrefix: {h.prefix}",
                "    serviceManager: command",
                f"    restartCommand: {json.dumps(self.restart_argv(h))}",
                f"    stopCommand: {json.dumps(self.stop_argv(h))}",
                *(["    path: " + json.dumps(self.host_path(h))] if self.host_path(h) else []),
                "    profiles:",
                f"      - port: {h.gateway_port}",
                f"        weight: {h.weight}",
            ]
        return "\n".join(lines) + "\n"

    def restart_argv(self, host: WorldHost) -> list[str]:
        """The host's restart command (its service manager)."""
        return ["openclaw", "gateway", "restart"]

    def stop_argv(self, host: WorldHost) -> list[str]:
        """The host's stop command (its service manager)."""
        return ["openclaw", "gateway", "stop"]

    def host_path(self, host: WorldHost) -> list[str]:
        """Directories the spec puts first on the host's PATH."""
        return []

    def _load_balancer(self) -> list[str]:
        if self.haproxy is not None:
            return [
                "loadBalancer:",
                "  driver: haproxy",
                f"  address: {self.haproxy.socket_address}",
                "  backend: openclaw",
            ]
        return ["loadBalancer:", "  driver: file", f"  address: {self.lb_file}"]

    def _rollout(self) -> dict[str, object]:
        return {
            "steps": self.steps,
            "soak": self.soak,
            "drainTimeout": "5s",
            "probeTimeout": "20s",
            "installTimeout": "2m",
            "minFreeDiskMb": 10,
            **self.extra_rollout,
        }

    def _notifications(self) -> list[str]:
        if self.webhook is None:
            return []
        secret = [f"    secretEnv: {self.webhook_secret_env}"] if self.webhook_secret_env else []
        return [
            "notifications:",
            "  - type: webhook",
            f"    url: {self.webhook}",
            *secret,
            "    events: [failure, gate, success]",
        ]

    def _user(self) -> str:
        if self.ssh is not None:
            return self.ssh.user
        return "sandbox"

    def spec_files(self, core: str, plugins: Mapping[str, str] | None = None) -> dict[str, bytes]:
        text = self.fleet_yaml(core, plugins)
        from ruamel.yaml import YAML

        fleet = Fleet.model_validate(YAML(typ="safe").load(text))
        lock = resolve_lock(fleet, timeout=30.0)
        files = {"fleet.yaml": text.encode(), "openclaw.lock": lock.to_bytes()}
        if self.ssh is not None:
            files["known_hosts"] = self.ssh.known_hosts_text().encode()
        return files

    def commit(self, files: Mapping[str, bytes], message: str) -> str:
        """Commit `files` over the current tree of main and push it (the operator's merge)."""
        repo = self.work
        index = repo.index
        for rel, data in files.items():
            (self.root / "work" / rel).write_bytes(data)
            index.add(rel)
        index.write()
        tree = index.write_tree()
        parents = [] if repo.head_is_unborn else [repo.head.target]
        oid = repo.create_commit("HEAD", OPERATOR, OPERATOR, message, tree, parents)
        self.push()
        return str(oid)

    def bump(self, core: str, plugins: Mapping[str, str] | None = None, message: str = "") -> str:
        return self.commit(self.spec_files(core, plugins), message or f"openclaw {core}")

    def revert(self, commit: str) -> str:
        repo = self.work
        target = repo.get(commit)
        assert isinstance(target, pygit2.Commit)
        repo.revert(target)
        tree = repo.index.write_tree()
        message = f'Revert "{target.message.splitlines()[0]}"\n\nThis reverts commit {commit}.\n'
        oid = repo.create_commit("HEAD", OPERATOR, OPERATOR, message, tree, [repo.head.target])
        repo.state_cleanup()
        repo.checkout_head(strategy=pygit2.enums.CheckoutStrategy.FORCE)
        self.push()
        return str(oid)

    def push(self) -> None:
        remotes = [r.name for r in self.work.remotes]
        if "origin" not in remotes:
            self.work.remotes.create("origin", self.remote)
        self.work.remotes["origin"].push(["+refs/heads/main:refs/heads/main"])

    # --- running the reconciler ----------------------------------------------------------

    def reconcile_argv(self, *extra: str, cache: Path | None = None) -> list[str]:
        return [
            sys.executable, "-m", "reconciler", "reconcile", "--once",
            "--remote", self.remote, "--fleet", "sandbox",
            "--cache", str(cache or self.root / "cache"), *extra,
        ]  # fmt: skip

    def status_repo(self) -> pygit2.Repository:
        return pygit2.Repository(str(self.remote_path))

    # --- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        for host in self._gateways:
            self.stop_gateway(host)
        self._gateways.clear()
        if self.haproxy is not None:
            self.haproxy.close()
        if self.gitd is not None:
            self.gitd.stop()
        if self.ssh is not None:
            self.ssh.close()
        if self._own_registry and getattr(self, "registry", None) is not None:
            self.registry.stop()

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
