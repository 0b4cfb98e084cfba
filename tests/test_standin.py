"""The stand-in OpenClaw, installed by real npm from a real verdaccio, speaks the product's shapes.

These tests pin the surfaces the reconciler reads (`--version`, `doctor --json`,
`doctor --post-upgrade --json`, `health --json`, `/healthz`, `/readyz`, `/startupz`,
`gateway start|stop|restart|status`, `update --tag`), the faults that tests switch per host,
and the npm tree shapes (a nested second openclaw) that the reconciler must detect.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.sandbox.faults import (
    clear_faults,
    faults_file,
    read_faults,
    set_faults,
    update_faults,
    versioned,
)
from reconciler.sandbox.registry import (
    STANDARD_CATALOG,
    CoreRelease,
    LocalRegistry,
    PluginRelease,
)
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


def test_post_upgrade_flags_a_plugin_left_on_an_older_release(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3", "@openclaw/discord@2026.4.2", "@openclaw/matrix@2026.4.3")
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
    assert [(p["id"], p["version"]) for p in listed] == [
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


def test_crash_on_start_fails_fast(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3")
    host.set_faults(crash_on_start=["2026.4.3"])
    done = host.run("gateway", "run", "--port", str(host.port), timeout=10)
    assert done.returncode == 1
    assert "crash_on_start" in done.stderr
    start = host.run("gateway", "start", timeout=15)
    assert start.returncode == 1
    assert host.gateway_pid() is None


def test_daemon_control_and_health(make_host: MakeHost) -> None:
    host = make_host("openclaw@2026.4.3", "@openclaw/discord@2026.4.3")
    # Port and token from the config file this time, not from the environment.
    host.state_dir.mkdir()
    config = {"gateway": {"port": host.port, "auth": {"token": "s3cret"}}}
    (host.state_dir / "openclaw.json").write_text(json.dumps(config))
    env = {k: v for k, v in host.env().items() if k != "OPENCLAW_GATEWAY_PORT"}

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
    assert snapshot["deliveryQueues"]["ingressPressure"] == []
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
    host = make_host("openclaw@2026.4.3", "@openclaw/matrix@2026.4.3")
    host.set_faults(ingress_pending=3, ready_delay_s=0)
    assert host.run("gateway", "start", timeout=10).returncode == 0
    pressure = host.json("health", "--json")["deliveryQueues"]["ingressPressure"]
    assert [(q["channelId"], q["pendingCount"]) for q in pressure] == [("matrix", 3)]


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
    update_faults(tmp_path, http_5xx=None, crash_on_start=True)
    assert set(read_faults(tmp_path)) == {
        "doctor_red",
        "ready_delay_s",
        "install_delay_s",
        "crash_on_start",
    }
    with pytest.raises(ValueError, match="unknown stand-in fault"):
        set_faults(tmp_path, doctor_blue=True)
    clear_faults(tmp_path)
    assert read_faults(tmp_path) == {}


def nested(plugin: str) -> str:
    return f"lib/node_modules/@openclaw/{plugin}/node_modules/openclaw"


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=1)[0] == 200
    except OSError:
        return False


def _doctor_errors(host: StandinHost) -> list[str]:
    findings = host.json("doctor", "--json")["findings"]
    return [f["checkId"] for f in findings if f["severity"] == "error"]
