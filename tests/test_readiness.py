"""Readiness documents observed on real sshd hosts running the stand-in gateway.

What peers must agree on (versions, the lock, doctor check ids and severities) is in the
fingerprint; what differs between hosts or between two looks at one host (names, ports, paths,
times, uptimes, weights) is not. These tests pin both halves, the verdict's reasons, and
several profiles on one host.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import jsonschema

from reconciler.desired.resolve import resolve_lock
from reconciler.desired.spec import Fleet
from reconciler.hosts import operations
from reconciler.hosts.readiness import observe, observe_all
from reconciler.hosts.transport import Transport
from reconciler.record.documents import (
    Finding,
    Installed,
    ProfileReadiness,
    Readiness,
    fingerprint_basis,
    fingerprint_of,
)
from reconciler.rollout.gates import differing_fields
from reconciler.sandbox.sshfleet import FleetHost
from reconciler.views import schemas
from tests.nodes import MakeNode, Node, fleet_spec, make_node

__all__ = ["make_node"]  # the fixture, imported for pytest

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DISCORD = "@openclaw/discord"
PINS = {"openclaw": "2026.4.3", DISCORD: "2026.4.3"}


def bring_up(fleet: Fleet, node: Node, transport: Transport, pins: Mapping[str, str]) -> None:
    """Install `pins`, restart every profile and wait until each is ready."""
    host = fleet.host(node.name)
    operations.install(fleet, host, transport, pins)
    for profile in host.profiles:
        operations.restart(fleet, host, profile, transport)
    for profile in host.profiles:
        operations.wait_ready(fleet, host, profile, transport, timeout=15)


def valid(doc: Readiness) -> Readiness:
    jsonschema.validate(doc.dump(), schemas.schema_of("readiness"))
    return doc


def test_peers_on_one_release_share_a_fingerprint_and_differ_in_readiness_sha(
    make_node: MakeNode,
) -> None:
    nodes = [make_node(name, sshd=i) for i, name in enumerate(("alpha", "beta", "gamma"))]
    fleet = fleet_spec(nodes[0].registry.url, [n.host() for n in nodes], plugins=PINS)
    lock = resolve_lock(fleet)
    transports = {n.name: n.transport(fleet) for n in nodes}
    for node in nodes:
        pins = {**PINS, DISCORD: "2026.4.2"} if node.name == "gamma" else PINS
        bring_up(fleet, node, transports[node.name], pins)

    weights = {"alpha": 100, "beta": 50, "gamma": 0}
    docs = observe_all(
        fleet, transports, lock=lock, spec_commit="c0ffee", lb_weights=weights, now=NOW
    )
    alpha, beta, gamma = (docs[n] for n in ("alpha", "beta", "gamma"))
    assert isinstance(alpha, Readiness) and isinstance(beta, Readiness)
    assert isinstance(gamma, Readiness)

    assert alpha.green and beta.green, (alpha.reasons, beta.reasons)
    assert alpha.fingerprint == beta.fingerprint
    assert alpha.readiness_sha256 != beta.readiness_sha256
    assert alpha.basis == beta.basis
    assert alpha.basis["lock"] == lock.sha256 == alpha.lock_sha256
    assert (alpha.profiles[0].lb_weight, beta.profiles[0].lb_weight) == (100, 50)
    assert alpha.profiles[0].running_version == "2026.4.3"
    assert alpha.free_disk_mb and alpha.free_disk_mb > 0

    # gamma runs an older plugin: another fingerprint, and the basis names the field.
    assert gamma.fingerprint != alpha.fingerprint
    fields = differing_fields(alpha, gamma)
    assert "plugins.@openclaw/discord: '2026.4.3' vs '2026.4.2'" in fields
    assert not gamma.green
    assert "differs from the lock: @openclaw/discord is 2026.4.2, wanted 2026.4.3" in (
        gamma.reasons
    )
    for doc in (alpha, beta, gamma):
        valid(doc)


def test_volatile_fields_stay_out_of_the_fingerprint(make_node: MakeNode) -> None:
    node = make_node("delta")
    fleet = fleet_spec(node.registry.url, [node.host()], plugins=PINS)
    transport = node.transport(fleet)
    bring_up(fleet, node, transport, PINS)
    host = fleet.host("delta")

    first = observe(
        fleet, host, transport, lock=None, spec_commit="a", lb_weights={"delta": 100}, now=NOW
    )
    operations.restart(fleet, host, host.profiles[0], transport)  # new pid, new uptime
    operations.wait_ready(fleet, host, host.profiles[0], transport, timeout=15)
    later = NOW + timedelta(hours=1)
    second = observe(
        fleet, host, transport, lock=None, spec_commit="b", lb_weights={"delta": 10}, now=later
    )
    assert first.green and second.green
    assert first.fingerprint == second.fingerprint
    assert first.readiness_sha256 != second.readiness_sha256

    # The same, without hosts: ports, weights, probe states and duplicate paths do not count.
    a = ProfileReadiness(profile="default", port=1, lb_weight=0, readyz=False, running_version="1")
    b = a.model_copy(update={"port": 2, "lb_weight": 100, "readyz": True, "healthz": True})
    tree_a = Installed(core="1", duplicates=["x/node_modules/openclaw@2"])
    tree_b = Installed(core="1", duplicates=["y/z/node_modules/openclaw@2"])
    assert fingerprint_of("l", tree_a, [a]) == fingerprint_of("l", tree_b, [b])
    warned = a.model_copy(update={"doctor": [Finding(check_id="c", severity="warning")]})
    assert fingerprint_of("l", tree_a, [a]) != fingerprint_of("l", tree_a, [warned])
    assert fingerprint_basis("l", tree_a, [warned])["doctor"] == [["c", "warning"]]


def test_doctor_findings_decide_against_the_threshold_not_the_exit_code(
    make_node: MakeNode,
) -> None:
    node = make_node("eps")
    fleet = fleet_spec(node.registry.url, [node.host()])
    transport = node.transport(fleet)
    bring_up(fleet, node, transport, {"openclaw": "2026.4.3"})
    host = fleet.host("eps")

    healthy = observe(fleet, host, transport, lock=None, spec_commit=None, lb_weights={}, now=NOW)
    assert healthy.green  # doctor says ok:false (one warning); the threshold is `error`
    assert [f.check_id for f in healthy.profiles[0].doctor] == ["gateway.bind.loopback"]

    strict = fleet.model_copy(
        update={"rollout": fleet.rollout.model_copy(update={"doctor_threshold": "warning"})}
    )
    doc = observe(strict, host, transport, lock=None, spec_commit=None, lb_weights={}, now=NOW)
    assert doc.reasons == [
        "profile default: doctor gateway.bind.loopback (warning): Gateway binds only to loopback"
    ]

    node.set_faults(doctor_red=True)
    red = observe(fleet, host, transport, lock=None, spec_commit=None, lb_weights={}, now=NOW)
    assert not red.green
    assert any(
        r.startswith("profile default: doctor config.schema.invalid (error): Config does not")
        for r in red.reasons
    ), red.reasons
    assert any("post-upgrade doctor plugin.entry_unresolved (error)" in r for r in red.reasons)
    assert red.fingerprint != healthy.fingerprint
    assert ["config.schema.invalid", "error"] in red.basis["doctor"]


def test_a_host_with_two_profiles(make_node: MakeNode) -> None:
    node = make_node("multi", profiles=[None, "work"])
    fleet = fleet_spec(node.registry.url, [node.host()])
    transport = node.transport(fleet)
    bring_up(fleet, node, transport, {"openclaw": "2026.4.3"})
    host = fleet.host("multi")
    weights = {"multi": 100, "multi-work": 30}

    doc = observe(fleet, host, transport, lock=None, spec_commit=None, lb_weights=weights, now=NOW)
    assert doc.green, doc.reasons
    assert [(p.profile, p.port, p.readyz, p.lb_weight) for p in doc.profiles] == [
        ("default", node.ports[0], True, 100),
        ("work", node.ports[1], True, 30),
    ]
    assert len(node.gateway_pids()) == 2  # two state dirs, two gateways

    stop = transport.run(
        ["openclaw", "gateway", "stop"], timeout=30, env={"OPENCLAW_PROFILE": "work"}
    )
    assert stop.ok, stop.error_text()
    doc = observe(fleet, host, transport, lock=None, spec_commit=None, lb_weights=weights, now=NOW)
    assert not doc.green
    assert f"profile work: /readyz is not 200 (port {node.ports[1]})" in doc.reasons
    assert not any(r.startswith("profile default") for r in doc.reasons)


def test_a_host_without_openclaw_is_red_not_an_error(
    make_node: MakeNode, fresh_ssh_host: FleetHost
) -> None:
    node = make_node("bare", sshd=fresh_ssh_host)
    fleet = fleet_spec(node.registry.url, [node.host()])
    transport = node.transport(fleet)
    doc = observe(
        fleet, fleet.host("bare"), transport, lock=None, spec_commit=None, lb_weights={}, now=NOW
    )
    assert not doc.green
    assert doc.installed == Installed(core=None)
    assert "openclaw is not installed" in doc.reasons
    assert any("'openclaw' not found" in r for r in doc.reasons)
    valid(doc)
