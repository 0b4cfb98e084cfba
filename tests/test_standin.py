"""The stand-in OpenClaw, installed by real npm from a real verdaccio, speaks the product's shapes.

These tests pin the surfaces the reconciler reads (`--version`, `doctor --json`,
`doctor --post-upgrade --json`, `health --json`, `/healthz`, `/readyz`, `/startupz`,
`gateway start|stop|restart|status`, `update --tag`), the faults that tests switch per host,
and the npm tree shapes (a nested second openclaw) that the reconciler must detect.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox.catalog import STANDARD_CATALOG, CoreRelease, PluginRelease
from reconciler.sandbox.faults import (
    REAL_INSTALL_S,
    clear_faults,
    faults_file,
    read_faults,
    real_timings,
    set_faults,
    update_faults,
    versioned,
)
from reconciler.sandbox.verdaccio import LocalRegistry
from tests.fixtures.registry import StandinHost, http_get, pid_alive, wait_for

MakeHost = Callable[..., StandinHost]
Spawn = Callable[..., "subprocess.Popen[str]"]

LOOPBACK_WARNING = {
    "checkId": "gateway.bind.loopback",
    "severity": "warning",
    "message": "Gateway binds only to loopback",
}
PROBES = [
    "plugin.index_unavailable",
    "plugin.entry_unresolved",
    "plugin.manifest_drift",
    "plugin.version_drift",
]


# --- registry and catalog --------------------------------------------------------------------


def test_standard_catalog_is_published_with_latest_on_the_highest_release(
    registry: LocalRegistry,
) -> None:
    core = registry.packument("openclaw")
    assert sorted(core["versions"]) == sorted(
        e.version for e in STANDARD_CATALOG if isinstance(e, CoreRelease)
    )
    assert core["dist-tags"] == {"latest": "2026.9.6", "beta": "2026.7.1-beta.6"}
    assert core["versions"]["2026.9.6"]["engines"] == {"node": ">=24.16 <25 || >=26.1"}
    assert core["versions"]["2026.4.3"]["engines"] == {"node": ">=20"}

    discord = registry.packument("@openclaw/discord")["versions"]["2026.4.3"]
    assert discord["peerDependencies"] == {"openclaw": ">=2026.4.3"}
    assert discord["peerDependenciesMeta"] == {"openclaw": {"optional": True}}
    assert discord["openclaw"]["install"] == {"minHostVersion": ">=2026.4.3"}
    assert "pluginApi" in discord["openclaw"]["compat"]
    plugins = [e for e in STANDARD_CATALOG if isinstance(e, PluginRelease)]
    assert {e.name for e in plugins} == {
        "@openclaw/discord",
        "@openclaw/matrix",
        "@openclaw/msteams",
    }
    assert registry.dist_tags("@openclaw/msteams") == {"latest": "2026.9.6"}


# --- CLI shapes ------------------------------------------------------------------------------


def test_version_flags_and_build_info(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    for flag in ("--version", "-V", "-v"):
        done = host.run(flag)
        assert (done.returncode, done.stdout) == (0, "OpenClaw 2026.4.3 (standin)\n")
    info = json.loads((host.prefix / "lib/node_modules/openclaw/dist/build-info.json").read_text())
    assert info["version"] == "2026.4.3"
    assert set(info) == {"version", "commit", "builtAt", "buildId"}


def test_doctor_on_a_healthy_host_is_not_ok_because_of_one_warning(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    began = time.monotonic()
    done = host.run("doctor", "--json")
    assert time.monotonic() - began < 3.0
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report == {
        "schemaVersion": 1,
        "ok": False,
        "checksRun": 35,
        "checksSkipped": 30,
        "findings": [LOOPBACK_WARNING],
    }


def test_doctor_red_adds_an_error_finding_and_still_exits_zero(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(doctor_red=True)
    done = host.run("doctor", "--json")
    assert done.returncode == 0
    errors = [f for f in json.loads(done.stdout)["findings"] if f["severity"] == "error"]
    assert [f["checkId"] for f in errors] == ["config.schema.invalid"]
    assert errors[0]["fixHint"]


def test_faults_file_can_be_named_by_env_and_doctor_delay_applies(
    make_host: MakeHost, tmp_path: Path
) -> None:
    host = make_host("openclaw@2026.4.3")
    elsewhere = set_faults(tmp_path / "elsewhere", doctor_delay_s=0.5, doctor_red=["2026.4.3"])
    env = host.env(OPENCLAW_STANDIN_FAULTS=str(elsewhere))
    began = time.monotonic()
    done = host.run("doctor", "--json", env=env)
    assert time.monotonic() - began >= 0.5
    assert "error" in [f["severity"] for f in json.loads(done.stdout)["findings"]]


def test_post_upgrade_flags_a_tracked_plugin_left_on_an_older_release(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    for spec in ("npm:@openclaw/discord@2026.4.2", "npm:@openclaw/matrix@2026.4.3"):
        assert host.run("plugins", "install", spec, "--pin", timeout=120).returncode == 0
    done = host.run("doctor", "--post-upgrade", "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["probesRun"] == PROBES
    assert [(f["level"], f["code"], f["plugin"]) for f in report["findings"]] == [
        ("warn", "plugin.version_drift", "discord"),
    ]
    message = report["findings"][0]["message"]
    assert "Plugin discord is 2026.4.2, but OpenClaw is 2026.4.3" in message

    host.set_faults(doctor_red=True)
    red = host.run("doctor", "--post-upgrade", "--json")
    assert red.returncode == 1
    assert "error" in [f["level"] for f in json.loads(red.stdout)["findings"]]

    listed = host.json("plugins", "list", "--json")["plugins"]
    assert [(p["id"], p["version"]) for p in listed if p["origin"] == "global"] == [
        ("discord", "2026.4.2"),
        ("matrix", "2026.4.3"),
    ]


# --- the gateway -----------------------------------------------------------------------------


def test_gateway_run_serves_the_probe_endpoints(make_host: MakeHost, spawn: Spawn) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(ready_delay_s=1.5)
    env = host.env(OPENCLAW_PROFILE="blue")
    gateway = spawn(
        [
            str(host.bin),
            "gateway",
            "run",
            "--port",
            str(host.port),
            "--bind",
            "loopback",
            "--token",
            "t0k",
        ],
        env,
    )
    wait_for(lambda: _answers(host.url("/healthz")), what="/healthz")

    assert http_get(host.url("/healthz")) == (200, {"ok": True, "status": "live"})
    status, ready = http_get(host.url("/readyz"))
    assert (status, ready["ready"], ready["failing"]) == (503, False, ["startup"])
    status, started = http_get(host.url("/startupz"))
    assert (status, started["status"], started["version"]) == (503, "starting", "2026.4.3")
    assert host.gateway_pid(host.home / ".openclaw-blue") == gateway.pid

    wait_for(lambda: http_get(host.url("/readyz"))[0] == 200, what="/readyz 200")
    _, ready = http_get(host.url("/readyz"))
    assert ready["ready"] is True and ready["failing"] == [] and "eventLoop" in ready
    status, started = http_get(host.url("/startupz"))
    assert (status, started["ok"], started["status"]) == (200, True, "started")
    assert started["version"] == "2026.4.3"
    status, served = http_get(host.url("/"))
    assert (status, served["version"], served["profile"]) == (200, "2026.4.3", "blue")
    assert http_get(host.url("/hooks/wake"), method="POST")[0] == 200

    host.set_faults(http_5xx=True, never_ready=True)
    assert http_get(host.url("/"))[0] == 503
    assert http_get(host.url("/hooks/wake"), method="POST")[0] == 500
    assert http_get(host.url("/readyz"))[0] == 503
    assert http_get(host.url("/healthz"))[0] == 200

    gateway.terminate()
    assert gateway.wait(timeout=5) == 0
    assert host.gateway_pid(host.home / ".openclaw-blue") is None


def test_crash_at_start_exits_and_nothing_answers_while_restart_exits_zero(
    make_host: MakeHost,
) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(ready_delay_s=0)
    assert host.run("gateway", "start", timeout=15).returncode == 0
    wait_for(lambda: _answers(host.url("/readyz")), what="/readyz 200")
    before = host.gateway_pid()

    host.set_faults(crash_at_start=["2026.4.3"])
    done = host.run("gateway", "run", "--port", str(host.port), timeout=10)
    assert done.returncode == 1
    assert "crashed during startup (standin fault crash_at_start)" in done.stderr
    restart = host.run("gateway", "restart", timeout=20)
    assert restart.returncode == 0, restart.stderr  # as systemd or launchd would
    assert before is not None and not pid_alive(before)
    assert host.gateway_pid() is None
    for probe in ("/healthz", "/readyz", "/startupz"):
        assert not _answers(host.url(probe)), probe
    assert host.run("health", "--json").returncode != 0

    host.set_faults(crash_on_start=True)  # the older name of the same fault
    assert host.run("gateway", "run", "--port", str(host.port), timeout=10).returncode == 1


def test_daemon_control_and_health(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    assert (
        host.run("plugins", "install", "npm:@openclaw/discord@2026.4.3", timeout=120).returncode
        == 0
    )
    # Port and token from the config file this time, not from the environment.
    env = {k: v for k, v in host.env().items() if k != "OPENCLAW_GATEWAY_PORT"}
    for key, value in (("gateway.port", str(host.port)), ("gateway.auth.token", "s3cret")):
        assert host.run("config", "set", key, value, env=env).returncode == 0

    # capture_output: returns only if the daemon kept none of our pipes (as over SSH).
    started = host.run("gateway", "start", "--json", timeout=10, env=env)
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)["pid"]
    status = json.loads(host.run("gateway", "status", "--json", env=env).stdout)
    assert status["gateway"]["running"] is True
    assert (status["gateway"]["pid"], status["gateway"]["port"]) == (first, host.port)
    wait_for(lambda: http_get(host.url("/readyz"))[0] == 200, what="/readyz 200")

    health = host.run("health", "--json", env=env)
    assert health.returncode == 0, health.stderr
    snapshot = json.loads(health.stdout)
    assert snapshot["ok"] is True
    assert {"ts", "durationMs", "agents", "sessions"} <= set(snapshot)
    assert snapshot["channels"]["discord"]["running"] is True
    assert "discord" in snapshot["plugins"]["loaded"]
    assert "deliveryQueues" not in snapshot  # as 2026.9.6 prints an idle gateway
    wrong = host.run("health", "--json", env={**env, "OPENCLAW_GATEWAY_TOKEN": "nope"})
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr

    assert host.run("gateway", "restart", env=env, timeout=20).returncode == 0
    second = host.gateway_pid()
    assert second is not None and second != first and not pid_alive(first)

    assert host.run("gateway", "stop", env=env, timeout=20).returncode == 0
    assert not pid_alive(second)
    status = json.loads(host.run("gateway", "status", "--json", env=env).stdout)
    assert (status["gateway"]["running"], status["gateway"]["pid"]) == (False, None)
    down = host.run("health", "--json", env=env)
    assert down.returncode != 0 and "not reachable" in down.stderr


def test_ingress_pending_fault_shows_in_the_health_snapshot(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    assert (
        host.run("plugins", "install", "npm:@openclaw/matrix@2026.4.3", timeout=120).returncode == 0
    )
    host.set_faults(ingress_pending=3, ready_delay_s=0)
    assert host.run("gateway", "start", timeout=10).returncode == 0
    pressure = host.json("health", "--json")["deliveryQueues"]["ingressPressure"]
    assert [(q["channelId"], q["pendingCount"]) for q in pressure] == [("matrix", 3)]


# --- plugins: only tracked installs are discovered -------------------------------------------


def test_a_plugin_installed_beside_the_core_is_neither_listed_nor_loaded(
    make_host: MakeHost,
) -> None:
    host = make_host("openclaw@2026.4.3", "@openclaw/discord@2026.4.3")
    report = host.json("plugins", "list", "--json")
    assert set(report) == {"workspaceDir", "workspaceScope", "registry", "plugins", "diagnostics"}
    assert report["registry"] == {"source": "persisted", "diagnostics": []}
    by_id = {p["id"]: p for p in report["plugins"]}
    assert "discord" not in by_id
    assert {p["origin"] for p in by_id.values()} == {"bundled"}
    assert (by_id["anthropic"]["status"], by_id["anthropic"]["enabled"]) == ("loaded", True)
    assert by_id["memory-core"]["status"] == "loaded"
    assert [p["status"] for p in by_id.values()].count("disabled") >= 2
    assert by_id["anthropic"]["version"] == "2026.4.3"

    host.set_faults(ready_delay_s=0)
    assert host.run("gateway", "start", timeout=15).returncode == 0
    health = host.json("health", "--json")
    assert health["plugins"]["errors"] == health["plugins"]["unavailable"] == []
    assert "anthropic" in health["plugins"]["loaded"]
    assert "discord" not in health["plugins"]["loaded"]
    assert "discord" not in health["channels"]


def test_plugins_install_pin_is_tracked_stamped_and_hot_loaded(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(ready_delay_s=0)
    assert host.run("gateway", "start", timeout=15).returncode == 0
    assert "discord" not in host.json("health", "--json")["plugins"]["loaded"]

    done = host.run("plugins", "install", "npm:@openclaw/discord@2026.4.3", "--pin", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Installed plugin: discord",
        "Applied in Gateway generation 2.",
    ]
    projects = list((host.state_dir / "npm/projects").glob("openclaw-discord-*"))
    assert len(projects) == 1
    root = projects[0] / "node_modules/@openclaw/discord"
    assert json.loads((root / "package.json").read_text())["version"] == "2026.4.3"
    assert not (host.prefix / "lib/node_modules/@openclaw/discord").exists()
    config = _config(host)
    assert config["plugins"]["entries"]["discord"] == {"enabled": True}
    assert config["meta"]["lastTouchedVersion"] == "2026.4.3"

    discord = _plugin(host, "discord")
    assert {
        k: discord[k] for k in ("name", "version", "format", "origin", "enabled", "status")
    } == {
        "name": "Discord",
        "version": "2026.4.3",
        "format": "openclaw",
        "origin": "global",
        "enabled": True,
        "status": "loaded",
    }
    assert (discord["rootDir"], discord["source"]) == (str(root), str(root / "index.js"))
    assert (discord["trust"]["installSource"], discord["trust"]["installSpec"]) == (
        "npm",
        "@openclaw/discord@2026.4.3",
    )
    assert discord["dependencyStatus"]["installed"] is True
    assert discord["dependencyStatus"]["missing"] == []
    health = host.json("health", "--json")
    assert "discord" in health["plugins"]["loaded"]
    assert health["channels"]["discord"]["running"] is True

    again = host.run("plugins", "install", "npm:@openclaw/discord@2026.4.4", "--pin", timeout=120)
    assert again.returncode == 1 and "plugins update discord" in again.stderr
    assert host.run("plugins", "disable", "discord").returncode == 0
    assert _plugin(host, "discord")["status"] == "disabled"
    assert "discord" not in host.json("health", "--json")["plugins"]["loaded"]
    assert host.run("plugins", "enable", "discord").returncode == 0
    assert "discord" in host.json("health", "--json")["plugins"]["loaded"]


def test_plugins_update_reinstalls_or_moves_and_uninstall_leaves_a_disabled_marker(
    make_host: MakeHost,
) -> None:
    host = make_host("openclaw@2026.4.4")
    assert host.run("plugins", "install", "npm:@openclaw/discord@2026.4.3", "--pin").returncode == 0
    root = Path(_plugin(host, "discord")["rootDir"])
    shutil.rmtree(root.parent.parent)  # node_modules gone, as after a state restore
    assert _plugin(host, "discord")["status"] == "error"

    assert host.run("plugins", "update", "discord", timeout=120).returncode == 0
    assert (_plugin(host, "discord")["version"], _plugin(host, "discord")["status"]) == (
        "2026.4.3",
        "loaded",
    )  # the pinned spec, reinstalled
    moved = host.run("plugins", "update", "@openclaw/discord@2026.4.4", timeout=120)
    assert moved.returncode == 0, moved.stderr
    discord = _plugin(host, "discord")
    assert (discord["version"], discord["trust"]["installSpec"]) == (
        "2026.4.4",
        "@openclaw/discord@2026.4.4",
    )
    assert host.run("plugins", "update", "--all", timeout=120).returncode == 0
    assert host.run("plugins", "update", "nope").returncode == 1

    assert host.run("plugins", "uninstall", "discord").returncode == 1  # needs --force in scripts
    assert host.run("plugins", "uninstall", "discord", "--force").returncode == 0
    assert "discord" not in {p["id"] for p in host.json("plugins", "list", "--json")["plugins"]}
    assert not root.exists()
    assert _config(host)["plugins"]["entries"]["discord"] == {"enabled": False}


# --- config writes and the downgrade guard ---------------------------------------------------

REFUSAL = (
    "Refusing to run automatic gateway startup migrations because this OpenClaw binary "
    "(2026.4.3) is older than the config last written by OpenClaw 2026.4.4. Run the newer "
    "openclaw binary on PATH, or reinstall the intended gateway service from the newer install. "
    "Set OPENCLAW_ALLOW_OLDER_BINARY_DESTRUCTIVE_ACTIONS=1 only for an intentional downgrade or "
    "recovery action.\n"
)


def test_config_set_stamps_and_an_older_binary_refuses_to_start(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(ready_delay_s=0)
    host.install("openclaw@2026.4.4")  # a plain npm upgrade writes no config
    assert host.run("gateway", "start", timeout=15).returncode == 0
    before = (host.state_dir / "openclaw.json").read_bytes()
    for argv in (("doctor", "--json"), ("health", "--json"), ("gateway", "status", "--json")):
        assert host.run(*argv).returncode == 0
    assert (host.state_dir / "openclaw.json").read_bytes() == before  # nor do doctor and health
    assert _config(host)["meta"]["lastTouchedVersion"] == "2026.4.3"

    done = host.run("config", "set", "gateway.mode", "local")
    assert (done.returncode, done.stdout) == (
        0,
        "Updated gateway.mode. Restart the gateway to apply.\n",
    )
    assert _config(host)["gateway"]["mode"] == "local"
    assert _config(host)["meta"]["lastTouchedVersion"] == "2026.4.4"
    assert host.run("config", "get", "gateway.mode").stdout == "local\n"

    host.install("openclaw@2026.4.3")  # a downgrade: nothing listens after the restart
    refused = host.run("gateway", "run", "--port", str(host.port), timeout=10)
    assert (refused.returncode, refused.stderr) == (1, REFUSAL)
    assert host.run("gateway", "restart", timeout=20).returncode == 0
    for probe in ("/healthz", "/readyz", "/startupz"):
        assert not _answers(host.url(probe)), probe
    assert host.gateway_pid() is None

    allowed = host.env(OPENCLAW_ALLOW_OLDER_BINARY_DESTRUCTIVE_ACTIONS="1")
    assert host.run("gateway", "start", env=allowed, timeout=15).returncode == 0
    wait_for(lambda: _answers(host.url("/startupz")), what="/startupz 200")


@pytest.mark.parametrize(
    ("last", "starts"),
    [("2026.4.10", False), ("2026.4.3-1", True), ("2026.4.3", True), ("2026.4.2", True)],
)
def test_the_downgrade_guard_compares_calendar_versions_as_semver(
    make_host: MakeHost, last: str, starts: bool
) -> None:
    host = make_host("openclaw@2026.4.3")
    config = {**_config(host), "meta": {"lastTouchedVersion": last}}
    (host.state_dir / "openclaw.json").write_text(json.dumps(config))
    host.set_faults(crash_at_start=True)  # get past the guard, then stop at once
    done = host.run("gateway", "run", "--port", str(host.port), timeout=10)
    assert done.returncode == 1
    assert ("Refusing to run automatic gateway startup migrations" in done.stderr) is not starts


def test_config_writes_follow_the_profile_and_the_overrides(
    make_host: MakeHost, tmp_path: Path
) -> None:
    host = make_host("openclaw@2026.4.3")
    blue_env = host.env(OPENCLAW_PROFILE="blue")
    assert host.run("config", "set", "gateway.port", "19001", env=blue_env).returncode == 0
    blue = json.loads((host.home / ".openclaw-blue/openclaw.json").read_text())
    assert blue == {"gateway": {"port": 19001}, "meta": {"lastTouchedVersion": "2026.4.3"}}
    elsewhere = tmp_path / "elsewhere.json"
    done = host.run(
        "config", "set", "a.b", "true", env=host.env(OPENCLAW_CONFIG_PATH=str(elsewhere))
    )
    assert done.returncode == 0
    assert json.loads(elsewhere.read_text())["a"] == {"b": True}
    state = tmp_path / "state"
    done = host.run("config", "set", "x", "y", env=host.env(OPENCLAW_STATE_DIR=str(state)))
    assert json.loads((state / "openclaw.json").read_text())["meta"]["lastTouchedVersion"] == (
        "2026.4.3"
    )


# --- auth ------------------------------------------------------------------------------------


def test_the_gateway_refuses_to_run_without_a_token(make_host: MakeHost, spawn: Spawn) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(ready_delay_s=0)
    bare = host.env(OPENCLAW_PROFILE="bare")  # a profile with no config: no token
    done = host.run("gateway", "run", "--port", str(host.port), env=bare, timeout=10)
    assert done.returncode == 1 and "without auth" in done.stderr
    assert host.run("gateway", "start", env=bare, timeout=15).returncode == 0  # service manager
    assert not _answers(host.url("/healthz"))

    argv = [str(host.bin), "gateway", "run", "--port", str(host.port), "--token", "t0k"]
    spawn(argv, bare)
    wait_for(lambda: _answers(host.url("/readyz")), what="/readyz 200")
    no_token = host.run("health", "--json", env=bare)
    assert no_token.returncode != 0 and "unauthorized" in no_token.stderr
    assert (
        host.run("health", "--json", env={**bare, "OPENCLAW_GATEWAY_TOKEN": "t0k"}).returncode == 0
    )


# --- upgrades and faults keyed by version ----------------------------------------------------


def test_update_moves_the_version_and_version_keyed_faults_follow(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(doctor_red=["2026.4.4"])
    assert _doctor_errors(host) == []

    dry = host.json("update", "--tag", "2026.4.4", "--dry-run", "--json")
    assert (dry["status"], dry["after"]["version"]) == ("skipped", "2026.4.4")
    assert host.run("--version").stdout == "OpenClaw 2026.4.3 (standin)\n"

    done = host.run("update", "--tag", "2026.4.4", "--json", "--yes", "--no-restart", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["mode"]) == ("ok", "npm")
    assert (result["before"], result["after"]) == ({"version": "2026.4.3"}, {"version": "2026.4.4"})
    assert [s["name"] for s in result["steps"]] == ["resolve target", "global update"]
    assert host.run("--version").stdout == "OpenClaw 2026.4.4 (standin)\n"
    assert _doctor_errors(host) == ["config.schema.invalid"]
    assert _config(host)["meta"]["lastTouchedVersion"] == "2026.4.4"  # stamped by the new release

    status = host.json("update", "status", "--json")
    assert status["activeRun"] is None
    assert (status["lastRun"]["status"], status["lastRun"]["after"]) == (
        "ok",
        {"version": "2026.4.4"},
    )


def test_update_refuses_a_target_whose_engines_exclude_this_node(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    done = host.run("update", "--tag", "2026.9.6", "--json", "--yes", "--no-restart", timeout=60)
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert (result["status"], result["reason"]) == ("error", "node-engine-unsupported")
    assert result["after"] == {"version": "2026.4.3"}
    assert host.run("--version").stdout == "OpenClaw 2026.4.3 (standin)\n"


def test_running_gateway_keeps_its_version_until_restarted(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(ready_delay_s=0)
    assert host.run("gateway", "start", timeout=10).returncode == 0
    update = host.run("update", "--tag", "2026.4.4", "--json", "--yes", "--no-restart", timeout=60)
    assert update.returncode == 0, update.stdout
    gateway = host.json("gateway", "status", "--json")["gateway"]
    assert (gateway["version"], gateway["installedVersion"]) == ("2026.4.3", "2026.4.4")
    assert host.run("gateway", "restart", timeout=20).returncode == 0
    wait_for(lambda: http_get(host.url("/startupz"))[0] == 200, what="/startupz 200")
    assert http_get(host.url("/startupz"))[1]["version"] == "2026.4.4"


def test_install_delay_fault_slows_only_the_named_version(make_host: MakeHost) -> None:
    host = make_host()
    host.set_faults(install_delay_s=versioned(2.0, "2026.4.4"))
    began = time.monotonic()
    host.install("openclaw@2026.4.3")
    fast = time.monotonic() - began
    began = time.monotonic()
    host.install("openclaw@2026.4.4")
    slow = time.monotonic() - began
    assert slow >= 2.0
    assert slow - fast > 1.0


# --- npm tree shapes -------------------------------------------------------------------------


def test_plugin_whose_peer_range_excludes_the_core_gets_a_nested_openclaw(
    make_host: MakeHost,
) -> None:
    # msteams declares a required peer >=2026.9.6: npm nests a copy and `npm ls` exits 0.
    host = make_host("openclaw@2026.4.3", "@openclaw/msteams@2026.9.6")
    code, tree = host.npm_ls(depth=1)
    assert code == 0
    deps = tree["dependencies"]
    assert deps["openclaw"]["version"] == "2026.4.3"
    assert deps["@openclaw/msteams"]["dependencies"]["openclaw"]["version"] == "2026.9.6"
    assert (host.prefix / nested("msteams")).is_dir()
    assert host.npm_ls(depth=0) == (
        0,
        {
            "name": "lib",
            "dependencies": {
                "@openclaw/msteams": {"version": "2026.9.6", "overridden": False},
                "openclaw": {"version": "2026.4.3", "overridden": False},
            },
        },
    )


def test_optional_peer_excluding_the_core_nests_only_when_installed_together(
    make_host: MakeHost,
) -> None:
    together = make_host("openclaw@2026.4.3", "@openclaw/discord@2026.4.4", name="together")
    code, tree = together.npm_ls(depth=1)
    assert code == 0
    assert tree["dependencies"]["@openclaw/discord"]["dependencies"]["openclaw"]["version"] == (
        "2026.4.4"
    )

    apart = make_host("openclaw@2026.4.3", name="apart")
    apart.install("@openclaw/discord@2026.4.4")
    code, tree = apart.npm_ls(depth=1)
    assert (code, tree["error"]["code"]) == (1, "ELSPROBLEMS")
    assert not (apart.prefix / nested("discord")).exists()


# --- the faults file helpers -----------------------------------------------------------------


def test_fault_helpers_write_the_documented_format(tmp_path: Path) -> None:
    path = set_faults(
        tmp_path,
        doctor_red=["2026.4.4"],
        http_5xx=True,
        never_ready=False,
        ready_delay_s=2,
        install_delay_s={"value": 1.5, "versions": ["2026.4.4"]},
    )
    assert path == faults_file(tmp_path) == tmp_path / ".openclaw-standin/faults.json"
    assert json.loads(path.read_text()) == {
        "doctor_red": ["2026.4.4"],
        "http_5xx": True,
        "ready_delay_s": 2.0,
        "install_delay_s": {"value": 1.5, "versions": ["2026.4.4"]},
    }
    update_faults(tmp_path, http_5xx=None, crash_at_start=True)
    assert set(read_faults(tmp_path)) == {
        "doctor_red",
        "ready_delay_s",
        "install_delay_s",
        "crash_at_start",
    }
    with pytest.raises(ValueError, match="unknown stand-in fault"):
        set_faults(tmp_path, doctor_blue=True)
    clear_faults(tmp_path)
    assert read_faults(tmp_path) == {}


def test_real_timings_are_one_switch_and_off_by_default(tmp_path: Path) -> None:
    assert read_faults(tmp_path) == {}
    set_faults(tmp_path, **real_timings())
    assert read_faults(tmp_path) == {
        "doctor_delay_s": 8.0,
        "ready_delay_s": 7.0,
        "install_delay_s": REAL_INSTALL_S,
    }
    assert real_timings(ready_s=24)["ready_delay_s"] == 24
    with pytest.raises(ValueError, match="outside the measured"):
        real_timings(ready_s=2)


def nested(plugin: str) -> str:
    return f"lib/node_modules/@openclaw/{plugin}/node_modules/openclaw"


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=1)[0] == 200
    except OSError:
        return False


def _config(host: StandinHost) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((host.state_dir / "openclaw.json").read_text())
    return config


def _plugin(host: StandinHost, plugin_id: str) -> dict[str, Any]:
    listed = host.json("plugins", "list", "--json")["plugins"]
    found: dict[str, Any] = next(p for p in listed if p["id"] == plugin_id)
    return found


def _doctor_errors(host: StandinHost) -> list[str]:
    findings = host.json("doctor", "--json")["findings"]
    return [f["checkId"] for f in findings if f["severity"] == "error"]
