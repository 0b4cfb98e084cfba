"""Operations: the only code that changes a host, each verifying its own effect.

An operation acts, then re-reads facts to prove the act took: an install re-reads the npm tree
and fails unless it equals the wanted pins exactly (no second copy of openclaw, no npm problem,
no version off by one); a restart waits until a NEW gateway process answers /startupz.

This module is the install (`install`, `verify_installed`) and the one place callers import
every operation from (the names below are re-exported); each family lives in its own module:

* `reconciler.hosts.installpreflight`: refusing an install before touching anything;
* `reconciler.hosts.installers`: the npm and `openclaw plugins` commands that install and remove;
* `reconciler.hosts.services`: stopping and restarting gateways per service manager, waiting
  for ready.

Why the install looks the way it does:

* Core first, then all plugins in ONE npm call. The plugins' peer ranges follow the core, so
  installing the core first means each plugin lands next to the core it will run with; one call
  for the plugins makes them one transaction for npm (one resolve, one reify) and one round trip.
  Only packages whose installed version differs are touched, so a re-run is a no-op.
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
from collections.abc import Mapping, Sequence

from reconciler.desired.lock import Lock
from reconciler.desired.spec import CORE, NPM_NAME, Fleet, Host, Pin, seconds
from reconciler.desired.versions import EXACT_SEMVER
from reconciler.errors import HostError, PermanentError
from reconciler.hosts import facts, productfacts
from reconciler.hosts.compare import differences
from reconciler.hosts.installers import NpmInstaller, PluginInstaller, check_update, install_core
from reconciler.hosts.installpreflight import (
    InsufficientDisk,
    IntegrityMismatch,
    NodeEngineUnsupported,
    PluginIncompatible,
    ReleaseFacts,
    install_preflight,
)
from reconciler.hosts.services import (
    READY_POLL_S,
    RESTART_POLL_S,
    GatewayNotReady,
    Restarted,
    RestartNotObserved,
    RunningVersionMismatch,
    launchd_label,
    restart,
    restart_command,
    restart_host,
    stop_command,
    stop_host,
    systemd_unit,
    wait_ready,
)
from reconciler.hosts.transport import Transport
from reconciler.record.documents import Installed, PluginState

__all__ = [
    "READY_POLL_S",
    "RESTART_POLL_S",
    "GatewayNotReady",
    "InstallVerificationFailed",
    "InsufficientDisk",
    "IntegrityMismatch",
    "NodeEngineUnsupported",
    "NpmInstaller",
    "PluginIncompatible",
    "PluginInstaller",
    "ReleaseFacts",
    "RestartNotObserved",
    "Restarted",
    "RunningVersionMismatch",
    "check_update",
    "install",
    "install_preflight",
    "launchd_label",
    "restart",
    "restart_command",
    "restart_host",
    "stop_command",
    "stop_host",
    "systemd_unit",
    "verify_installed",
    "wait_ready",
    "wanted_versions",
]

_NPM_NAME = re.compile(NPM_NAME)
_EXACT = re.compile(EXACT_SEMVER)


class InstallVerificationFailed(HostError, PermanentError):
    """After installing, the npm tree is not exactly the wanted pins."""


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
    before = productfacts.product_view(seen.installed, listings)
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
            install_core(fleet, transport, npm, todo[CORE], fresh=fresh, managed=managed)
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
        listed = facts.gather(
            transport, productfacts.plugins(facts.profile_env(profile)), timeout=timeout
        )
        lists[profile.key()] = productfacts.plugin_states(listed)
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
    return _verified(transport.host, productfacts.product_view(tree, listings), wanted)


def _verified(host: str, tree: Installed, wanted: Mapping[str, str]) -> Installed:
    wrong = list(differences(tree, wanted))
    if wrong:
        message = "installed tree differs from the pins: " + "; ".join(wrong)
        raise InstallVerificationFailed(host, message)
    return tree


def _unpinned(view: Installed, wanted: Mapping[str, str]) -> list[str]:
    """Plugins the product runs that no pin names: removed, so the install equals the pins."""
    return [n for n in sorted(view.plugins) if n.startswith("@openclaw/") and n not in wanted]
