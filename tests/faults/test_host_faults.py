"""Faults of the hosts, and of the reconciler process itself, on real sshd hosts.

One 2-host World for the module; each rollout moves the fleet to the other release.

- SSH identity problems (bad input): a host known_hosts does not pin (the spec is invalid,
  and the run says why), a pinned key of another type, a changed host key, a wrong user key:
  each a clear error naming the host, nothing changed on any host or weight;
- a host's sshd stopped, or frozen (SIGSTOP), at a phase boundary (before install, before
  verify): a run retries, then gives up with an error naming the host, the drained host is on
  record; once the host is back, a new run finishes the rollout;
- SIGTERM while a step runs (an install held in its postinstall until the signal): the run
  exits 143 and kills the install on the host (nothing goes on alone), the host stays drained
  with nothing recorded as installed, and the next run repeats the step safely;
- a host that reboots mid-install (its sshd and every session stopped, its gateway killed,
  then sshd started again): the running reconciler retries and finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.faults import versioned
from reconciler.sandbox.sshfleet import generate_key
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import PLUGINS, WorldHost
from tests.faults.conftest import (
    SHORT_BUDGET,
    Harness,
    harness,
    host_runs,
    installed,
    other,
    wait_until,
)


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[Harness]:
    with harness(tmp_path_factory.mktemp("host-faults"), registry) as h:
        yield h


def current(h: Harness) -> str:
    versions = set(h.hosts_known("2026.4.2", "2026.4.3", "2026.4.4").values())
    assert len(versions) == 1, versions
    return versions.pop()


def untouched(h: Harness, version: str, history: int) -> None:
    """Nothing changed: every host on `version` at its weight, no weight ever written."""
    world = h.world
    assert h.hosts_known(version) == {x.name: version for x in world.hosts}
    assert world.weights() == {x.server: x.weight for x in world.hosts}
    assert len(world.weight_history()) == history


# --- SSH identity: bad input that must change nothing ------------------------------------------


def _changed_host_key(h: Harness, tmp: Path) -> dict[str, bytes]:
    assert h.world.ssh is not None
    stranger = generate_key(tmp / "stranger", comment="stranger")
    kind, blob = stranger.with_name("stranger.pub").read_text().split()[:2]
    text = h.world.ssh.known_hosts_text(keys={"mac-1": f"{kind} {blob}"})
    return {"known_hosts": text.encode()}


def _unknown_host_key(h: Harness, tmp: Path) -> dict[str, bytes]:
    """known_hosts does not pin mac-1 at all."""
    assert h.world.ssh is not None
    return {"known_hosts": h.world.ssh.known_hosts_text(exclude=["mac-1"]).encode()}


def _other_key_type(h: Harness, tmp: Path) -> dict[str, bytes]:
    """known_hosts pins mac-1 with an ECDSA key; the host offers ed25519."""
    assert h.world.ssh is not None
    key = tmp / "ecdsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    kind, blob = key.with_name("ecdsa.pub").read_text().split()[:2]
    text = h.world.ssh.known_hosts_text(keys={"mac-1": f"{kind} {blob}"})
    return {"known_hosts": text.encode()}


def _wrong_user_key(h: Harness, tmp: Path) -> dict[str, bytes]:
    assert h.world.ssh is not None
    wrong = generate_key(tmp / "wrong_ed25519", comment="not-authorized")
    text = h.spec_files(other(current(h)))["fleet.yaml"].decode()
    text = text.replace(f"keyFile: {h.world.ssh.client_key}", f"keyFile: {wrong}")
    return {"fleet.yaml": text.encode()}


SpecChange = Callable[[Harness, Path], dict[str, bytes]]
# case -> (the spec change, exit code, what the error says). An unpinned host never reaches
# SSH: the spec is invalid (exit 2, recorded with the problem); the others fail on connect.
SSH_CASES: dict[str, tuple[SpecChange, int, str]] = {
    "unknown host key": (_unknown_host_key, 2, "no key for [127.0.0.1]:"),  # an invalid spec
    "host key of another type": (_other_key_type, 1, "error: mac-1: host key CHANGED for"),
    "changed host key": (_changed_host_key, 1, "error: mac-1: host key CHANGED for 127.0.0.1"),
    "wrong user key": (_wrong_user_key, 1, "refused our credentials (key "),
}


@pytest.mark.parametrize("case", list(SSH_CASES))
def test_ssh_identity_problem_is_a_clear_error_and_changes_nothing(
    h: Harness, case: str, tmp_path: Path
) -> None:
    make, code, expected = SSH_CASES[case]
    before = current(h)
    history = len(h.world.weight_history())
    bad = make(h, tmp_path)
    commit = h.bump(other(before), message=f"openclaw {other(before)} ({case})", **bad)
    done = h.reconcile()
    assert done.returncode == code, done.stderr
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if case == "unknown host key":
        invalid = h.rollout()["invalid"]
        assert invalid["commit"] == commit
        assert "no key for [127.0.0.1]:" in invalid["problems"][0], invalid
    if code == 1:
        assert "error: mac-1: " in done.stderr, done.stderr
    untouched(h, before, history)
    h.status_consistent()
    h.no_secrets()


def test_invalid_spec_says_why_on_stderr(h: Harness) -> None:
    assert h.world.ssh is not None
    before = current(h)
    unpinned = h.world.ssh.known_hosts_text(exclude=["mac-1"]).encode()
    h.bump(other(before), message="unpinned mac-1", known_hosts=unpinned)
    done = h.reconcile()
    assert done.returncode in (2, 3)  # 3 while an earlier rollout is still in progress
    untouched(h, before, len(h.world.weight_history()))
    assert "no key for [127.0.0.1]:" in done.stderr, done.stderr


# --- a host away at a phase boundary -------------------------------------------------------------

Fault = tuple[str, str]  # (how: "stopped" | "frozen", before which step: "install" | "verify")
ROLLOUTS: list[tuple[Fault, Fault]] = [
    (("stopped", "install"), ("frozen", "verify")),
    (("frozen", "install"), ("stopped", "verify")),
]
KILL_BEFORE = {"install": "preflight:recorded", "verify": "restart:recorded"}
AWAY_ERRORS = {
    "stopped": "connection refused by 127.0.0.1",
    "frozen": "failed within 3s",
}


def take_away(h: Harness, host: WorldHost, how: str) -> Callable[[], None]:
    """Stop or freeze the host's sshd (and its sessions); returns how to bring it back."""
    ssh = h.world.ssh
    assert ssh is not None
    fleet_host = ssh[host.name]
    if how == "stopped":
        ssh.stop(fleet_host)
        return lambda: ssh.start(fleet_host)
    ssh.freeze(fleet_host)
    return lambda: ssh.thaw(fleet_host)


@pytest.mark.parametrize(
    "faults",
    ROLLOUTS,
    ids=[f"mac-1 {a[0]} before {a[1]}, mac-2 {b[0]} before {b[1]}" for a, b in ROLLOUTS],
)
def test_host_away_at_a_phase_then_back(h: Harness, faults: tuple[Fault, Fault]) -> None:
    world = h.world
    before = current(h)
    target = other(before)
    bump = h.bump(target)
    for host, (how, phase) in zip(world.hosts, faults, strict=True):
        point = f"{host.name}/{KILL_BEFORE[phase]}"
        killed = h.reconcile(env={"RECONCILER_FAILPOINTS": point})
        assert killed.returncode == -9, f"{point} not reached:\n{killed.stderr}"
        back = take_away(h, host, how)
        try:
            away = h.reconcile(*SHORT_BUDGET)
        finally:
            back()
        assert away.returncode == 1, away.stderr
        error = away.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: {host.name}: "), away.stderr
        assert AWAY_ERRORS[how] in error, error
        assert away.stderr.count("retrying in") == 2, away.stderr
        # The host away is drained, on record, and on one known version (install not begun,
        # or finished); the other host is where the order says.
        h.weights_safe()
        h.hosts_known(before, target)
        h.status_consistent()
        assert world.weights()[host.server] == 0
    done = h.reconcile()
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)


# --- the reconciler stopped mid-step; a host rebooted mid-install ---------------------------------


def install_processes(host: WorldHost) -> list[str]:
    """Every process of the host (its HOME) working on an install: npm itself (whatever it
    renamed its process title to) and the package scripts it runs; never the gateway."""
    home = f"HOME={host.home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
            if home in environ and "install" in cmdline and "gateway" not in cmdline:
                found.append(f"{proc.name}: {cmdline.strip()[:120]}")
    return found


def kill_gateway(host: WorldHost) -> None:
    """Power-off for the gateway: SIGKILL the process its pidfile names (none: the install
    stopped it already, as it does before a new core's plugins)."""
    pidfile = host.home / ".openclaw" / "gateway.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"gateway" in cmdline, cmdline
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


STUCK_INSTALL_S = 600
"""mac-1's postinstall sleeps this long under the SIGTERM case: still running whenever the
signal lands (the kill ends it at once; an install left alone shows up as a live process)."""


def test_sigterm_mid_step_then_a_host_reboots_mid_install(h: Harness) -> None:
    world = h.world
    assert world.ssh is not None
    mac1, mac2 = world.hosts
    before = current(h)
    target = other(before)
    # mac-1's install stays in the package's postinstall until it is killed, so the SIGTERM
    # lands mid-install whatever the machine's speed; mac-2's is slow: time to reboot it.
    world.set_faults(mac1, install_delay_s=versioned(STUCK_INSTALL_S, target))
    world.set_faults(mac2, install_delay_s=versioned(3, target))
    try:
        bump = h.bump(target)
        # SIGTERM while mac-1's install runs: npm has resolved, fetched and placed the package
        # and runs its postinstall (the reconciler has had the command's PID since before npm).
        live = h.start()
        wait_until(lambda: host_runs(world, mac1, "postinstall"), what="mac-1's postinstall")
        assert live.proc.poll() is None, live.stderr
        # A first SIGTERM asks for a stop after the step in hand, which is stuck; the second
        # (a supervisor losing patience) stops it at once: exit 128 + 15, the command killed.
        live.signal(signal.SIGTERM)
        live.wait_for("stopping after the step in hand")
        live.signal(signal.SIGTERM)
        stopped = h.finish(live, timeout=30)
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
        # Nothing of that install goes on alone on the host (it would race the next run's).
        seen: set[str] = set()
        for _ in range(20):  # 2 s: whatever was left would still be sleeping in postinstall
            seen.update(install_processes(mac1))
            time.sleep(0.1)
        assert not seen, sorted(seen)
        # No half install in service: mac-1 is drained (weight 0, drain and bookmark on
        # record) and its install not recorded as done; mac-2 untouched, on `before`.
        h.weights_safe()
        h.status_consistent()
        assert world.weights()[mac1.server] == 0
        assert not any("installed" in s for s in h.subjects(bump, mac1.name))
        assert {installed(mac2), *(installed(mac2, p) for p in PLUGINS)} == {before}
        assert world.weights()[mac2.server] == mac2.weight

        # The next run at once (as a service manager would restart it): it repeats mac-1's
        # install (not held up this time); then mac-2 reboots in the middle of its own.
        world.set_faults(mac1)
        live = h.start()
        wait_until(lambda: host_runs(world, mac2, "install"), what="install")
        world.ssh.stop(world.ssh[mac2.name])  # sshd and every session below it
        kill_gateway(mac2)
        live.wait_for("retrying in", "mac-2: ")
        world.ssh.start(world.ssh[mac2.name])
        done = h.finish(live)
    finally:
        for host in world.hosts:
            world.set_faults(host)
    assert done.returncode == 0, done.stderr
    h.complete(bump, target)
