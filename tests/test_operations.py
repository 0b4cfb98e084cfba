"""Operations against real sshd hosts with real npm installs from the test verdaccio.

Every test drives the reconciler exactly as production does: a spec `Host`, a transport from
`connect.transport_for`, npm and the stand-in `openclaw` running on the far side of a real SSH
connection. Nothing is mocked; faults are switched in the host's HOME, never in the code.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.desired.resolve import resolve_lock
from reconciler.desired.spec import Fleet, Host
from reconciler.errors import (
    CommandTimeout,
    HostUnreachable,
    MissingBinary,
    PermanentError,
    TemporaryError,
)
from reconciler.hosts import facts, operations, productfacts
from reconciler.hosts.connect import transport_for
from reconciler.hosts.operations import (
    GatewayNotReady,
    InstallVerificationFailed,
    NodeEngineUnsupported,
    PluginIncompatible,
    RestartNotObserved,
    RunningVersionMismatch,
)
from reconciler.hosts.readiness import observe_all
from reconciler.hosts.transport import Transport
from reconciler.record.documents import Installed
from reconciler.sandbox.sshfleet import FleetHost
from reconciler.sandbox.verdaccio import LocalRegistry
from tests.nodes import MakeNode, Node, fleet_spec, make_node

__all__ = ["make_node"]  # the fixture, imported for pytest

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DISCORD = "@openclaw/discord"
MATRIX = "@openclaw/matrix"
MSTEAMS = "@openclaw/msteams"
NESTED = "node_modules/@openclaw/msteams/node_modules/openclaw@2026.9.6"


def setup(node: Node, **spec: object) -> tuple[Fleet, Host, Transport]:
    fleet = fleet_spec(node.registry.url, [node.host()], **spec)  # type: ignore[arg-type]
    return fleet, fleet.host(node.name), node.transport(fleet)


def tree(node: Node, transport: Transport) -> Installed:
    return facts.installed(transport, str(node.prefix), timeout=30)


# --- install ------------------------------------------------------------------------------------


def test_install_core_then_plugins_upgrade_and_prune(make_node: MakeNode) -> None:
    node = make_node("alpha")
    fleet, host, transport = setup(node, version="2026.4.2", plugins={DISCORD: "2026.4.2"})

    got = operations.install(fleet, host, transport, fleet.packages())
    assert got == Installed(core="2026.4.2", plugins={DISCORD: "2026.4.2"})
    assert facts.gather(transport, facts.openclaw_version(), timeout=10) == "2026.4.2"

    upgrade = {"openclaw": "2026.4.3", DISCORD: "2026.4.3", MATRIX: "2026.4.3"}
    got = operations.install(fleet, host, transport, upgrade)
    assert got == Installed(core="2026.4.3", plugins={DISCORD: "2026.4.3", MATRIX: "2026.4.3"})
    assert facts.installed_core_version(transport, str(node.prefix)) == "2026.4.3"

    # A plugin dropped from the pins is removed; nothing else is touched; a re-run is a no-op.
    got = operations.install(fleet, host, transport, {"openclaw": "2026.4.3", MATRIX: "2026.4.3"})
    assert got == Installed(core="2026.4.3", plugins={MATRIX: "2026.4.3"})
    started = time.monotonic()
    again = operations.install(fleet, host, transport, {"openclaw": "2026.4.3", MATRIX: "2026.4.3"})
    assert again == got
    assert time.monotonic() - started < 5


def test_plugins_go_in_the_products_way_and_npm_copies_are_migrated(make_node: MakeNode) -> None:
    """A host set up by the runbook (`npm i -g` plugins beside the core, which the product
    never loads) ends with the plugin tracked and loaded by the product, the copy removed."""
    node = make_node("migrate")
    fleet, host, transport = setup(node, version="2026.4.3", plugins={DISCORD: "2026.4.3"})
    argv = ["npm", "i", "-g", "--prefix", str(node.prefix), "--registry", node.registry.url]
    done = transport.run([*argv, "openclaw@2026.4.3", f"{DISCORD}@2026.4.3"], timeout=120)
    assert done.ok, done.error_text()
    before = productfacts.installed_view(transport, host, str(node.prefix), timeout=30)
    assert (before.plugins, before.strays) == ({}, [f"{DISCORD}@2026.4.3"])

    removed: list[str] = []
    got = operations.install(fleet, host, transport, fleet.packages(), removed=removed)

    assert removed == [f"{DISCORD}@2026.4.3"]
    assert got == Installed(core="2026.4.3", plugins={DISCORD: "2026.4.3"})
    listed = {p.id: p for p in facts.gather(transport, productfacts.plugins(), timeout=30)}
    discord = listed["discord"]
    assert (discord.origin, discord.status, discord.enabled) == ("global", "loaded", True)
    assert discord.install_spec == f"{DISCORD}@2026.4.3"
    assert DISCORD not in tree(node, transport).plugins, "the npm copy is gone"


def test_a_plugin_the_product_does_not_run_fails_verification(make_node: MakeNode) -> None:
    node = make_node("disabled")
    fleet, host, transport = setup(node, version="2026.4.3", plugins={DISCORD: "2026.4.3"})
    operations.install(fleet, host, transport, fleet.packages())
    assert transport.run(["openclaw", "plugins", "disable", "discord"], timeout=30).ok

    with pytest.raises(
        InstallVerificationFailed, match=f"plugin {DISCORD} is not running: disabled"
    ):
        operations.verify_installed(transport, host, str(node.prefix), fleet.packages(), timeout=30)


def test_update_method_uses_openclaw_update_after_an_npm_bootstrap(make_node: MakeNode) -> None:
    node = make_node("upd")
    fleet, host, transport = setup(node, version="2026.4.2", install="openclaw-update")
    operations.install(fleet, host, transport, {"openclaw": "2026.4.2"})  # fresh: npm

    got = operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    assert got.core == "2026.4.3"
    status = transport.run(["openclaw", "update", "status", "--json"], timeout=30)
    last = json.loads(status.stdout)["lastRun"]
    assert (last["status"], last["before"]["version"], last["after"]["version"]) == (
        "ok",
        "2026.4.2",
        "2026.4.3",
    )


def test_pins_are_validated_before_reaching_a_command(make_node: MakeNode) -> None:
    node = make_node("val")
    fleet, host, transport = setup(node)
    for bad in ({"openclaw": "latest"}, {"openclaw": "2026.4.3; reboot"}, {"$(id)": "1.0.0"}):
        with pytest.raises(ValueError, match="not an exact npm pin"):
            operations.install(fleet, host, transport, bad)


def test_a_plugin_whose_peer_range_excludes_the_core(make_node: MakeNode) -> None:
    node = make_node("peer")
    fleet, host, transport = setup(node)
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})

    # The operation refuses before touching anything...
    with pytest.raises(PluginIncompatible, match=r"peerDependencies\.openclaw '>=2026\.9\.6'"):
        operations.install(fleet, host, transport, {"openclaw": "2026.4.3", MSTEAMS: "2026.9.6"})
    assert tree(node, transport) == Installed(core="2026.4.3")

    # ...and a host that got there by hand (plain `npm i -g`) shows the second copy.
    argv = ["npm", "i", "-g", "--prefix", str(node.prefix), "--registry", node.registry.url]
    done = transport.run([*argv, "openclaw@2026.4.3", f"{MSTEAMS}@2026.9.6"], timeout=120)
    assert done.ok, done.error_text()
    have = tree(node, transport)
    assert have.duplicates == [NESTED]
    with pytest.raises(InstallVerificationFailed, match="second copy of openclaw at " + NESTED):
        operations.verify_installed(
            transport, host, str(node.prefix), {"openclaw": "2026.4.3"}, timeout=30
        )


def test_node_engines_refuse_2026_9_6_on_node_20(make_node: MakeNode) -> None:
    node = make_node("eng")
    fleet, host, transport = setup(node)
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    node_version = facts.gather(transport, facts.node_version(), timeout=10)
    assert node_version.startswith("20.")

    # From the registry, as the host sees it (no lock)...
    refused = r"node 20\.\S+ does not satisfy engines\.node '>=24\.16 <25 \|\| >=26\.1'"
    with pytest.raises(NodeEngineUnsupported, match=refused):
        operations.install(fleet, host, transport, {"openclaw": "2026.9.6"})
    # ...and from the lock, without asking the registry.
    target = fleet_spec(node.registry.url, [node.host()], version="2026.9.6")
    lock = resolve_lock(target)
    with pytest.raises(NodeEngineUnsupported, match="nothing was changed"):
        operations.install(target, host, transport, target.packages(), lock=lock)
    assert tree(node, transport) == Installed(core="2026.4.3")


def test_rollback_prefers_the_npm_cache_when_the_registry_hangs(
    make_node: MakeNode, registry: LocalRegistry
) -> None:
    node = make_node("offline")
    fleet, host, transport = setup(node, version="2026.4.2")
    operations.install(fleet, host, transport, {"openclaw": "2026.4.2"})
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    impatient = fleet.model_copy(
        update={"ssh": fleet.ssh.model_copy(update={"command_timeout": "2s"})}
    )
    # The session's registry accepts connections but never answers (npm would wait minutes);
    # tests run one at a time, and it is resumed whatever happens.
    os.killpg(registry.pid, signal.SIGSTOP)
    try:
        with pytest.raises(CommandTimeout):
            operations.install(impatient, host, transport, {"openclaw": "2026.4.2"})
        # Same 2 s per command: any command that waited on the registry would time out.
        got = operations.install(
            impatient, host, transport, {"openclaw": "2026.4.2"}, prefer_offline=True
        )
        assert got.core == "2026.4.2"
    finally:
        os.killpg(registry.pid, signal.SIGCONT)


# --- restart and readiness waits ----------------------------------------------------------------


def test_restart_through_the_command_service_manager_and_wait_ready(make_node: MakeNode) -> None:
    node = make_node("rst")
    fleet, host, transport = setup(node)
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    profile = host.profiles[0]

    first = operations.restart(fleet, host, profile, transport)
    probes = operations.wait_ready(fleet, host, profile, transport, timeout=15)
    assert (probes.readyz.status, probes.running_version) == (200, "2026.4.3")

    # Installed moves on, the running gateway does not until it is restarted.
    operations.install(fleet, host, transport, {"openclaw": "2026.4.4"})
    with pytest.raises(
        RunningVersionMismatch, match=r"runs openclaw 2026\.4\.3, installed is 2026\.4\.4"
    ):
        operations.wait_ready(fleet, host, profile, transport, timeout=5)
    pid_before = node.gateway_pids()
    second = operations.restart(fleet, host, profile, transport)
    assert second.uptime_ms < first.uptime_ms + second.seconds * 1000
    assert node.gateway_pids() != pid_before
    probes = operations.wait_ready(fleet, host, profile, transport, timeout=15)
    assert probes.running_version == "2026.4.4"


def test_a_gateway_that_never_gets_ready_times_out_typed(make_node: MakeNode) -> None:
    node = make_node("never")
    fleet, host, transport = setup(node)
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    node.set_faults(never_ready=True)
    profile = host.profiles[0]
    operations.restart(fleet, host, profile, transport)  # the new process answers 503 starting

    started = time.monotonic()
    with pytest.raises(GatewayNotReady, match=r"not ready after 1s: /readyz 503.*never_ready"):
        operations.wait_ready(fleet, host, profile, transport, timeout=1)
    assert time.monotonic() - started < 5


def test_a_gateway_that_dies_at_start_is_red_not_retried(make_node: MakeNode) -> None:
    """As the real product does: the service's restart exits 0, the gateway exits at start
    and nothing answers. That is a permanent error (the engine restores the host at once),
    never a temporary one retried with the host drained and down."""
    node = make_node("crash")
    fleet, host, transport = setup(node)
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    profile = host.profiles[0]
    node.set_faults(crash_at_start=True)
    with pytest.raises(RestartNotObserved, match="no new gateway answered") as caught:
        operations.restart(fleet, host, profile, transport, timeout=2)
    assert isinstance(caught.value, PermanentError)
    assert not isinstance(caught.value, TemporaryError)


def test_restart_commands_per_service_manager(make_node: MakeNode) -> None:
    node = make_node("svc", profiles=[None, "work"])
    fleet, host, transport = setup(node)
    default, work = host.profiles
    launchd = host.model_copy(update={"service_manager": "launchd"})
    systemd = host.model_copy(update={"service_manager": "systemd"})
    uid = facts.gather(transport, facts.user_id(), timeout=10)
    assert operations.restart_command(fleet, launchd, work, transport)[0] == [
        "launchctl", "kickstart", "-k", f"gui/{uid}/ai.openclaw.work",
    ]  # fmt: skip
    argv, env = operations.restart_command(fleet, systemd, default, transport)
    assert argv == ["systemctl", "--user", "restart", "openclaw-gateway.service"]
    assert env["XDG_RUNTIME_DIR"] == f"/run/user/{uid}"
    argv, env = operations.restart_command(fleet, host, work, transport)
    assert (argv, env["OPENCLAW_PROFILE"]) == (["openclaw", "gateway", "restart"], "work")
    assert env["OPENCLAW_GATEWAY_PORT"] == str(node.ports[1])
    # Stopped to swap a restored state in: launchd unloads the job (KeepAlive would start a
    # killed one again) and loads it back from its plist.
    assert operations.stop_command(fleet, launchd, work, transport)[0] == [
        "launchctl", "bootout", f"gui/{uid}/ai.openclaw.work",
    ]  # fmt: skip
    plist = f"{node.home}/Library/LaunchAgents/ai.openclaw.work.plist"
    assert operations.restart_command(fleet, launchd, work, transport, stopped=True)[0] == [
        "launchctl", "bootstrap", f"gui/{uid}", plist,
    ]  # fmt: skip
    argv, env = operations.stop_command(fleet, systemd, work, transport)
    assert argv == ["systemctl", "--user", "stop", "openclaw-gateway-work.service"]
    stop = operations.stop_command(fleet, host, work, transport)[0]
    assert stop == ["openclaw", "gateway", "stop"]


# --- typed failures ----------------------------------------------------------------------------


def test_missing_binary_on_an_empty_prefix(make_node: MakeNode, fresh_ssh_host: FleetHost) -> None:
    node = make_node("empty", sshd=fresh_ssh_host)
    fleet, host, transport = setup(node)
    with pytest.raises(MissingBinary, match="'openclaw' not found"):
        facts.gather(transport, facts.openclaw_version(), timeout=10)
    with pytest.raises(MissingBinary):
        operations.restart(fleet, host, host.profiles[0], transport)
    assert tree(node, transport) == Installed(core=None)


def test_a_host_that_is_down_is_unreachable(make_node: MakeNode, fresh_ssh_host: FleetHost) -> None:
    node = make_node("down", sshd=fresh_ssh_host)
    fleet, host, transport = setup(node)
    fresh_ssh_host.fleet.stop(fresh_ssh_host)
    with pytest.raises(HostUnreachable, match="connection refused"):
        operations.install(fleet, host, transport, {"openclaw": "2026.4.3"})
    outcome = observe_all(
        fleet, {host.name: transport}, lock=None, spec_commit=None, lb_weights={}, now=NOW
    )
    assert isinstance(outcome[host.name], HostUnreachable)


# --- from the spec to a transport ---------------------------------------------------------------

ENV_SCRIPT = 'printf "%s\\n%s\\n" "$HOME" "$PATH"'


def test_transports_from_the_spec(make_node: MakeNode, tmp_path: Path) -> None:
    node = make_node("conn")
    local = node.host(
        transport="local", home=str(tmp_path / "h"), path=["/opt/tools/bin"], npmPrefix="/srv/p"
    )
    remote = node.host(path=["~/tools/bin"])
    fleet = fleet_spec(node.registry.url, [local.model_copy(update={"name": "loc"}), remote])

    loc = transport_for(fleet, fleet.host("loc"), known_hosts_path=tmp_path / "none")
    home, path = loc.run(["sh", "-c", ENV_SCRIPT], timeout=10).text().splitlines()
    assert home == str(tmp_path / "h")
    assert path.split(":")[:2] == ["/opt/tools/bin", "/srv/p/bin"]

    ssh = node.transport(fleet)  # `~/tools/bin` is resolved against the host's HOME once
    home, path = ssh.run(["sh", "-c", ENV_SCRIPT], timeout=10).text().splitlines()
    assert home == str(node.home)
    assert path.split(":")[:2] == [f"{node.home}/tools/bin", f"{node.prefix}/bin"]

    keyless = fleet.model_copy(
        update={"ssh": fleet.ssh.model_copy(update={"key_env": "RECONCILER_TEST_NO_SUCH_KEY"})}
    )
    with pytest.raises(ValueError, match="RECONCILER_TEST_NO_SUCH_KEY"):
        transport_for(keyless, fleet.host("conn"), known_hosts_path=tmp_path / "kh")


def test_the_core_goes_in_before_the_plugins(make_node: MakeNode) -> None:
    """Each plugin install is a config write stamped by the core that ran it: a stamp of the
    new core proves the plugins went in after it (before it, the old core would have)."""
    node = make_node("order")
    fleet, host, transport = setup(node)
    operations.install(fleet, host, transport, {"openclaw": "2026.4.2", DISCORD: "2026.4.2"})
    operations.install(fleet, host, transport, {"openclaw": "2026.4.3", DISCORD: "2026.4.3"})

    config = json.loads((node.home / ".openclaw" / "openclaw.json").read_text())
    assert config["meta"]["lastTouchedVersion"] == "2026.4.3"
    listed = facts.gather(transport, productfacts.plugins(), timeout=30)
    assert {p.npm_name: p.version for p in listed if p.origin != "bundled"} == {DISCORD: "2026.4.3"}
