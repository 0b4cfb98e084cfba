"""The gateway services on a host: stop and restart each profile's gateway through the host's
service manager (launchd, systemd --user, or the spec's own commands), and wait until it is
ready.

A restart watches /startupz until a NEW gateway process answers (its uptime is shorter than the
time since we asked for the restart). Becoming ready is a separate wait (`wait_ready`), because
a restart that took is not yet a healthy gateway, and the caller owns that budget (the spec's
probe timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.desired.spec import Fleet, Host, Profile, seconds
from reconciler.errors import CommandFailed, HostError, PermanentError
from reconciler.hosts import facts, productfacts
from reconciler.hosts.installers import command_failed
from reconciler.hosts.transport import Transport, describe

RESTART_POLL_S = 0.1
READY_POLL_S = 0.2
"""Pause between two looks at readiness: `wait_ready`'s probes, and the executor's waits
(each of which polls on the host itself every 20 ms)."""


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
            raise command_failed(host.name, result)  # launchctl/systemctl fail when already stopped
        _, stopped = probe_until(
            transport, profile, lambda p: not p.startupz.status,
            timeout=quick, quick=quick, interval=RESTART_POLL_S, sleep=sleep,
        )  # fmt: skip
        if not stopped:
            raise CommandFailed(
                host.name,
                f"profile {profile.key()}: `{describe(argv)}` succeeded but a gateway still "
                f"answers on port {profile.port} after {quick:g}s",
            )


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
        raise command_failed(host.name, result)
    while True:
        probes = facts.gather(transport, productfacts.probes(profile.port), timeout=quick)
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
) -> productfacts.Probes:
    """Poll /readyz until 200 (GatewayNotReady after `timeout`), then check that the running
    version (/startupz) equals `expected_version`, by default the installed core's."""
    quick = seconds(fleet.ssh.command_timeout)

    probes, ready = probe_until(
        transport, profile, lambda p: p.readyz.ok,
        timeout=timeout, quick=quick, interval=interval, sleep=sleep,
    )  # fmt: skip
    if not ready:
        raise GatewayNotReady(
            host.name,
            f"profile {profile.key()} (port {profile.port}) not ready after {timeout:g}s: "
            f"{_why_not_ready(probes)}",
        )
    expected = expected_version or _installed_core(fleet, host, transport, quick)
    if probes.running_version != expected:
        raise RunningVersionMismatch(
            host.name,
            f"profile {profile.key()} is ready but runs openclaw {probes.running_version}, "
            f"installed is {expected} (restart it)",
        )
    return probes


def probe_until(
    transport: Transport,
    profile: Profile,
    done: Callable[[productfacts.Probes], bool],
    *,
    timeout: float,
    quick: float,
    interval: float,
    sleep: Callable[[float], None],
) -> tuple[productfacts.Probes, bool]:
    """Probe the profile's gateway until `done` says so, for at most `timeout` seconds: the
    last probes, and whether `done` said so in time."""
    deadline = time.monotonic() + timeout
    probes = facts.gather(transport, productfacts.probes(profile.port), timeout=quick)
    while not done(probes):
        if time.monotonic() >= deadline:
            return probes, False
        sleep(interval)
        probes = facts.gather(transport, productfacts.probes(profile.port), timeout=quick)
    return probes, True


def _installed_core(fleet: Fleet, host: Host, transport: Transport, timeout: float) -> str | None:
    prefix = facts.resolve_prefix(transport, host, timeout=timeout)
    return facts.installed_core_version(transport, prefix)


def _why_not_ready(probes: productfacts.Probes) -> str:
    body = probes.readyz.body or {}
    failing = body.get("failing")
    detail = f" failing {failing}" if failing else ""
    return f"/readyz {probes.readyz.status or probes.readyz.error}{detail}"
