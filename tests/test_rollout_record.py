"""`rollout.json` keeps its shape through every named transition of the rollout record.

Before issue #17 the engine wrote the rollout's progress with inline `model_copy(update={...})`
dicts; the record now has named transitions (`step_done`, `paused`, `failed`, ...). Each case
here applies one transition and, as the reference, the update the engine made inline before,
and asserts the same JSON: the same keys, the same values. Tools that read the status branch
see no difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from reconciler.record.documents import HostStatus, Invalid, RolloutRecord

PLAN = ["mac-1/bookmark", "mac-1/drain", "mac-1/verify", "mac-1/ramp-50", "mac-2/bookmark"]
GOLDEN = "a" * 64


def mid_rollout(**changes: object) -> RolloutRecord:
    """A record as a rolling rollout leaves it after its first host's drain."""
    record = RolloutRecord(
        fleet="lab",
        phase="Progressing",
        spec_commit="c" * 40,
        base_commit="b" * 40,
        applied_commit="b" * 40,
        target={"openclaw": "2026.4.3"},
        plan_sha256="d" * 64,
        done_steps=PLAN[:2],
        current_step=PLAN[2],
        hosts={"mac-1": HostStatus(phase="Drained"), "mac-2": HostStatus()},
        failed_commits=["e" * 40],
        repair_first=["mac-2"],
        message="mac-1: drained (weight 0)",
        updated_at="2026-11-24T09:00:00.000+00:00",
    )
    return record.model_copy(update=changes)


def with_phase(
    hosts: Mapping[str, HostStatus], names: list[str], phase: str | None, percent: int | None
) -> dict[str, HostStatus]:
    """The engine's host update before #17, verbatim."""
    out = dict(hosts)
    for name in names:
        current = out.get(name, HostStatus())
        update: dict[str, object] = {}
        if phase:
            update["phase"] = phase
        if percent is not None:
            update["weight_percent"] = percent
        out[name] = current.model_copy(update=update)
    return out


def following(done: list[str]) -> str | None:
    return next((s for s in PLAN if s not in done), None)


Case = tuple[RolloutRecord, Callable[[RolloutRecord], RolloutRecord], dict[str, object]]


def cases() -> dict[str, Case]:
    """name -> (record, transition, the engine's inline update before #17)."""
    r = mid_rollout()
    soaking = mid_rollout(
        done_steps=PLAN[:3],
        current_step=PLAN[3],
        soak_until="2026-11-24T09:05:00.000+00:00",
        soak_baseline={"mac-1": {"weight": 50, "requests": 7}},
        golden_fingerprint=GOLDEN,
    )
    verified = [*PLAN[:2], PLAN[2]]
    skipped = [*PLAN[:3], "mac-2/bookmark"]
    return {
        "stamped": (r, lambda r: r.stamped("2026-11-24T10:00:00.000+00:00"),
                    {"updated_at": "2026-11-24T10:00:00.000+00:00"}),
        "refused": (
            mid_rollout(phase="Complete"),
            lambda r: r.refused("f" * 40, ["p"] * 60),
            {"invalid": Invalid(commit="f" * 40, problems=["p"] * 50), "phase": "Invalid"},
        ),
        "refused mid-rollout": (
            r,
            lambda r: r.refused("f" * 40, ["p"]),
            {"invalid": Invalid(commit="f" * 40, problems=["p"]), "phase": "Progressing"},
        ),
        "paused": (r, lambda r: r.paused("held"), {"phase": "Paused", "message": "held"}),
        "held frozen": (r, lambda r: r.held("Frozen", "frozen: x"),
                        {"phase": "Frozen", "message": "frozen: x"}),
        "step_done (verify, first golden)": (
            r,
            lambda r: r.step_done(PLAN[2], PLAN, hosts=["mac-1"], host_phase="Verified",
                                  percent=None, message="mac-1: ready", golden=GOLDEN),
            {"done_steps": verified, "current_step": following(verified),
             "hosts": with_phase(r.hosts, ["mac-1"], "Verified", None), "phase": "Progressing",
             "message": "mac-1: ready", "golden_fingerprint": GOLDEN},
        ),
        "step_done (ramp, golden kept)": (
            soaking,
            lambda r: r.step_done(PLAN[3], PLAN, hosts=["mac-1"], host_phase="Ramping",
                                  percent=50, message="mac-1: weight 50%"),
            {"done_steps": PLAN[:4], "current_step": following(PLAN[:4]),
             "hosts": with_phase(soaking.hosts, ["mac-1"], "Ramping", 50),
             "phase": "Progressing", "message": "mac-1: weight 50%"},
        ),
        "soaking": (
            mid_rollout(done_steps=PLAN[:3], current_step=PLAN[3]),
            lambda r: r.soaking(PLAN[3], until="2026-11-24T09:05:00.000+00:00",
                                baseline={"mac-1": {"weight": 50}}, hosts=["mac-1"],
                                host_phase="Ramping", percent=50, message="mac-1: weight 50%"),
            {"done_steps": PLAN[:3], "current_step": PLAN[3],
             "hosts": with_phase(r.hosts, ["mac-1"], "Ramping", 50), "phase": "Progressing",
             "message": "mac-1: weight 50%", "soak_until": "2026-11-24T09:05:00.000+00:00",
             "soak_baseline": {"mac-1": {"weight": 50}}},
        ),
        "soak_passed": (
            soaking,
            lambda r: r.soak_passed(PLAN[3], PLAN),
            {"done_steps": PLAN[:4], "soak_until": None, "soak_baseline": {},
             "current_step": following(PLAN[:4])},
        ),
        "converged": (
            mid_rollout(done_steps=PLAN[:4], current_step=PLAN[4]),
            lambda r: r.converged(["mac-2/bookmark"], PLAN, hosts=["mac-2"], message="on it",
                                  golden=GOLDEN),
            {"done_steps": [*PLAN[:4], "mac-2/bookmark"], "current_step": None,
             "hosts": with_phase(r.hosts, ["mac-2"], "Verified", None), "message": "on it",
             "golden_fingerprint": GOLDEN},
        ),
        "converged (golden kept)": (
            soaking,
            lambda r: r.converged(["mac-2/bookmark"], PLAN, hosts=["mac-2"], message="on it",
                                  golden="b" * 64),
            {"done_steps": skipped, "current_step": following(skipped),
             "hosts": with_phase(soaking.hosts, ["mac-2"], "Verified", None),
             "message": "on it"},
        ),
        "completed": (
            r,
            lambda r: r.completed("done"),
            {"phase": "Complete", "current_step": None, "message": "done",
             "applied_commit": r.spec_commit},
        ),
        "failed": (
            r,
            lambda r: r.failed(["mac-1"], "Failed", "mac-1: red"),
            {"phase": "Failed", "hosts": with_phase(r.hosts, ["mac-1"], "Failed", None),
             "message": "mac-1: red", "failed_commits": [*r.failed_commits, r.spec_commit]},
        ),
        "restored": (
            r,
            lambda r: r.restored("mac-1", "mac-1: restored"),
            {"hosts": with_phase(r.hosts, ["mac-1"], "RolledBack", None),
             "message": "mac-1: restored"},
        ),
        "drifted": (r, lambda r: r.drifted("drift: mac-1"), {"message": "drift: mac-1"}),
        "healing": (
            soaking.model_copy(update={"phase": "Complete"}),
            lambda r: r.healing("9" * 64, PLAN[0], "drift: mac-1"),
            {"phase": "Progressing", "base_commit": None, "plan_sha256": "9" * 64,
             "done_steps": [], "current_step": PLAN[0], "golden_fingerprint": None,
             "soak_until": None, "repair_first": [], "message": "self-heal: drift: mac-1"},
        ),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(cases()))
def test_a_transition_writes_what_the_inline_update_wrote(name: str) -> None:
    record, transition, before_17 = cases()[name]
    after = transition(record)
    assert after.dump() == record.model_copy(update=before_17).dump()
    assert record.dump() == cases()[name][0].dump(), "a transition changed the record in place"


@pytest.mark.parametrize("name", list(cases()))
def test_a_dumped_record_keeps_its_key_set(name: str) -> None:
    """The keys of rollout.json before and after a transition: only optional fields that a
    transition sets or clears (None is left out of the file) come or go."""
    record, transition, _ = cases()[name]
    optional = {"baseCommit", "currentStep", "goldenFingerprint", "soakUntil", "invalid"}
    before, after = set(record.dump()), set(transition(record).dump())
    assert before - optional == after - optional
    assert after <= set(RolloutRecord.model_json_schema(by_alias=True)["properties"])


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(AssertionError, match="not fields"):
        mid_rollout()._next(doneSteps=[])
