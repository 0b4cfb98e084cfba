"""The rollout engine end to end, on real parts: sshd hosts, verdaccio, a git daemon remote.

Each test builds a World (three real sshd hosts running the stand-in OpenClaw, a weights-file
load balancer, a spec repository on git://), pushes commits as an operator would, and runs the
real CLI (`python -m reconciler reconcile --once`) as a subprocess.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World, WorldHost, product_version
from tests.fixtures.webhook import Receiver

SECRET_ENV = "RECONCILER_TEST_WEBHOOK_SECRET"
SECRET = "s3cret-for-hmac-only-in-tests"
RUN_TIMEOUT = 600


def reconcile(
    world: World, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, SECRET_ENV: SECRET, **(env or {})}
    return subprocess.run(
        world.reconcile_argv(*extra),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=full_env,
    )


def installed(host: WorldHost, name: str = "openclaw") -> str | None:
    """The version the product has of `name` (the core, or a plugin it tracks and lists)."""
    return product_version(host, name)


def status_tree(world: World) -> pygit2.Tree:
    repo = world.status_repo()
    commit = repo.revparse_single("refs/heads/reconciler/status")
    assert isinstance(commit, pygit2.Commit)
    return commit.tree


def status_file(world: World, path: str) -> Any:
    try:
        blob = status_tree(world) / f"fleets/sandbox/{path}"
    except KeyError:
        return None
    assert isinstance(blob, pygit2.Blob)
    return json.loads(blob.data)


def status_log(world: World) -> list[pygit2.Commit]:
    repo = world.status_repo()
    head = repo.revparse_single("refs/heads/reconciler/status")
    return list(repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL))[::-1]


def trailers(commit: pygit2.Commit) -> dict[str, str]:
    body = commit.message.partition("\n\n")[2]
    return dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)


def adopted(world: World) -> str:
    """The fleet as it stands (2026.4.2) committed and reconciled: the starting point."""
    commit = world.bump("2026.4.2", message="studio on 2026.4.2")
    done = reconcile(world)
    assert done.returncode == 0, done.stderr
    return commit


@pytest.fixture
def world(tmp_path: Path, registry: LocalRegistry, webhook: Receiver):
    with World(
        tmp_path / "world",
        registry=registry,
        webhook=webhook.url,
        webhook_secret_env=SECRET_ENV,
    ) as w:
        yield w


def test_bump_upgrades_one_host_at_a_time_with_a_flight_recorder(world: World) -> None:
    adopted(world)
    bump = world.bump("2026.4.3")
    done = reconcile(world)
    assert done.returncode == 0, done.stderr

    for host in world.hosts:
        assert installed(host) == "2026.4.3"
        assert installed(host, "@openclaw/matrix") == "2026.4.3"
    assert world.weights() == {"mac-1": 100, "mac-2": 100, "mac-3": 100}

    # The LB's record over time: never two hosts below their weight at once; each ramped
    # 0 -> 10 -> 50 -> 100 in host order.
    current = {h.name: h.weight for h in world.hosts}
    for change in world.weight_history():
        current[str(change["server"])] = int(change["weight"])  # type: ignore[call-overload]
        assert sum(1 for h in world.hosts if current[h.name] < h.weight) <= 1
    ramps = [(c["server"], c["weight"]) for c in world.weight_history()]
    expected = [(h, w) for h in ("mac-1", "mac-2", "mac-3") for w in (0, 10, 50, 100)]
    assert ramps == expected

    rollout = status_file(world, "rollout.json")
    assert rollout["phase"] == "Complete" and rollout["specCommit"] == bump
    for host in world.hosts:
        node = status_file(world, f"nodes/{host.name}.json")
        assert node["installed"]["core"] == "2026.4.3" and node["green"] is True
        body = {k: v for k, v in node.items() if k != "readinessSha256"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == node["readinessSha256"]
    fingerprints = {status_file(world, f"nodes/{h.name}.json")["fingerprint"] for h in world.hosts}
    assert len(fingerprints) == 1

    bookmarks = [e.name for e in status_tree(world) / "fleets/sandbox/bookmarks"]
    assert len(bookmarks) == 3
    for name in bookmarks:
        bm = status_file(world, f"bookmarks/{name}")
        assert bm["installed"]["core"] == "2026.4.2" and bm["specCommit"] == bump
        assert bm["lbWeights"][bm["host"]] == 100

    log = [c for c in status_log(world) if trailers(c).get("Spec-Commit") == bump]
    subjects = [c.message.splitlines()[0] for c in log]
    assert any(s.startswith("mac-2: weight 10%") for s in subjects)
    installs = [c for c in log if "installed openclaw 2026.4.3" in c.message]
    assert [trailers(c)["Node"] for c in installs] == ["mac-1", "mac-2", "mac-3"]
    verified = [c for c in log if "doctor green" in c.message]
    assert all(len(trailers(c).get("Readiness-Sha256", "")) == 64 for c in verified)

    before = len(status_log(world))
    assert reconcile(world).returncode == 0
    assert len(status_log(world)) == before, "a pass with nothing new wrote a commit"


def test_red_host_is_restored_frozen_and_broadcast_then_a_fix_resumes(
    world: World, webhook: Receiver
) -> None:
    adopted(world)
    mac2, mac3 = world.host("mac-2"), world.host("mac-3")
    world.set_faults(mac2, doctor_red=["2026.4.3"])
    bump = world.bump("2026.4.3")
    done = reconcile(world)
    assert done.returncode == 2, done.stderr

    assert installed(world.host("mac-1")) == "2026.4.3"
    assert installed(mac2) == "2026.4.2", "mac-2 was not restored to its bookmark"
    assert installed(mac2, "@openclaw/discord") == "2026.4.2"
    assert config_stamp(mac2.home / ".openclaw") == "2026.4.2", "state not restored"
    restored = [c.message for c in status_log(world) if "mac-2: restored to openclaw" in c.message]
    assert restored and "restored from its recovery point" in restored[-1], restored
    assert installed(mac3) == "2026.4.2"
    assert world.weights() == {"mac-1": 100, "mac-2": 100, "mac-3": 100}
    assert not any(c["server"] == "mac-3" for c in world.weight_history()), "mac-3 was touched"
    # The status branch records the weight the restore gave back, not the one it observed before.
    recorded = status_file(world, "nodes/mac-2.json")["profiles"][0]["lbWeight"]
    assert recorded == 100, f"mac-2 recorded at weight {recorded} after its restore"

    rollout = status_file(world, "rollout.json")
    assert rollout["phase"] == "Failed" and bump in rollout["failedCommits"]
    assert rollout["hosts"]["mac-2"]["phase"] == "RolledBack"
    freeze = status_file(world, "freeze.json")
    assert freeze is not None and freeze["host"] == "mac-2" and freeze["specCommit"] == bump

    failures = webhook.bodies("failure")
    assert failures, "no failure broadcast reached the receiver"
    event = failures[0]
    assert event["host"] == "mac-2" and event["specCommit"] == bump
    assert "config.schema.invalid" in (event["finding"] or "")
    delivery = next(d for d in webhook.deliveries if d["json"]["kind"] == "failure")
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery["body"], hashlib.sha256).hexdigest()
    assert delivery["headers"]["X-Reconciler-Signature-256"] == expected
    assert SECRET not in json.dumps(webhook.bodies())

    commits = len(status_log(world))
    assert reconcile(world).returncode == 2, "a failed commit must not be retried on its own"
    assert len(status_log(world)) == commits

    world.set_faults(mac2)
    fix = world.commit(world.spec_files("2026.4.3"), "retry 2026.4.3: mac-2 config fixed")
    done = reconcile(world)
    assert done.returncode == 0, done.stderr
    assert [installed(h) for h in world.hosts] == ["2026.4.3"] * 3, done.stderr
    assert status_file(world, "freeze.json") is None
    assert status_file(world, "rollout.json")["specCommit"] == fix


def test_a_complete_fleet_reports_drift_once_and_names_the_host(world: World) -> None:
    adopted(world)
    before = len(status_log(world))
    assert reconcile(world).returncode == 0
    assert len(status_log(world)) == before, "a steady pass with no drift wrote a commit"

    # Someone installs another plugin version on mac-2 by hand.
    world.install(world.host("mac-2"), "2026.4.2", {"@openclaw/matrix": "2026.4.4"})
    assert reconcile(world).returncode == 0
    rollout = status_file(world, "rollout.json")
    assert rollout["phase"] == "Complete"
    drift = "drift: mac-2: @openclaw/matrix is 2026.4.4, wanted 2026.4.2"
    assert rollout["message"].startswith(drift)
    assert "mac-1" not in rollout["message"] and "mac-3" not in rollout["message"]
    doc = status_file(world, "nodes/mac-2.json")  # observed in full for the record
    assert doc["installed"]["plugins"]["@openclaw/matrix"] == "2026.4.4"

    commits = len(status_log(world))
    assert reconcile(world).returncode == 0
    assert len(status_log(world)) == commits, "the same drift was recorded twice"


def test_revert_of_the_bump_converges_back(world: World) -> None:
    adopted(world)
    bump = world.bump("2026.4.3")
    assert reconcile(world).returncode == 0
    mac1 = world.host("mac-1")
    world.openclaw(mac1, "config", "set", "gateway.mode", "local")  # an operator, on 2026.4.3
    revert = world.revert(bump)
    done = reconcile(world)
    assert done.returncode == 0, done.stderr
    for host in world.hosts:
        assert installed(host) == "2026.4.2"
        assert installed(host, "@openclaw/discord") == "2026.4.2"
        # 2026.4.3 stamped the config (its plugin install): only the recovery point 2026.4.2
        # wrote brings back a state 2026.4.2 starts on.
        assert config_stamp(host.home / ".openclaw") == "2026.4.2"
    assert world.weights() == {"mac-1": 100, "mac-2": 100, "mac-3": 100}
    rollout = status_file(world, "rollout.json")
    assert rollout["specCommit"] == revert and rollout["target"]["openclaw"] == "2026.4.2"
    installs = [
        c.message for c in status_log(world) if "mac-1: installed openclaw 2026.4.2" in c.message
    ]
    assert installs and "restored from its recovery point" in installs[-1], installs
    kept = mac1.home / ".local/state/openclaw-reconciler/replaced"
    [aside] = [p for p in kept.glob("*/0-state") if "local" in (p / "openclaw.json").read_text()]
    assert str(aside) in installs[-1], "the replaced state's path is not in the status record"
    assert config_stamp(aside) == "2026.4.3"


def config_stamp(state: Path) -> str | None:
    meta = json.loads((state / "openclaw.json").read_text()).get("meta", {})
    return meta.get("lastTouchedVersion")


def test_peer_mismatch_holds_weight_and_says_who_differs(world: World, webhook: Receiver) -> None:
    adopted(world)
    world.bump("2026.4.3")
    killed = reconcile(world, env={"RECONCILER_FAILPOINTS": "mac-2/verify:recorded"})
    assert killed.returncode == -9
    # mac-1 was upgraded first (golden); now its plugin tree drifts.
    world.install(world.host("mac-1"), "2026.4.3", {"@openclaw/matrix": "2026.4.4"})
    held = reconcile(world)
    assert held.returncode == 3, held.stderr
    assert world.weights()["mac-2"] == 0, "mac-2's weight was raised while peers disagree"

    rollout = status_file(world, "rollout.json")
    assert rollout["phase"] == "Paused"
    assert "mac-1 disagrees with mac-2 (golden)" in rollout["message"]
    assert "plugins.@openclaw/matrix" in rollout["message"]
    gates = webhook.bodies("gate")
    assert gates and "plugins.@openclaw/matrix" in gates[0]["message"]

    status = subprocess.run(
        [*world.reconcile_argv()[:3], "status", "--remote", world.remote, "--fleet", "sandbox",
         "--cache", str(world.root / "cache"), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    doc = json.loads(status.stdout)
    assert doc["peersAgree"] is False
    mac1 = next(h for h in doc["hosts"] if h["host"] == "mac-1")
    assert mac1["agrees"] is False
    assert any("plugins.@openclaw/matrix" in d for d in mac1["differs"])


# --- crash safety: SIGKILL at every phase boundary --------------------------------------------

ACTIONS = ("bookmark", "drain", "preflight", "install", "restart", "verify", "ramp-100")
KILL_POINTS = [f"{host}/{action}:after" for host in ("mac-1", "mac-2") for action in ACTIONS]


@pytest.fixture(scope="module")
def crash_world(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry):
    with World(
        tmp_path_factory.mktemp("crash"), names=("mac-1", "mac-2"), steps=(100,), registry=registry
    ) as w:
        adopted(w)
        yield w


def package_mtime(host: WorldHost) -> int:
    return (host.prefix / "lib" / "node_modules" / "openclaw" / "package.json").stat().st_mtime_ns


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_a_phase_boundary_resumes_to_the_desired_state(
    crash_world: World, point: str
) -> None:
    world = crash_world
    before = installed(world.hosts[0])
    target = "2026.4.4" if before == "2026.4.3" else "2026.4.3"
    bump = world.bump(target)

    killed = reconcile(world, env={"RECONCILER_FAILPOINTS": point})
    assert killed.returncode == -9, f"failpoint {point} not reached:\n{killed.stderr}"
    at_kill = {h.name: (installed(h), package_mtime(h)) for h in world.hosts}

    resumed = reconcile(world)
    assert resumed.returncode == 0, resumed.stderr

    assert [installed(h) for h in world.hosts] == [target, target]
    assert [installed(h, "@openclaw/discord") for h in world.hosts] == [target, target]
    assert world.weights() == {"mac-1": 100, "mac-2": 100}
    for host in world.hosts:
        version, mtime = at_kill[host.name]
        if version == target:
            assert package_mtime(host) == mtime, f"{host.name} was installed twice"

    log = [c for c in status_log(world) if trailers(c).get("Spec-Commit") == bump]
    for host in world.hosts:
        installs = [
            c for c in log if trailers(c).get("Node") == host.name and "installed" in c.message
        ]
        assert len(installs) == 1, [c.message.splitlines()[0] for c in installs]
    rollout = status_file(world, "rollout.json")
    assert rollout["phase"] == "Complete" and rollout["specCommit"] == bump
    names = [e.name for e in status_tree(world) / "fleets/sandbox/bookmarks"]
    mine = [status_file(world, f"bookmarks/{n}") for n in names]
    mine = [b for b in mine if b["specCommit"] == bump]
    assert sorted(b["host"] for b in mine) == ["mac-1", "mac-2"], "a bookmark missing or doubled"
    for b in mine:
        assert b["installed"]["core"] == before and b["lbWeights"][b["host"]] == 100


# --- two reconcilers on one fleet ---------------------------------------------------------------


def acting_instances(world: World, bump: str) -> set[str]:
    """Who wrote the commits that act on hosts (bookmarks, drains, installs, ...)."""
    log = [c for c in status_log(world) if trailers(c).get("Spec-Commit") == bump]
    return {trailers(c)["Reconciler"] for c in log if trailers(c).get("Node")}


def test_two_reconcilers_exactly_one_acts(world: World) -> None:
    adopted(world)
    bump = world.bump("2026.4.3")
    argv = [
        world.reconcile_argv("--instance", n, "--lease", "5", cache=world.root / n)
        for n in ("a", "b")
    ]
    env = {**os.environ, SECRET_ENV: SECRET}
    procs = [
        subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for a in argv
    ]
    outs = [p.communicate(timeout=RUN_TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (actor,) = acting_instances(world, bump)
    idle = {"a": outs[1][1], "b": outs[0][1]}[actor]
    assert "standing by" in idle
    assert all(installed(h) == "2026.4.3" for h in world.hosts)


def test_standby_takes_over_when_the_holder_dies_and_its_lease_expires(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    with World(
        tmp_path / "w", names=("mac-1", "mac-2"), steps=(100,), registry=registry,
        extra_rollout={"installTimeout": "4s", "drainTimeout": "2s", "probeTimeout": "10s"},
    ) as world:  # fmt: skip
        adopted(world)
        bump = world.bump("2026.4.3")
        first = world.reconcile_argv("--instance", "first", "--lease", "2", cache=world.root / "a")
        killed = subprocess.run(
            first, capture_output=True, text=True, timeout=RUN_TIMEOUT,
            env={**os.environ, "RECONCILER_FAILPOINTS": "mac-1/install:after"},
        )  # fmt: skip
        assert killed.returncode == -9, killed.stderr
        second = world.reconcile_argv(
            "--instance", "second", "--lease", "2", cache=world.root / "b"
        )
        done = subprocess.run(second, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert "standing by: first holds the lease" in done.stderr
        assert all(installed(h) == "2026.4.3" for h in world.hosts)
        assert acting_instances(world, bump) == {"first", "second"}
        log = [c.message.splitlines()[0] for c in status_log(world)]
        assert any(s.startswith("lease taken by second") for s in log)


# --- strategies and windows ---------------------------------------------------------------------


def test_all_at_once_drains_installs_and_restores_the_whole_fleet(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    with World(
        tmp_path / "w", names=("mac-1", "mac-2"), registry=registry,
        extra_rollout={"strategy": "all-at-once"},
    ) as world:  # fmt: skip
        adopted(world)
        bump = world.bump("2026.4.3")
        done = reconcile(world)
        assert done.returncode == 0, done.stderr
        assert [installed(h) for h in world.hosts] == ["2026.4.3", "2026.4.3"]
        assert world.weights() == {"mac-1": 100, "mac-2": 100}
        changes = [(c["server"], c["weight"]) for c in world.weight_history()]
        assert changes == [("mac-1", 0), ("mac-2", 0), ("mac-1", 100), ("mac-2", 100)]
        log = [c for c in status_log(world) if trailers(c).get("Spec-Commit") == bump]
        assert any(c.message.startswith("fleet: installed openclaw 2026.4.3") for c in log)


def test_a_closed_maintenance_window_holds_the_rollout(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    with World(tmp_path / "w", names=("mac-1",), registry=registry) as world:
        adopted(world)
        deny_now = (
            'windows:\n  - kind: deny\n    start: "00:00"\n    duration: 24h\n    timezone: UTC\n'
        )
        files = world.spec_files("2026.4.3")
        files["fleet.yaml"] = files["fleet.yaml"].replace(
            b"loadBalancer:", deny_now.encode() + b"loadBalancer:"
        )
        world.commit(files, "bump during a freeze window")
        held = reconcile(world)
        assert held.returncode == 3, held.stderr
        assert installed(world.hosts[0]) == "2026.4.2"
        rollout = status_file(world, "rollout.json")
        assert rollout["phase"] == "Paused" and "outside maintenance windows" in rollout["message"]
        assert world.weight_history() == []
