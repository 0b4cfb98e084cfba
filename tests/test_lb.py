"""Load balancer drivers against the real thing: HAProxy 2.6, real files, real processes.

The HAProxy tests start `haproxy` in front of small HTTP servers (and, end to end, in front of
stand-in OpenClaw gateways installed by npm) and count what each backend really served, so a
"10% step" is checked as traffic, not as a number we wrote. Faults are real too: HAProxy
stopped or restarted, a slow request holding a session, a backend answering 500.
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from reconciler.desired.spec import LoadBalancer as LoadBalancerSpec
from reconciler.lb import LBConfigError, LBError, ServerStats, apply_weights, drain, from_spec
from reconciler.lb.command import CommandLB
from reconciler.lb.file import WeightsFile
from reconciler.lb.haproxy import HAProxy, Snapshot, parse_show_stat
from reconciler.rollout.analysis import analyse, host_counters
from reconciler.sandbox.haproxy import HAProxyProcess
from reconciler.views import lbshow
from tests.fixtures.haproxy import HttpBackend, MakeBackends, MakeHAProxy, burst
from tests.fixtures.registry import StandinHost, http_get, pid_alive, wait_for

MakeHost = Callable[..., StandinHost]
Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def three(
    http_backends: MakeBackends, haproxy: MakeHAProxy
) -> tuple[HAProxyProcess, dict[str, HttpBackend]]:
    backends = http_backends("a", "b", "c")
    return haproxy(backends, weights={"a": 100, "b": 100, "c": 100}, tcp_socket=True), backends


def _hits(backends: dict[str, HttpBackend]) -> dict[str, int]:
    return {name: b.hits for name, b in backends.items()}


# --- HAProxy: weights and traffic --------------------------------------------------------------


def test_weights_round_trip_and_get_weight(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, _ = three
    lb = hp.driver()
    assert lb.weights() == {"a": 100, "b": 100, "c": 100}
    lb.set_weight("a", 10)
    assert lb.weights() == {"a": 10, "b": 100, "c": 100}
    assert lb.get_weight("a") == (10, 100)  # HAProxy prints `10 (initial 100)`
    assert lb.initial_weights() == {"a": 100, "b": 100, "c": 100}
    apply_weights(lb, {"a": 0, "b": 256})
    assert lb.weights() == {"a": 0, "b": 256, "c": 100}


def test_burst_splits_traffic_by_weight(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, backends = three
    apply_weights(hp.driver(), {"a": 10, "b": 0, "c": 90})
    statuses = burst(hp.frontend_url + "/", 300)
    hits = _hits(backends)
    assert statuses == {200: 300}
    assert hits["b"] == 0
    assert abs(hits["a"] - 30) <= 6 and abs(hits["c"] - 270) <= 6, hits
    stats = hp.driver().stats()
    assert {n: s.requests for n, s in stats.items()} == hits  # stot counts what was served


def test_tcp_stats_socket_works_like_the_unix_one(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, _ = three
    assert hp.tcp_address and hp.tcp_address.startswith("tcp://127.0.0.1:")
    lb = hp.driver(tcp=True)
    lb.set_weight("c", 42)
    assert lb.weights()["c"] == 42 == hp.driver().weights()["c"]
    assert set(lb.stats()) == {"a", "b", "c"}


def test_from_spec_builds_the_haproxy_driver(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, _ = three
    spec = LoadBalancerSpec(driver="haproxy", address=hp.socket_address, backend="gateways")
    lb = from_spec(spec)
    assert isinstance(lb, HAProxy) and lb.timeout == 10.0
    assert lb.weights() == {"a": 100, "b": 100, "c": 100}


def test_states_snapshot_and_restore(three: tuple[HAProxyProcess, dict[str, HttpBackend]]) -> None:
    hp, backends = three
    lb = hp.driver()
    before = lb.snapshot()
    lb.set_state("a", "drain")
    lb.set_state("b", "maint")
    lb.set_weight("c", 7)
    assert {n: s.state for n, s in lb.server_states().items()} == {
        "a": "drain",
        "b": "maint",
        "c": "ready",
    }
    status = {n: s.status for n, s in lb.stats().items()}
    assert status["a"] == "DRAIN" and status["b"].startswith("MAINT")
    burst(hp.frontend_url + "/", 20)
    assert _hits(backends) == {"a": 0, "b": 0, "c": 20}
    lb.restore(Snapshot.from_dict(json.loads(json.dumps(before.as_dict()))))
    assert lb.snapshot() == before


def test_weight_zero_keeps_status_up_but_gets_no_traffic(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, backends = three
    hp.driver().set_weight("b", 0)
    burst(hp.frontend_url + "/", 30)
    assert hp.driver().stats()["b"].status == "UP"  # only `state drain` shows DRAIN
    assert _hits(backends)["b"] == 0


# --- HAProxy: drain ----------------------------------------------------------------------------


def test_drain_waits_for_a_slow_request(http_backends: MakeBackends, haproxy: MakeHAProxy) -> None:
    backends = http_backends("a", "b", delay=1.5)
    hp = haproxy(backends, weights={"a": 100, "b": 0})
    lb = hp.driver()
    result: Counter[object] = Counter()
    started = time.monotonic()
    request = threading.Thread(target=lambda: result.update(burst(hp.frontend_url + "/slow", 1)))
    request.start()
    try:
        wait_for(lambda: lb.stats()["a"].sessions == 1, timeout=5, what="a slow session on a")
        t0 = time.monotonic()
        assert drain(lb, ["a"], timeout=0.3, poll=0.05) is False
        assert 0.3 <= time.monotonic() - t0 < 1.0
        assert drain(lb, ["a"], timeout=5, poll=0.05) is True
        assert 1.3 <= time.monotonic() - started < 3.0
    finally:
        request.join(timeout=10)
    assert result == {200: 1}
    assert lb.weights() == {"a": 0, "b": 0}


# --- HAProxy: counters and analysis ------------------------------------------------------------


def test_stats_count_5xx_and_analysis_fails_the_bad_server(
    http_backends: MakeBackends, haproxy: MakeHAProxy
) -> None:
    backends = {**http_backends("ok"), **http_backends("bad", status=500)}
    hp = haproxy(backends, weights={"ok": 50, "bad": 50})
    lb = hp.driver()
    before = lb.stats()
    assert burst(hp.frontend_url + "/", 40) == {200: 20, 500: 20}
    after = lb.stats()
    assert (after["bad"].requests, after["bad"].responses_5xx) == (20, 20)
    assert (after["ok"].requests, after["ok"].responses_5xx) == (20, 0)
    bad = analyse(before["bad"], after["bad"], max_5xx_ratio=0.05, min_requests=10)
    assert (bad.ok, bad.requests, bad.errors_5xx, bad.ratio) == (False, 20, 20, 1.0)
    good = analyse(before["ok"], after["ok"], max_5xx_ratio=0.05, min_requests=10)
    assert good.ok and good.errors_5xx == 0


def test_restart_resets_weights_and_counters(
    http_backends: MakeBackends, haproxy: MakeHAProxy
) -> None:
    backends = http_backends("a", "b")
    hp = haproxy(backends, weights={"a": 100, "b": 100})
    lb = hp.driver()
    expected = {"a": 10, "b": 100}
    apply_weights(lb, expected)
    burst(hp.frontend_url + "/", 22)
    before = lb.stats()
    pid = lb.info()["Pid"]
    hp.restart()
    assert lb.info()["Pid"] != pid
    assert lb.weights() == lb.initial_weights() == {"a": 100, "b": 100} != expected
    burst(hp.frontend_url + "/", 4)
    after = lb.stats()
    assert {n: s.requests for n, s in before.items()} == {"a": 2, "b": 20}
    assert {n: s.requests for n, s in after.items()} == {"a": 2, "b": 2}
    verdict = analyse(before, after, max_5xx_ratio=0.05)
    assert verdict.resets == ("b",) and verdict.requests == 2  # a's counter did not go back
    assert "counters of b reset" in verdict.reason
    told = analyse(before, after, max_5xx_ratio=0.05, restarted=True)
    assert told.resets == ("a", "b") and told.requests == 4
    apply_weights(lb, expected)  # what the reconciler does once it notices
    assert lb.weights() == expected


# --- HAProxy: errors -------------------------------------------------------------------------


def test_unknown_server_and_backend_are_config_errors(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, _ = three
    lb = hp.driver()
    with pytest.raises(LBConfigError, match="No such server"):
        lb.set_weight("nope", 5)
    with pytest.raises(LBConfigError, match="No such server"):
        lb.get_weight("nope")
    with pytest.raises(LBConfigError, match="No such server"):
        lb.set_state("nope", "drain")
    other = HAProxy(hp.socket_address, "elsewhere", timeout=2)
    with pytest.raises(LBConfigError, match="Can't find backend"):
        other.weights()
    with pytest.raises(LBConfigError, match="No such proxy"):
        other.stats()
    with pytest.raises(LBConfigError, match="No such backend"):
        other.set_weight("a", 1)
    with pytest.raises(LBConfigError, match="0-256"):
        lb.set_weight("a", 257)


@pytest.mark.parametrize(
    "name", ["a\nset weight gateways/b 0", "a;set weight gateways/b 0", "a b", "", "a/b"]
)
def test_names_that_would_inject_a_command_never_reach_the_socket(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]], name: str
) -> None:
    hp, _ = three
    lb = hp.driver()
    with pytest.raises(LBConfigError, match="not a plain identifier"):
        lb.set_weight(name, 1)
    with pytest.raises(LBConfigError):
        lb.command(f"get weight gateways/{name}\nshow info" if name else "show info;show stat")
    assert lb.weights() == {"a": 100, "b": 100, "c": 100}
    with pytest.raises(LBConfigError):
        HAProxy(hp.socket_address, name or "x y", timeout=1)


def test_stopped_haproxy_is_a_quick_lb_error(
    three: tuple[HAProxyProcess, dict[str, HttpBackend]],
) -> None:
    hp, _ = three
    unix, tcp = hp.driver(), hp.driver(tcp=True)
    hp.stop()
    for lb in (unix, tcp):
        t0 = time.monotonic()
        with pytest.raises(LBError, match="Connection refused") as info:
            lb.weights()
        assert lb.address in str(info.value)
        assert time.monotonic() - t0 < 0.5
    with pytest.raises(LBError, match="No such file"):
        HAProxy("unix:///nonexistent/admin.sock", "gateways", timeout=1).stats()
    with pytest.raises(LBError):
        drain(unix, ["a"], timeout=1)  # nothing is drained when the LB is unreachable


def test_a_socket_that_never_answers_times_out(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        lb = HAProxy(f"unix://{path}", "gateways", timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(LBError, match="no answer"):
            lb.weights()
        assert 0.3 <= time.monotonic() - t0 < 1.0


@pytest.mark.parametrize(
    "address", ["http://127.0.0.1:1", "unix://", "tcp://host", "tcp://h:99999"]
)
def test_bad_addresses_are_config_errors(address: str) -> None:
    with pytest.raises(LBConfigError, match="expected unix"):
        HAProxy(address, "gateways")


def test_parse_show_stat_ignores_frontend_backend_and_empty_fields() -> None:
    text = (
        "# pxname,svname,scur,stot,status,weight,hrsp_5xx,\n"
        "fe,FRONTEND,1,9,OPEN,,0,\n"
        "be,a,2,7,UP,10,3,\n"
        "be,t,0,5,UP,1,,\n"
        "be,BACKEND,2,12,UP,11,3,\n"
        "other,a,0,0,UP,1,0,\n"
    )
    assert parse_show_stat(text, "be") == [
        ServerStats("a", weight=10, sessions=2, requests=7, responses_5xx=3, status="UP"),
        ServerStats("t", weight=1, sessions=0, requests=5, responses_5xx=0, status="UP"),
    ]


# --- lb show -------------------------------------------------------------------------------


def test_lb_show_plain_and_rich(three: tuple[HAProxyProcess, dict[str, HttpBackend]]) -> None:
    hp, _ = three
    lb = hp.driver()
    lb.set_weight("b", 0)
    burst(hp.frontend_url + "/", 4)
    rows = lbshow.lb_rows(lb, ["a", "b", "zz"])
    assert [(r["server"], r["weight"], r["status"]) for r in rows] == [
        ("a", 100, "UP"),
        ("b", 0, "UP"),
        ("zz", None, "not in LB"),
    ]
    plain = io.StringIO()
    lbshow.show(lb, Console(file=plain, force_terminal=False, width=200))
    lines = plain.getvalue().splitlines()
    assert lines[0].split() == [
        "server",
        "weight",
        "status",
        "sessions",
        "requests",
        "5xx",
        "5xx",
        "%",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["a", "100", "UP"],
        ["b", "0", "UP"],
        ["c", "100", "UP"],
    ]
    rich = io.StringIO()
    lbshow.show(lb, Console(file=rich, force_terminal=True, width=120))
    assert "server" in rich.getvalue() and "weight" in rich.getvalue()


# --- end to end with stand-in gateways ---------------------------------------------------------


@pytest.fixture
def gateways(make_host: MakeHost, spawn: Spawn) -> dict[str, StandinHost]:
    """Three stand-in OpenClaw gateways (installed by npm from the test registry), ready."""
    hosts = {}
    for name in ("mac-1", "mac-2", "mac-3"):
        host = make_host("openclaw@2026.4.3", name=name)
        host.set_faults(ready_delay_s=0)
        argv = [str(host.bin), "gateway", "run", "--port", str(host.port), "--bind", "loopback"]
        spawn([*argv, "--token", host.token], host.env())
        hosts[name] = host
    for host in hosts.values():
        wait_for(functools.partial(_ready, host), what=f"{host.name} /readyz")
    return hosts


def _ready(host: StandinHost) -> bool:
    try:
        return http_get(host.url("/readyz"), timeout=1)[0] == 200
    except OSError:
        return False


def _served_by(status: int, body: bytes) -> object:
    return json.loads(body)["port"]


def test_standin_gateways_split_then_a_5xx_canary_fails_and_is_restored(
    gateways: dict[str, StandinHost], haproxy: MakeHAProxy
) -> None:
    ports = {name: host.port for name, host in gateways.items()}
    hp = haproxy(ports, check_path="/readyz")
    lb = hp.driver()
    bookmark = lb.snapshot()
    assert drain(lb, ["mac-1"], timeout=2, poll=0.05)
    apply_weights(lb, {"mac-1": 10, "mac-2": 0, "mac-3": 90})
    served = burst(hp.frontend_url + "/hooks/status", 300, key=_served_by)
    by_host = {name: served.get(port, 0) for name, port in ports.items()}
    assert by_host["mac-2"] == 0
    assert abs(by_host["mac-1"] - 30) <= 6 and abs(by_host["mac-3"] - 270) <= 6, by_host

    gateways["mac-1"].set_faults(http_5xx=True, ready_delay_s=0)  # the upgraded host goes bad
    before = host_counters(lb.stats(), ["mac-1"])
    assert burst(hp.frontend_url + "/", 100).get(503, 0) == 10
    verdict = analyse(
        before, host_counters(lb.stats(), ["mac-1"]), max_5xx_ratio=0.05, min_requests=5
    )
    assert not verdict.ok and (verdict.requests, verdict.errors_5xx) == (10, 10)
    assert "above the maximum" in verdict.reason

    lb.restore(bookmark)
    assert lb.weights() == {"mac-1": 100, "mac-2": 100, "mac-3": 100}


# --- the command driver ----------------------------------------------------------------------

LBCTL = textwrap.dedent(
    """\
    import json, os, subprocess, sys, time
    state, op, *args = sys.argv[1:]
    mode = os.environ.get("LBCTL_MODE", "")
    if mode == "fail":
        print("some progress on stdout")
        sys.stderr.write("lbctl: backend API answered 503\\n")
        sys.exit(3)
    if mode in ("hang", "child"):
        with open(state + ".pid", "w") as f:
            f.write(str(os.getpid()))
        if mode == "child":
            child = subprocess.Popen(["sleep", "30"])
            with open(state + ".child", "w") as f:
                f.write(str(child.pid))
        time.sleep(30)
    if mode == "noise":
        sys.stdout.write("x" * 3_000_000)
        sys.exit(0)
    if mode == "garbage":
        print("weights: a=1")
        sys.exit(0)
    with open(state) as f:
        weights = json.load(f)
    if op == "get":
        print(json.dumps({"servers": weights} if mode == "wrapped" else weights))
    elif op == "set":
        server, weight = args
        weights[server] = int(weight.removeprefix("--weight="))
        with open(state + ".tmp", "w") as f:
            json.dump(weights, f)
        os.replace(state + ".tmp", state)
    elif op == "stats":
        print(json.dumps({s: {"sessions": 0, "requests": 10 * w, "responses_5xx": 1}
                          for s, w in weights.items()}))
    """
)


@pytest.fixture
def lbctl(tmp_path: Path) -> Iterator[Callable[..., CommandLB]]:
    script = tmp_path / "lbctl.py"
    script.write_text(LBCTL)
    state = tmp_path / "weights.json"
    state.write_text(json.dumps({"mac-1": 100, "mac-2": 100}))
    pids: list[Path] = [Path(f"{state}.pid"), Path(f"{state}.child")]

    def make(mode: str = "", *, timeout: float = 5.0, stats: bool = True) -> CommandLB:
        base = [sys.executable, str(script), str(state)]
        commands = {"get": [*base, "get"], "set": [*base, "set", "{server}", "--weight={weight}"]}
        if stats:
            commands["stats"] = [*base, "stats"]
        env = {"PATH": "/usr/bin:/bin", "LBCTL_MODE": mode}
        return CommandLB(commands, timeout=timeout, env=env, pass_env=["LBCTL_MODE"])

    yield make
    for pid_file in pids:  # nothing the driver started may outlive a test
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if pid_alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)
                pytest.fail(f"process {pid} outlived its command")


def test_command_driver_round_trip(lbctl: Callable[..., CommandLB], tmp_path: Path) -> None:
    lb = lbctl()
    assert lb.weights() == {"mac-1": 100, "mac-2": 100}
    apply_weights(lb, {"mac-1": 10, "mac-2": 0})
    assert json.loads((tmp_path / "weights.json").read_text()) == {"mac-1": 10, "mac-2": 0}
    stats = lb.stats()
    assert stats["mac-1"] == ServerStats(
        "mac-1", weight=10, sessions=0, requests=100, responses_5xx=1
    )
    assert drain(lb, ["mac-1"], timeout=1, poll=0.01) is True
    assert lbctl("wrapped").weights() == {"mac-1": 0, "mac-2": 0}
    assert lbctl(stats=False).stats()["mac-2"] == ServerStats("mac-2", weight=0)


def test_command_driver_errors_name_the_command(lbctl: Callable[..., CommandLB]) -> None:
    with pytest.raises(LBError, match=r"exited 3: lbctl: backend API answered 503") as info:
        lbctl("fail").weights()
    assert "lbctl.py" in str(info.value) and " get" in str(info.value)
    with pytest.raises(LBError, match="printed no JSON"):
        lbctl("garbage").weights()
    with pytest.raises(LBError, match="printed more than"):
        lbctl("noise").weights()
    with pytest.raises(LBConfigError, match="no server 'mac-9'"):
        lbctl().set_weight("mac-9", 1)
    with pytest.raises(LBConfigError, match="not a plain name"):
        lbctl().set_weight("mac-1 mac-2", 1)


@pytest.mark.parametrize("mode", ["hang", "child"])
def test_command_driver_kills_a_hanging_command_at_its_timeout(
    lbctl: Callable[..., CommandLB], tmp_path: Path, mode: str
) -> None:
    t0 = time.monotonic()
    with pytest.raises(LBError, match=r"timed out after 0.5s"):
        lbctl(mode, timeout=0.5).weights()
    assert time.monotonic() - t0 < 2.0
    for name in ("weights.json.pid", "weights.json.child"):
        pid_file = tmp_path / name
        if pid_file.exists():
            pid = int(pid_file.read_text())
            wait_for(lambda: not pid_alive(pid), timeout=2, what=name)  # noqa: B023


def test_command_driver_config_errors(tmp_path: Path) -> None:
    with pytest.raises(LBConfigError, match=r"needs commands\.set"):
        CommandLB({"get": ["true"]})
    with pytest.raises(LBConfigError, match="unknown placeholders"):
        CommandLB({"get": ["true"], "set": ["x", "{host}"]})
    with pytest.raises(LBConfigError, match="unknown placeholders"):
        CommandLB({"get": ["x", "{server}"], "set": ["x"]})
    lb = CommandLB({"get": [str(tmp_path / "missing")], "set": ["true"]})
    with pytest.raises(LBConfigError, match="cannot run get"):
        lb.weights()
    spec = LoadBalancerSpec(driver="command", commands={"get": ["true"], "set": ["true"]})
    assert isinstance(from_spec(spec), CommandLB)


# --- the weights-file driver -------------------------------------------------------------------


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"servers": {"mac-1": 100, "mac-2": 100}}))
    return path


def test_file_driver_round_trip_and_history(weights_file: Path) -> None:
    lb = WeightsFile(weights_file)
    apply_weights(lb, {"mac-1": 10, "mac-2": 100})
    assert json.loads(weights_file.read_text()) == {"servers": {"mac-1": 10, "mac-2": 100}}
    lb.set_weight("mac-1", 10)  # unchanged: no write, no history line
    assert drain(lb, ["mac-2"], timeout=1, poll=0.01) is True
    history = [json.loads(line) for line in lb.history.read_text().splitlines()]
    assert [(h["server"], h["weight"]) for h in history] == [("mac-1", 10), ("mac-2", 0)]
    assert history[0]["t"] <= history[1]["t"]
    assert lb.stats()["mac-1"] == ServerStats("mac-1", weight=10)


def test_file_driver_replaces_atomically(weights_file: Path) -> None:
    lb = WeightsFile(weights_file)
    original = weights_file.open("rb")  # held open, so its inode cannot be reused meanwhile
    inode = os.fstat(original.fileno()).st_ino
    seen: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(json.loads(weights_file.read_text())["servers"]["mac-1"])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for weight in range(100):
            lb.set_weight("mac-1", weight)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert weights_file.stat().st_ino != inode  # a new file renamed over, never rewritten
    original.close()
    assert seen and all(isinstance(w, int) for w in seen)  # never half a document
    assert sorted(p.name for p in weights_file.parent.iterdir()) == [
        "weights.json",
        "weights.json.history.jsonl",
    ]


def test_file_driver_errors(weights_file: Path, tmp_path: Path) -> None:
    with pytest.raises(LBConfigError, match="no server 'mac-9'"):
        WeightsFile(weights_file).set_weight("mac-9", 1)
    with pytest.raises(LBError, match="not found"):
        WeightsFile(tmp_path / "missing.json").weights()
    (tmp_path / "bad.json").write_text('{"servers": {"mac-1": "heavy"}}')
    with pytest.raises(LBError, match="expected"):
        WeightsFile(tmp_path / "bad.json").weights()
    spec = LoadBalancerSpec(driver="file", address="weights.json")
    assert from_spec(spec, base_dir=tmp_path).weights() == {"mac-1": 100, "mac-2": 100}


# --- analysis (pure) ---------------------------------------------------------------------------


def _s(server: str, requests: int, errors: int) -> ServerStats:
    return ServerStats(server, weight=10, requests=requests, responses_5xx=errors)


def test_analysis_pass_fail_and_threshold() -> None:
    ok = analyse(_s("a", 100, 1), _s("a", 300, 3), max_5xx_ratio=0.05, min_requests=50)
    assert (ok.ok, ok.requests, ok.errors_5xx, ok.ratio) == (True, 200, 2, 0.01)
    assert "within" in ok.reason and not ok.inconclusive
    bad = analyse(_s("a", 0, 0), _s("a", 100, 6), max_5xx_ratio=0.05, min_requests=50)
    assert not bad.ok and bad.ratio == 0.06 and "above the maximum 5.0%" in bad.reason
    edge = analyse(_s("a", 0, 0), _s("a", 100, 5), max_5xx_ratio=0.05)
    assert edge.ok  # at the maximum is allowed
    strict = analyse(_s("a", 0, 0), _s("a", 100, 1), max_5xx_ratio=0.0)
    assert not strict.ok


def test_analysis_inconclusive_depends_on_the_policy() -> None:
    lenient = analyse(_s("a", 10, 0), _s("a", 13, 3), max_5xx_ratio=0.05, min_requests=20)
    assert lenient.ok and lenient.inconclusive and lenient.reason.startswith("inconclusive")
    assert (lenient.requests, lenient.errors_5xx) == (3, 3)
    strict = analyse(
        _s("a", 10, 0),
        _s("a", 13, 3),
        max_5xx_ratio=0.05,
        min_requests=20,
        fail_on_inconclusive=True,
    )
    assert not strict.ok and strict.inconclusive
    nothing = analyse(_s("a", 5, 0), _s("a", 5, 0), max_5xx_ratio=0.05)
    assert nothing.ok and nothing.requests == 0 and nothing.ratio == 0.0
    # A window without a single request judges nothing, whatever minRequests says.
    assert nothing.inconclusive and nothing.reason.startswith("inconclusive: 0 requests")
    one = analyse(_s("a", 5, 0), _s("a", 6, 0), max_5xx_ratio=0.05)
    assert one.ok and not one.inconclusive


def test_analysis_sums_a_hosts_servers_and_survives_counter_resets() -> None:
    before = {"mac-1": _s("mac-1", 1000, 10), "mac-1-work": _s("mac-1-work", 50, 0)}
    after = {
        "mac-1": _s("mac-1", 20, 2),
        "mac-1-work": _s("mac-1-work", 80, 0),
        "mac-1-new": _s("mac-1-new", 5, 0),
    }
    verdict = analyse(before, after, max_5xx_ratio=0.1, min_requests=10)
    assert (verdict.requests, verdict.errors_5xx) == (20 + 30 + 5, 2)
    assert verdict.resets == ("mac-1",) and verdict.ok
    assert "counters of mac-1 reset" in verdict.reason
    assert "no reading at the start for mac-1-new" in verdict.reason
    only_5xx_reset = analyse(_s("a", 10, 5), _s("a", 12, 1), max_5xx_ratio=0.5)
    assert only_5xx_reset.resets == ("a",) and (
        only_5xx_reset.requests,
        only_5xx_reset.errors_5xx,
    ) == (12, 1)
    assert host_counters(after, ["mac-1", "mac-1-work"]).keys() == {"mac-1", "mac-1-work"}
