"""Fact parsers on REAL output: captured from the stand-in in the test verdaccio, and live.

The live tests produce each shape for real (npm installs over SSH, the stand-in's doctor,
health and gateway) and parse it through the transport. The same outputs are kept under
tests/data/ (with their argv and exit code in captured.json) so the parsers are also pinned on
exact bytes; regenerate them with `RECONCILER_CAPTURE=1 pytest tests/test_facts.py -k live`.
Malformed, truncated, binary and gigantic outputs must each give a FactParseError that names
the host and the command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import CommandFailed, FactParseError
from reconciler.hosts import facts, operations, productfacts
from reconciler.hosts.compare import differences
from reconciler.hosts.transport import CommandResult, Transport
from reconciler.record.documents import Finding, Installed
from reconciler.sandbox.processes import free_port
from tests.nodes import MakeNode, Node, fleet_spec, make_node

__all__ = ["make_node"]  # the fixture, imported for pytest

DATA = Path(__file__).parent / "data"
INDEX = DATA / "captured.json"
CAPTURE = os.environ.get("RECONCILER_CAPTURE") == "1"
MSTEAMS = "@openclaw/msteams"
DISCORD = "@openclaw/discord"
NESTED = "node_modules/@openclaw/msteams/node_modules/openclaw@2026.9.6"
INVALID_PEER = "invalid: openclaw@2026.4.3 node_modules/openclaw"
LOOPBACK = Finding(
    check_id="gateway.bind.loopback", severity="warning", message="Gateway binds only to loopback"
)

# What each captured output must parse to (the live tests assert the same on fresh output).
EXPECTED: dict[str, Any] = {
    "npm-ls-drift": Installed(core="2026.4.3", plugins={DISCORD: "2026.4.2"}),
    "npm-ls-nested": Installed(core="2026.4.3", plugins={MSTEAMS: "2026.9.6"}, duplicates=[NESTED]),
    "npm-ls-nested-all-openclaw": Installed(
        core="2026.4.3", plugins={MSTEAMS: "2026.9.6"}, duplicates=[NESTED]
    ),
    "npm-ls-legacy-peer-deps": Installed(
        core="2026.4.3", plugins={MSTEAMS: "2026.9.6"}, problems=[INVALID_PEER]
    ),
    "npm-ls-empty-prefix": Installed(core=None),
    "doctor-healthy": productfacts.Doctor(findings=(LOOPBACK,), ok=False, checks_run=35),
    "post-upgrade-drift": ["plugin.version_drift:warning"],
    "post-upgrade-red": ["plugin.version_drift:warning", "plugin.entry_unresolved:error"],
    "doctor-red": ["gateway.bind.loopback:warning", "config.schema.invalid:error"],
    "health-ok": productfacts.Health(reachable=True, ok=True),
    "probes-ready": ("2026.4.3", 200, 200, 200),
    "probes-down": (None, None, None, None),
    "openclaw-version": "2026.4.3",
    "node-version": None,  # whatever this machine runs; checked for shape only
}
PARSERS: dict[str, Callable[[str, CommandResult], Any]] = {
    "npm-ls": facts.parse_npm_ls,
    "doctor": productfacts.parse_doctor,
    "post-upgrade": productfacts.parse_doctor,
    "health": productfacts.parse_health,
    "probes": productfacts.parse_probes,
    "openclaw-version": facts.parse_openclaw,
    "node-version": facts.parse_node,
}


def parser_for(name: str) -> Callable[[str, CommandResult], Any]:
    return next(parse for prefix, parse in PARSERS.items() if name.startswith(prefix))


def summarize(name: str, parsed: Any) -> Any:
    """The parsed value in the form EXPECTED uses."""
    if isinstance(parsed, productfacts.Doctor) and isinstance(EXPECTED.get(name), list):
        return [f"{f.check_id}:{f.severity}" for f in parsed.findings]
    if isinstance(parsed, productfacts.Probes):
        return (parsed.running_version, *(p.status for p in parsed))
    if isinstance(parsed, productfacts.Health):
        return productfacts.Health(reachable=parsed.reachable, ok=parsed.ok)
    return parsed


def check(name: str, parsed: Any) -> None:
    if name == "node-version":
        assert facts.VERSION_RE.match(parsed)
        return
    assert summarize(name, parsed) == EXPECTED[name]


# --- capturing real output --------------------------------------------------------------------


class Recorder:
    """Runs a fact live; in capture mode also stores its exact output under tests/data/."""

    def __init__(self) -> None:
        self.index: dict[str, Any] = json.loads(INDEX.read_text()) if INDEX.exists() else {}

    def run(self, name: str, transport: Transport, fact: facts.Fact[Any]) -> Any:
        result = transport.run(fact.argv, timeout=60, env=fact.env, max_output=fact.max_output)
        if CAPTURE:
            (DATA / f"{name}.out").write_bytes(result.stdout)
            self.index[name] = {"argv": list(result.argv), "exitCode": result.exit_code}
        parsed = fact.parse(transport.host, result)
        check(name, parsed)
        return parsed

    def save(self) -> None:
        if CAPTURE:
            INDEX.write_text(json.dumps(self.index, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    DATA.mkdir(exist_ok=True)
    made = Recorder()
    yield made
    made.save()


def host_with(make_node: MakeNode, name: str, *specs: str, flags: tuple[str, ...] = ()) -> tuple[
    Node, Transport
]:  # fmt: skip
    """A node with `specs` installed by plain `npm i -g` over SSH (as an operator would)."""
    node = make_node(name)
    fleet = fleet_spec(node.registry.url, [node.host()])
    transport = node.transport(fleet)
    if specs:
        argv = ["npm", "i", "-g", "--prefix", str(node.prefix), "--registry", node.registry.url]
        done = transport.run([*argv, *flags, *specs], timeout=120)
        assert done.ok, done.error_text()
    return node, transport


def test_live_npm_trees(make_node: MakeNode, recorder: Recorder) -> None:
    drift_node, drift = host_with(make_node, "drift", "openclaw@2026.4.3", f"{DISCORD}@2026.4.2")
    node, nested = host_with(make_node, "nested", "openclaw@2026.4.3", f"{MSTEAMS}@2026.9.6")
    legacy_node, legacy = host_with(
        make_node, "legacy", "openclaw@2026.4.3", f"{MSTEAMS}@2026.9.6",
        flags=("--legacy-peer-deps",),
    )  # fmt: skip
    empty_node, empty = host_with(make_node, "empty")

    recorder.run("npm-ls-drift", drift, facts.npm_tree(str(drift_node.prefix)))
    recorder.run("npm-ls-nested", nested, facts.npm_tree(str(node.prefix)))
    recorder.run("npm-ls-nested-all-openclaw", nested, facts.openclaw_copies(str(node.prefix)))
    recorder.run("npm-ls-legacy-peer-deps", legacy, facts.npm_tree(str(legacy_node.prefix)))
    recorder.run("npm-ls-empty-prefix", empty, facts.npm_tree(str(empty_node.prefix)))

    # The fast reader (package.json files, one node process) says exactly what npm says, on
    # every real shape: drift, a nested second copy, an invalid peer, an empty prefix.
    for n, t in ((drift_node, drift), (node, nested), (legacy_node, legacy), (empty_node, empty)):
        assert facts.installed(t, str(n.prefix), timeout=30) == facts.installed_by_npm(
            t, str(n.prefix), timeout=30
        ), n.name
    merged = facts.installed(nested, str(node.prefix), timeout=30)
    assert merged == EXPECTED["npm-ls-nested"]
    legacy_tree = facts.installed(legacy, str(legacy_node.prefix), timeout=30)
    assert legacy_tree.problems == [INVALID_PEER]
    assert list(differences(legacy_tree, {"openclaw": "2026.4.3", MSTEAMS: "2026.9.6"})) == [
        f"npm reports: {INVALID_PEER}"
    ]


def test_live_doctor_health_and_probes(make_node: MakeNode, recorder: Recorder) -> None:
    node, transport = host_with(make_node, "doc", "openclaw@2026.4.3")
    # The product discovers only tracked plugin installs (not one npm-installed beside the core).
    argv = ["openclaw", "plugins", "install", f"npm:{DISCORD}@2026.4.2", "--pin"]
    pin = transport.run(argv, timeout=120)
    assert pin.ok, pin.error_text()
    fleet = fleet_spec(node.registry.url, [node.host()])
    host = fleet.host("doc")
    env = facts.profile_env(host.profiles[0])

    assert facts.gather(transport, facts.registry_ping(node.registry.url), timeout=30)
    dead = f"http://127.0.0.1:{free_port()}/"
    assert not facts.gather(transport, facts.registry_ping(dead), timeout=30)
    recorder.run("openclaw-version", transport, facts.openclaw_version(env))
    recorder.run("node-version", transport, facts.node_version())
    recorder.run("probes-down", transport, productfacts.probes(node.port))
    unreachable = facts.gather(transport, productfacts.health(env), timeout=30)
    assert not unreachable.reachable and "ECONNREFUSED" in unreachable.detail
    recorder.run("doctor-healthy", transport, productfacts.doctor(env))
    recorder.run("post-upgrade-drift", transport, productfacts.post_upgrade(env))

    operations.restart(fleet, host, host.profiles[0], transport)
    operations.wait_ready(fleet, host, host.profiles[0], transport, timeout=15)
    recorder.run("probes-ready", transport, productfacts.probes(node.port))
    recorder.run("health-ok", transport, productfacts.health(env))

    # A glance (one process) reads what the tree reader and the probes read, port by port.
    dead = free_port()
    glance = facts.gather(
        transport, productfacts.glance(str(node.prefix), [node.port, dead]), timeout=30
    )
    apart = facts.gather(transport, facts.host_tree(str(node.prefix)), timeout=30)
    # The same tree, Node and filesystem; the free space itself moves between two reads.
    assert replace(glance.tree, available_kb=None) == replace(apart, available_kb=None)
    assert glance.tree.available_kb and apart.available_kb
    assert [summarize("probes", p) for p in glance.probes] == [
        EXPECTED["probes-ready"],
        EXPECTED["probes-down"],
    ]
    # Waiting for readiness: a ready port answers at once, a dead one only when the wait ends.
    ready = productfacts.glance(str(node.prefix), [node.port], wait_s=30)
    assert (
        summarize("probes", facts.gather(transport, ready, timeout=60).probes[0])
        == (EXPECTED["probes-ready"])
    )
    gone = productfacts.glance(str(node.prefix), [dead], wait_s=0.3, every_s=0.05)
    waited = facts.gather(transport, gone, timeout=30)
    assert summarize("probes", waited.probes[0]) == EXPECTED["probes-down"]

    node.set_faults(doctor_red=True)
    recorder.run("doctor-red", transport, productfacts.doctor(env))
    recorder.run(
        "post-upgrade-red", transport, productfacts.post_upgrade(env)
    )  # exits 1: still read


# --- the captured files -----------------------------------------------------------------------


def captured() -> list[str]:
    return sorted(json.loads(INDEX.read_text())) if INDEX.exists() else []


def load(name: str) -> CommandResult:
    meta = json.loads(INDEX.read_text())[name]
    stdout = (DATA / f"{name}.out").read_bytes()
    return CommandResult(tuple(meta["argv"]), meta["exitCode"], stdout, b"", 0.1, False)


@pytest.mark.parametrize("name", captured())
def test_captured_output_parses(name: str) -> None:
    check(name, parser_for(name)("mac-1", load(name)))


def test_captured_exit_codes_are_the_real_ones() -> None:
    index = json.loads(INDEX.read_text())
    assert index["npm-ls-legacy-peer-deps"]["exitCode"] == 1  # ELSPROBLEMS
    assert index["npm-ls-nested"]["exitCode"] == 0  # npm is silent about the second copy
    assert index["npm-ls-empty-prefix"]["exitCode"] != 0  # ENOENT: an empty tree for us
    assert index["post-upgrade-red"]["exitCode"] == 1
    assert index["doctor-red"]["exitCode"] == 0  # doctor exits 0 with error findings


# --- bad output -----------------------------------------------------------------------------

GOOD = {name: load(name) for name in captured()}
BAD_OUTPUTS: dict[str, Callable[[bytes], tuple[bytes, bool]]] = {
    "empty": lambda good: (b"", False),
    "not json": lambda good: (b"npm ERR! something went wrong\n", False),
    "cut in half": lambda good: (good[: len(good) // 2], False),
    "truncated by the transport": lambda good: (good, True),
    "binary garbage": lambda good: (bytes(range(256)) * 4, False),
    "not utf-8": lambda good: (b'{"findings": ["\xff\xfe"]}', False),
    "gigantic": lambda good: (b"[" + b"1," * (9 * 1024 * 1024) + b"1]", False),
    "wrong shape": lambda good: (b'{"findings": "none", "dependencies": [1, 2]}', False),
}
JSON_FACTS = [
    "npm-ls-nested",
    "doctor-healthy",
    "post-upgrade-red",
    "probes-ready",
    "health-ok",
]


@pytest.mark.parametrize("bad", sorted(BAD_OUTPUTS))
@pytest.mark.parametrize("name", JSON_FACTS)
def test_bad_output_is_a_fact_parse_error(name: str, bad: str) -> None:
    good = GOOD[name]
    stdout, truncated = BAD_OUTPUTS[bad](good.stdout)
    exit_code = 1 if name == "health-ok" and bad == "empty" else good.exit_code
    result = CommandResult(good.argv, exit_code, stdout, b"", 0.1, truncated)
    if name == "health-ok" and bad == "empty":
        assert not productfacts.parse_health(
            "mac-1", result
        ).reachable  # exit 1, no report: a result
        return
    with pytest.raises(FactParseError) as caught:
        parser_for(name)("mac-1", result)
    message = str(caught.value)
    assert message.startswith("mac-1: `") and good.argv[0] in message
    assert len(message) < 600


GLANCE_ARGV = productfacts.glance("/p", [18789]).argv


@pytest.mark.parametrize(
    "stdout",
    [
        b"",
        b"[]",
        b'{"probes": [[]]}',
        b'{"tree": [], "probes": []}',
        b'{"tree": {"packages": []}, "probes": []}',  # no copies list: not the reader's output
        b'{"tree": {"packages": [], "copies": []}, "probes": {}}',
        b'{"tree": {"packages": [], "copies": []}, "probes": [[{"path": "/readyz"}]]}',
        bytes(range(256)),
    ],
)
def test_a_glance_that_is_not_one_is_a_fact_parse_error(stdout: bytes) -> None:
    result = CommandResult(GLANCE_ARGV, 0, stdout, b"", 0.1, False)
    with pytest.raises(FactParseError, match=r"^mac-1: `node"):
        productfacts.parse_glance("mac-1", result)


def test_a_glance_with_another_number_of_ports_than_asked_is_refused() -> None:
    probes = [
        {"path": p, "status": None, "error": "ECONNREFUSED"} for p in productfacts.PROBE_PATHS
    ]
    doc = {"tree": {"packages": [], "copies": []}, "probes": [probes]}
    fact = productfacts.glance("/p", [18789, 18790])
    result = CommandResult(fact.argv, 0, json.dumps(doc).encode(), b"", 0.1, False)
    with pytest.raises(FactParseError, match="1 probe results for 2 ports"):
        fact.parse("mac-1", result)


def test_a_doctor_finding_without_a_known_severity_is_refused() -> None:
    good = GOOD["doctor-healthy"]
    report = json.loads(good.stdout)
    report["findings"][0]["severity"] = "catastrophic"
    result = CommandResult(good.argv, 0, json.dumps(report).encode(), b"", 0.1, False)
    with pytest.raises(FactParseError, match="known severity"):
        productfacts.parse_doctor("mac-1", result)


def test_noise_before_the_json_document_is_skipped() -> None:
    good = GOOD["doctor-healthy"]
    noisy = b"(node:123) ExperimentalWarning: something\n" + good.stdout
    result = CommandResult(good.argv, 0, noisy, b"", 0.1, False)
    assert productfacts.parse_doctor("mac-1", result) == EXPECTED["doctor-healthy"]


def test_npm_errors_other_than_problems_are_command_failures() -> None:
    body = {"error": {"code": "EACCES", "summary": "permission denied, scandir '/x/lib'"}}
    result = CommandResult(("npm", "ls"), 243, json.dumps(body).encode(), b"", 0.1, False)
    with pytest.raises(CommandFailed, match="npm EACCES: permission denied"):
        facts.parse_npm_ls("mac-1", result)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("OpenClaw 2026.9.6 (eb377ac)\n", "2026.9.6"),
        ("OpenClaw 2026.5.3-1\n", "2026.5.3-1"),
        ("openclaw/2026.7.1-beta.6 linux-x64 node-v22.22.3\n", "2026.7.1-beta.6"),
        ("2026.3.24\n", "2026.3.24"),
    ],
)
def test_openclaw_version_is_read_leniently(text: str, version: str) -> None:
    result = CommandResult(("openclaw", "--version"), 0, text.encode(), b"", 0.1, False)
    assert facts.parse_openclaw("mac-1", result) == version


def test_df_and_uid_and_prefix_parsers() -> None:
    df = (
        b"Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
        b"/dev/disk3s5    482797652 301234567 170000000      64% /System/Volumes/Data\n"
    )
    parsed = facts.parse_df("mac-1", CommandResult(("df",), 0, df, b"", 0.1, False))
    assert (parsed.free_mb, parsed.path) == (166015, "/System/Volumes/Data")
    with pytest.raises(FactParseError, match="not `df -Pk` output"):
        facts.parse_df("mac-1", CommandResult(("df",), 1, b"", b"df: no such file", 0.1, False))
    assert facts.parse_uid("mac-1", CommandResult(("id",), 0, b"501\n", b"", 0.1, False)) == 501
    with pytest.raises(FactParseError):
        facts.parse_prefix("mac-1", CommandResult(("npm",), 0, b"relative/path\n", b"", 0, False))
