"""Operations: the only code that changes a host, each verifying its own effect.

An operation acts, then re-reads facts to prove the act took: an install re-reads the npm tree
and fails unless it equals the wanted pins exactly (no second copy of openclaw, no npm problem,
no version off by one); a restart watches /startupz until a NEW gateway process answers (its
uptime is shorter than the time since we asked for the restart). Becoming ready is a separate
wait (`wait_ready`), because a restart that took is not yet a healthy gateway, and the caller
owns that budget (the spec's probe timeout).

Why the install looks the way it does:

* Core first, then all plugins in ONE npm call. The plugins' peer ranges follow the core, so
  installing the core first means each plugin lands next to the core it will run with; one call
  for the plugins makes them one transaction for npm (one resolve, one reify) and one round trip.
  Only packages whose installed version differs are touched, so a re-run is a no-op.
* `--allow-scripts=openclaw`: npm >= 11.15 asks for it on global installs (11.19 here still runs
  an uncovered postinstall, but warns; a host configured with `strict-allow-scripts` fails
  without it). Only openclaw's scripts are allowed, nothing else's.
* Refuse before touching anything, like OpenClaw's own updater: `node --version` against each
  release's `engines.node`, and each plugin's `peerDependencies.openclaw` and
  `openclaw.install.minHostVersion` against the core it will run with (from the lock, else from
  `npm view` on the host). npm would not refuse a peer mismatch: it silently nests a second copy
  of openclaw under the plugin (or, for an optional peer, leaves an invalid one). `--engine-strict`
  then covers the dependencies we did not check ourselves. And the lock's tarball integrity:
  npm checks a tarball against the registry's `dist.integrity`, never against our lock, so a
  locked release is refused unless the registry (as the host sees it) serves the locked value.
* `prefer_offline=True` (rollbacks) adds `--prefer-offline`: the prior versions come from the
  host's npm cache, so a registry outage cannot block going back.
* A new core and plugin changes on a host whose gateway still runs the old core: the gateway is
  stopped first (the host is drained). The product refuses plugin changes by one core while a
  gateway of another holds the plugin lifecycle lease (seen on 2026.9.4 -> 2026.9.5).
* Unpinned `@openclaw/*` packages are removed (`prune`): otherwise a plugin dropped from the spec
  would stay and the tree could never equal the pins. Other global packages are never touched.

Every value that reaches a command comes from the validated spec, or is validated here (pins
from a bookmark), and travels as one argv element: the transport quotes, no shell parses it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from reconciler import facts
from reconciler.compare import differences, disk_refusal, node_refusal
from reconciler.documents import Installed, PluginState
from reconciler.errors import (
    CommandFailed,
    CommandTimeout,
    FactParseError,
    HostError,
    PermanentError,
)
from reconciler.lock import Lock
from reconciler.planner import Pin
from reconciler.spec import CORE, NPM_NAME, Fleet, Host, Profile, seconds
from reconciler.transport import CommandResult, Transport, describe
from reconciler.tree import HostTree
from reconciler.versions import EXACT_SEMVER, satisfies

_NPM_NAME = re.compile(NPM_NAME)
_EXACT = re.compile(EXACT_SEMVER)
RESTART_POLL_S = 0.1
READY_POLL_S = 0.2
"""Pause between two looks at readiness: `wait_ready`'s probes, and the executor's waits
(each of which polls on the host itself every 20 ms)."""


class ReleaseFacts(Protocol):
    """How `install_preflight` asks for a release's registry facts (facts.gather, or a cache)."""

    def __call__(
        self, transport: Transport, fact: facts.Fact[facts.ReleaseRanges], *, timeout: float
    ) -> facts.ReleaseRanges: ...


class NodeEngineUnsupported(HostError, PermanentError):
    """The host's Node does not satisfy a release's `engines.node`; nothing was changed."""


class PluginIncompatible(HostError, PermanentError):
    """A plugin's peer range or minHostVersion excludes the core; nothing was changed."""


class InsufficientDisk(HostError, PermanentError):
    """Less free space under the npm prefix than `rollout.minFreeDiskMb`."""


class IntegrityMismatch(HostError, PermanentError):
    """The registry serves a release whose tarball integrity is not the one the lock pins."""


class InstallVerificationFailed(HostError, PermanentError):
    """After installing, the npm tree is not exactly the wanted pins."""


class RestartNotObserved(HostError, PermanentError):
    """The restart command succeeded but no new gateway process answered /startupz in time.

    Permanent: the real product answers nothing at all when it dies at start or refuses to run
    (a downgrade guard, a bad config), and the host is drained and down meanwhile. Retrying
    would keep it so for retries x probeTimeout; a red host is restored at once instead. Only
    failing to reach the host (HostUnreachable) or the registry is temporary."""


class GatewayNotReady(HostError, PermanentError):
    """/readyz did not answer 200 within the budget."""


class RunningVersionMismatch(HostError, PermanentError):
    """The gateway is ready but runs another version than the one installed."""


# --- install ------------------------------------------------------------------------------------


def wanted_versions(pins: Mapping[str, str] | Sequence[Pin]) -> dict[str, str]:
    """Pins as an ordered {name: exact version}, core first; refuses anything not exact."""
    pairs = list(pins.items()) if isinstance(pins, Mapping) else [(p.name, p.version) for p in pins]
    wanted: dict[str, str] = {}
    for name, version in sorted(pairs, key=lambda pair: pair[0] != CORE):
        # fullmatch: a pattern's `$` also matches before a trailing newline, and these pins may
        # come from a bookmark on the status branch, not only from the validated spec.
        if not _NPM_NAME.fullmatch(name) or not _EXACT.fullmatch(version):
            raise ValueError(f"not an exact npm pin: {name!r}@{version!r}")
        wanted[name] = version
    return wanted


def install(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    pins: Mapping[str, str] | Sequence[Pin],
    *,
    lock: Lock | None = None,
    prefer_offline: bool = False,
    prune: bool = True,
    releases: ReleaseFacts | None = None,
    removed: list[str] | None = None,
    managed: bool = False,
) -> Installed:
    """Install the pins (the core with npm or `openclaw update`, then every plugin the
    product's way in every profile) and return the verified install, as the product reports
    it. `releases` answers the registry facts of its preflight (default: ask the host now);
    `removed` gets the npm copies of plugins beside the core that were removed (the product
    never loaded them: hosts set up with `npm i -g` plugins are migrated so); `managed`: the core
    with `openclaw update` whatever the spec says (a downgrade: the product checks that the
    older release can run on the state, and refuses in its own words when it cannot)."""
    wanted = wanted_versions(pins)
    quick = seconds(fleet.ssh.command_timeout)
    prefix = facts.resolve_prefix(transport, host, timeout=quick)
    seen = facts.gather(transport, facts.host_tree(prefix), timeout=quick)
    listings = _plugin_lists(transport, host, quick) if seen.installed.core else {}
    before = facts.product_view(seen.installed, listings)
    have = {CORE: before.core, **before.plugins}
    todo = {name: v for name, v in wanted.items() if have.get(name) != v}
    extras = _unpinned(before, wanted) if prune else []
    strays = [s.rsplit("@", 1)[0] for s in before.strays]
    if not todo and not extras and not strays:
        return _verified(transport.host, before, wanted)  # nothing to do: `before` is the proof
    npm = NpmInstaller(fleet, transport, prefix, prefer_offline)
    if todo:
        core = wanted.get(CORE, before.core)
        install_preflight(
            fleet,
            host,
            transport,
            prefix,
            todo,
            core=core,
            lock=lock,
            prefer_offline=prefer_offline,
            releases=releases,
            seen=seen,
        )
        plugin_work = any(name != CORE for name in todo) or bool(extras)
        if CORE in todo and before.core is not None and plugin_work:
            # The product refuses plugin changes by a new core while a gateway of the old one
            # runs ("failed to acquire plugin lifecycle lease"): the host is drained, so stop
            # it; the restart that follows the install starts it.
            stop_host(fleet, host, transport)
        if CORE in todo:
            fresh = before.core is None
            _install_core(fleet, transport, npm, todo[CORE], fresh=fresh, managed=managed)
    npm.uninstall(strays)  # copies the product never loaded: the tracked install replaces them
    if removed is not None:
        removed += before.strays
    plugins = PluginInstaller(fleet, host, transport, prefer_offline)
    plugins.install({n: v for n, v in todo.items() if n != CORE}, listings)
    plugins.uninstall(extras, listings)
    return verify_installed(transport, host, prefix, wanted, timeout=quick)


def _plugin_lists(transport: Transport, host: Host, timeout: float) -> dict[str, list[PluginState]]:
    """Every profile's non-bundled plugins, as the product lists them."""
    lists: dict[str, list[PluginState]] = {}
    for profile in host.profiles:
        listed = facts.gather(transport, facts.plugins(facts.profile_env(profile)), timeout=timeout)
        lists[profile.key()] = facts.plugin_states(listed)
    return lists


def verify_installed(
    transport: Transport, host: Host, prefix: str, wanted: Mapping[str, str], *, timeout: float
) -> Installed:
    """Re-read the install as the product reports it; raise InstallVerificationFailed unless it
    is exactly `wanted` and every pinned plugin runs (listed, enabled, loaded, its
    dependencies there) in every profile."""
    tree = facts.installed(transport, prefix, timeout=timeout)
    listings = _plugin_lists(transport, host, timeout)
    troubles = [
        f"profile {key}: plugin {state.name} is not running: {trouble}"
        for key, states in listings.items()
        for state in states
        if state.name in wanted and (trouble := state.trouble()) is not None
    ]
    if troubles:
        raise InstallVerificationFailed(transport.host, "; ".join(troubles))
    return _verified(transport.host, facts.product_view(tree, listings), wanted)


def _verified(host: str, tree: Installed, wanted: Mapping[str, str]) -> Installed:
    wrong = list(differences(tree, wanted))
    if wrong:
        message = "installed tree differs from the pins: " + "; ".join(wrong)
        raise InstallVerificationFailed(host, message)
    return tree


def _unpinned(view: Installed, wanted: Mapping[str, str]) -> list[str]:
    """Plugins the product runs that no pin names: removed, so the install equals the pins."""
    return [n for n in sorted(view.plugins) if n.startswith("@openclaw/") and n not in wanted]


def install_preflight(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    prefix: str,
    todo: Mapping[str, str],
    *,
    core: str | None,
    lock: Lock | None = None,
    prefer_offline: bool = False,
    releases: ReleaseFacts | None = None,
    seen: HostTree | None = None,
) -> None:
    """The install's own preflight (not the plan's `preflight` step, which runs before it):
    refuse before touching anything: a release whose engines.node excludes this host's
    Node, a plugin whose peer range or minHostVersion excludes `core` (npm would silently nest
    a second openclaw, or leave an invalid peer), a locked release the registry serves with
    another integrity than the lock's, too little free disk. The facts are read concurrently
    (one `npm view` per release, none for a rollback from the cache of a locked release);
    Node's version and the free space come from `seen` (a read of the tree just made) when it
    has them."""
    quick = seconds(fleet.ssh.command_timeout)
    known_node = seen.node_version if seen else None
    known_disk = facts.DiskFree.of(seen, prefix) if seen else None
    with ThreadPoolExecutor(len(todo) + 2, thread_name_prefix=f"preflight-{host.name}") as pool:
        node_f = known_node or pool.submit(
            facts.gather, transport, facts.node_version(), timeout=quick
        )
        disk_f = known_disk or pool.submit(
            facts.gather, transport, facts.disk_free(prefix), timeout=quick
        )
        range_fs = {
            name: pool.submit(
                _ranges, fleet, transport, name, v, lock, prefer_offline, quick, releases
            )
            for name, v in todo.items()
        }
        node = node_f if isinstance(node_f, str) else node_f.result()
        disk = disk_f if isinstance(disk_f, facts.DiskFree) else disk_f.result()
        ranges = {name: future.result() for name, future in range_fs.items()}
    for name, r in ranges.items():
        refusal = node_refusal(node, f"{name}@{todo[name]}", r.engines_node)
        if refusal is not None:
            raise NodeEngineUnsupported(
                host.name, f"{refusal}; refusing to install, nothing was changed"
            )
    for name, r in ranges.items():
        _check_core_ranges(host, f"{name}@{todo[name]}", r, core)
    refusal = disk_refusal(fleet, disk.free_mb, f"{disk.path} (holding {prefix})")
    if refusal is not None:
        raise InsufficientDisk(host.name, f"{refusal}; nothing was changed")


def _check_core_ranges(
    host: Host, what: str, ranges: facts.ReleaseRanges, core: str | None
) -> None:
    if core is None or what.startswith(f"{CORE}@"):
        return
    checks = {
        "peerDependencies.openclaw": ranges.peer_openclaw,
        "openclaw.compat.pluginApi": ranges.plugin_api,
        "openclaw.install.minHostVersion": ranges.min_host_version,
    }
    for label, wanted in checks.items():
        if wanted and not satisfies(core, wanted):
            raise PluginIncompatible(
                host.name,
                f"{what} declares {label} {wanted!r}, which excludes openclaw {core} (npm would "
                "install a second copy of openclaw or leave an invalid peer); nothing was changed",
            )


def _ranges(
    fleet: Fleet,
    transport: Transport,
    name: str,
    version: str,
    lock: Lock | None,
    prefer_offline: bool,
    timeout: float,
    releases: ReleaseFacts | None = None,
) -> facts.ReleaseRanges:
    """The release's ranges: from the lock when it has this release, else from the registry
    as the host sees it (from the npm cache first when `prefer_offline`).

    A locked release is also checked against the registry as the host sees it: npm verifies
    the tarball it downloads against the registry's `dist.integrity`, never against our lock,
    so the lock's integrity only protects the install if the registry serves that same value.
    (A rollback, `prefer_offline`, installs from the host's cache and skips the check.)"""
    locked = lock.package(name) if lock is not None else None
    fact = facts.release_ranges(fleet.openclaw.registry, name, version)
    if locked is not None and locked.version == version:
        if not prefer_offline:
            ask = releases or facts.gather
            served = ask(transport, fact, timeout=timeout).integrity
            hashes = {h.split("?", 1)[0] for h in (served or "").split()}
            if locked.integrity not in hashes:
                raise IntegrityMismatch(
                    transport.host,
                    f"{name}@{version}: the registry {fleet.openclaw.registry} serves "
                    f"dist.integrity {_short(served)}, openclaw.lock pins "
                    f"{_short(locked.integrity)}; npm would install the registry's tarball, so "
                    "refusing to install; nothing was changed",
                )
        return facts.ReleaseRanges(
            engines_node=locked.engines_node,
            peer_openclaw=locked.peer_openclaw,
            plugin_api=locked.plugin_api,
            min_host_version=locked.min_host_version,
            integrity=locked.integrity,
        )
    if not prefer_offline:
        return (releases or facts.gather)(transport, fact, timeout=timeout)
    try:
        offline = replace(fact, argv=(*fact.argv, "--prefer-offline"))
        return facts.gather(transport, offline, timeout=timeout)
    except (CommandFailed, CommandTimeout):
        # A rollback reinstalls versions this host ran before; a registry outage must not
        # block it (npm caches only the abbreviated metadata `npm view` does not read), so the
        # ranges stay unknown and npm's --engine-strict is the check.
        return facts.ReleaseRanges()


def _short(integrity: str | None) -> str:
    """An SRI hash for a message: algorithm and the first 16 characters of the digest."""
    if not integrity:
        return "(none)"
    algorithm, _, digest = integrity.partition("-")
    return f"{algorithm}-{digest[:16]}..." if digest else integrity[:24]


@dataclass(frozen=True)
class NpmInstaller:
    """`npm install -g` / `npm uninstall -g` under one prefix from the spec's registry."""

    fleet: Fleet
    transport: Transport
    prefix: str
    prefer_offline: bool

    def _common(self) -> list[str]:
        flags = ["--prefix", self.prefix, "--registry", self.fleet.openclaw.registry]
        flags += ["--no-audit", "--no-fund"]
        return flags + (["--prefer-offline"] if self.prefer_offline else [])

    def install(self, packages: Mapping[str, str]) -> None:
        if packages:
            specs = [f"{name}@{version}" for name, version in packages.items()]
            flags = ["--allow-scripts=openclaw", "--engine-strict"]  # see the module docstring
            self._run(["npm", "install", "-g", *self._common(), *flags, *specs])

    def uninstall(self, names: Sequence[str]) -> None:
        if names:
            self._run(["npm", "uninstall", "-g", *self._common(), *names])

    def _run(self, argv: list[str]) -> None:
        timeout = seconds(self.fleet.rollout.install_timeout)
        result = self.transport.run(argv, timeout=timeout, max_output=facts.REPORT_OUTPUT)
        if not result.ok:
            raise _failed(self.transport.host, result)


@dataclass(frozen=True)
class PluginInstaller:
    """Plugins the product's way, in every profile of the host: `openclaw plugins install
    npm:<name>@<version> --pin` (with `--force` where the profile tracks another version: the
    product refuses to replace a tracked install without it) and `plugins uninstall --force`.
    The product records the install, hot-loads it into a running gateway, and stamps the
    config with the core's version (which is why a later downgrade of the core needs its
    recovery point)."""

    fleet: Fleet
    host: Host
    transport: Transport
    prefer_offline: bool

    def install(
        self,
        packages: Mapping[str, str],
        listings: Mapping[str, Sequence[PluginState]],
        *,
        force: bool = False,
    ) -> None:
        """`force`: reinstall even what is tracked at the version (a restored state tracks
        its plugins, but archives omit their code)."""
        for profile in self.host.profiles:
            tracked = {p.name: p.version for p in listings.get(profile.key(), [])}
            for name, version in packages.items():
                if tracked.get(name) == version and not force:
                    continue
                argv = ["openclaw", "plugins", "install", f"npm:{name}@{version}", "--pin"]
                self._run(profile, argv + (["--force"] if name in tracked or force else []))

    def uninstall(
        self, names: Sequence[str], listings: Mapping[str, Sequence[PluginState]]
    ) -> None:
        for profile in self.host.profiles:
            ids = [p.id for p in listings.get(profile.key(), []) if p.name in names]
            if ids:
                self._run(profile, ["openclaw", "plugins", "uninstall", *ids, "--force"])

    def _run(self, profile: Profile, argv: list[str]) -> None:
        env = facts.profile_env(profile) | {"npm_config_registry": self.fleet.openclaw.registry}
        if self.prefer_offline:
            env["npm_config_prefer_offline"] = "true"
        timeout = seconds(self.fleet.rollout.install_timeout)
        result = self.transport.run(argv, timeout=timeout, env=env, max_output=facts.REPORT_OUTPUT)
        if not result.ok:
            raise _failed(self.transport.host, result)


def _install_core(
    fleet: Fleet,
    transport: Transport,
    npm: NpmInstaller,
    version: str,
    *,
    fresh: bool,
    managed: bool = False,
) -> None:
    """The core by the spec's method (`managed`: with `openclaw update`); `openclaw update`
    needs an openclaw, so a fresh host (or the npm method) installs with npm."""
    if fresh or (fleet.openclaw.install == "npm" and not managed):
        npm.install({CORE: version})
        return
    env = {"npm_config_registry": fleet.openclaw.registry}
    if npm.prefer_offline:
        env["npm_config_prefer_offline"] = "true"
    argv = ["openclaw", "update", "--tag", version, "--json", "--yes", "--no-restart"]
    timeout = seconds(fleet.rollout.install_timeout)
    result = transport.run(argv, timeout=timeout, env=env, max_output=facts.REPORT_OUTPUT)
    check_update(transport.host, result)


def check_update(host: str, result: CommandResult) -> None:
    """`openclaw update --json` reports `status` ok/skipped/error (and a reason)."""
    try:
        report = facts.json_object(host, result, max_bytes=facts.REPORT_OUTPUT)
    except FactParseError:
        raise _failed(host, result) from None
    if report.get("status") != "ok":
        failed = report.get("failedStep")
        words = failed.get("stderrTail") if isinstance(failed, dict) else None
        words = words.splitlines()[0] if isinstance(words, str) and words.strip() else None
        reason = (
            report.get("message") or words or report.get("reason") or facts.stderr_summary(result)
        )
        raise CommandFailed(
            host, f"`{describe(result.argv)}` ended with status {report.get('status')!r}: {reason}"
        )


def _failed(host: str, result: CommandResult) -> CommandFailed:
    return CommandFailed(
        host,
        f"`{describe(result.argv)}` failed (exit {result.exit_code}): "
        f"{facts.stderr_summary(result)}",
    )


# --- restart ------------------------------------------------------------------------------------


def launchd_label(profile: Profile) -> str:
    if profile.service:
        return profile.service
    return "ai.openclaw.gateway" if profile.name is None else f"ai.openclaw.{profile.name}"


def systemd_unit(profile: Profile) -> str:
    if profile.service:
        return profile.service
    suffix = "" if profile.name is None else f"-{profile.name}"
    return f"openclaw-gateway{suffix}.service"


def restart_command(
    fleet: Fleet, host: Host, profile: Profile, transport: Transport, *, stopped: bool = False
) -> tuple[list[str], dict[str, str]]:
    """argv and env that restart one profile's gateway through the host's service manager;
    `stopped`: the gateway was stopped with `stop_command` (launchd then loads it again)."""
    env = facts.profile_env(profile)
    if host.service_manager == "command":
        if not host.restart_command:
            raise ValueError(f"{host.name}: serviceManager is command but restartCommand is unset")
        return list(host.restart_command), env
    quick = seconds(fleet.ssh.command_timeout)
    uid = facts.gather(transport, facts.user_id(), timeout=quick)
    if host.service_manager == "launchd" and stopped:
        home = facts.resolve_home(transport, timeout=quick)
        plist = f"{home}/Library/LaunchAgents/{launchd_label(profile)}.plist"
        return ["launchctl", "bootstrap", f"gui/{uid}", plist], env
    if host.service_manager == "launchd":
        return ["launchctl", "kickstart", "-k", f"gui/{uid}/{launchd_label(profile)}"], env
    env["XDG_RUNTIME_DIR"] = f"/run/user/{uid}"  # `systemctl --user` over a non-login session
    return ["systemctl", "--user", "restart", systemd_unit(profile)], env


def stop_command(
    fleet: Fleet, host: Host, profile: Profile, transport: Transport
) -> tuple[list[str], dict[str, str]]:
    """argv and env that stop one profile's gateway and keep it stopped (launchd would start a
    killed KeepAlive job again, so the job is unloaded)."""
    env = facts.profile_env(profile)
    if host.service_manager == "command":
        if not host.stop_command:
            raise ValueError(f"{host.name}: serviceManager is command but stopCommand is unset")
        return list(host.stop_command), env
    uid = facts.gather(transport, facts.user_id(), timeout=seconds(fleet.ssh.command_timeout))
    if host.service_manager == "launchd":
        return ["launchctl", "bootout", f"gui/{uid}/{launchd_label(profile)}"], env
    env["XDG_RUNTIME_DIR"] = f"/run/user/{uid}"
    return ["systemctl", "--user", "stop", systemd_unit(profile)], env


def stop_host(
    fleet: Fleet, host: Host, transport: Transport, *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Stop every profile's gateway and wait until none answers on its port."""
    quick = seconds(fleet.ssh.command_timeout)
    for profile in host.profiles:
        argv, env = stop_command(fleet, host, profile, transport)
        result = transport.run(argv, timeout=quick, env=env, max_output=facts.SMALL_OUTPUT)
        if not result.ok and host.service_manager == "command":
            raise _failed(host.name, result)  # launchctl/systemctl fail when already stopped
        deadline = time.monotonic() + quick
        while facts.gather(transport, facts.probes(profile.port), timeout=quick).startupz.status:
            if time.monotonic() >= deadline:
                raise CommandFailed(
                    host.name,
                    f"profile {profile.key()}: `{describe(argv)}` succeeded but a gateway "
                    f"still answers on port {profile.port} after {quick:g}s",
                )
            sleep(RESTART_POLL_S)


@dataclass(frozen=True)
class Restarted:
    """A restart that took: the new gateway answered /startupz."""

    profile: str
    status: int | None
    uptime_ms: int
    running_version: str | None
    seconds: float


def restart(
    fleet: Fleet,
    host: Host,
    profile: Profile,
    transport: Transport,
    *,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stopped: bool = False,
) -> Restarted:
    """Restart one profile's gateway and wait until a NEW process answers /startupz."""
    quick = seconds(fleet.ssh.command_timeout)
    budget = timeout if timeout is not None else seconds(fleet.rollout.probe_timeout)
    argv, env = restart_command(fleet, host, profile, transport, stopped=stopped)
    started = time.monotonic()
    result = transport.run(argv, timeout=quick, env=env, max_output=facts.SMALL_OUTPUT)
    if not result.ok and host.service_manager == "launchd" and not stopped:
        # kickstart needs a loaded job; one an install stopped (bootout) is loaded again
        argv, env = restart_command(fleet, host, profile, transport, stopped=True)
        result = transport.run(argv, timeout=quick, env=env, max_output=facts.SMALL_OUTPUT)
    if not result.ok:
        raise _failed(host.name, result)
    while True:
        probes = facts.gather(transport, facts.probes(profile.port), timeout=quick)
        elapsed = time.monotonic() - started
        uptime = probes.uptime_ms
        if probes.startupz.status is not None and uptime is not None and uptime <= elapsed * 1000:
            return Restarted(
                profile.key(), probes.startupz.status, uptime, probes.running_version, elapsed
            )
        if elapsed >= budget:
            raise RestartNotObserved(
                host.name,
                f"profile {profile.key()}: `{describe(argv)}` succeeded but no new gateway "
                f"answered on port {profile.port} within {budget:g}s ({probes.summary()})",
            )
        sleep(RESTART_POLL_S)


def restart_host(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    *,
    timeout: float | None = None,
    stopped: bool = False,
) -> list[Restarted]:
    """Restart every profile of the host, one after the other (`stopped`: by `stop_host`)."""
    return [
        restart(fleet, host, p, transport, timeout=timeout, stopped=stopped) for p in host.profiles
    ]


# --- wait until ready ---------------------------------------------------------------------------


def wait_ready(
    fleet: Fleet,
    host: Host,
    profile: Profile,
    transport: Transport,
    *,
    timeout: float,
    expected_version: str | None = None,
    interval: float = READY_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> facts.Probes:
    """Poll /readyz until 200 (GatewayNotReady after `timeout`), then check that the running
    version (/startupz) equals `expected_version`, by default the installed core's."""
    quick = seconds(fleet.ssh.command_timeout)
    deadline = time.monotonic() + timeout
    probes = facts.gather(transport, facts.probes(profile.port), timeout=quick)
    while not probes.readyz.ok:
        if time.monotonic() >= deadline:
            raise GatewayNotReady(
                host.name,
                f"profile {profile.key()} (port {profile.port}) not ready after {timeout:g}s: "
                f"{_why_not_ready(probes)}",
            )
        sleep(interval)
        probes = facts.gather(transport, facts.probes(profile.port), timeout=quick)
    expected = expected_version or _installed_core(fleet, host, transport, quick)
    if probes.running_version != expected:
        raise RunningVersionMismatch(
            host.name,
            f"profile {profile.key()} is ready but runs openclaw {probes.running_version}, "
            f"installed is {expected} (restart it)",
        )
    return probes


def _installed_core(fleet: Fleet, host: Host, transport: Transport, timeout: float) -> str | None:
    prefix = facts.resolve_prefix(transport, host, timeout=timeout)
    return facts.installed_core_version(transport, prefix)


def _why_not_ready(probes: facts.Probes) -> str:
    body = probes.readyz.body or {}
    failing = body.get("failing")
    detail = f" failing {failing}" if failing else ""
    return f"/readyz {probes.readyz.status or probes.readyz.error}{detail}"
