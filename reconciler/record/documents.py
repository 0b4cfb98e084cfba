"""The documents the reconciler writes to the status branch.

Readiness (one per host), bookmarks (written before every step that changes a host or a
weight), the rollout record and the freeze record. Frozen pydantic models, like the spec, and
published as JSON Schemas beside it, so the status branch can be read by other tools.

A readiness document carries two digests. `fingerprint` covers only what peers must agree on
(versions, the lock, doctor check ids and severities): two hosts on the same release and config
have the same fingerprint. `readiness_sha256` covers the whole document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from reconciler.canonical import sha256_of
from reconciler.desired.spec import Host, Model, Name, server_name

Severity = Literal["info", "warning", "error"]
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

RolloutPhase = Literal["Idle", "Progressing", "Paused", "Complete", "Failed", "Frozen", "Invalid"]
HostPhase = Literal[
    "Pending",
    "Bookmarked",
    "Drained",
    "Preflighted",
    "Installed",
    "Restarted",
    "Verified",
    "Ramping",
    "Done",
    "Failed",
    "RolledBack",
]


class Finding(Model):
    """One doctor finding, as `openclaw doctor --json` reports it."""

    check_id: str
    severity: Severity
    message: str = ""
    fix_hint: str | None = None


class Installed(Model):
    """What a host has installed: the core from the global npm tree (as `npm ls -g --json`
    shows it), the plugins as the product lists them (`openclaw plugins list --json`: the
    tracked installs it loads, never an npm copy beside the core)."""

    core: str | None = Field(None, description="openclaw version at the top of the tree")
    plugins: dict[str, str] = Field(
        default_factory=dict,
        description="plugin npm name -> version, as every profile of the product lists it",
    )
    duplicates: list[str] = Field(
        default_factory=list, description="every second copy of openclaw (path@version)"
    )
    problems: list[str] = Field(default_factory=list, description="npm ls problems")
    strays: list[str] = Field(
        default_factory=list,
        description="@openclaw/* packages npm-installed beside the core (name@version): the "
        "product never loads them; the next install removes them",
    )


class PluginState(Model):
    """One plugin of a profile as `openclaw plugins list --json` reports it."""

    id: str
    name: str = Field(description="npm package name")
    version: str | None = None
    origin: str = Field(description="bundled, global (a tracked install), ...")
    status: str = Field(description="loaded, disabled, error, ...")
    enabled: bool
    missing: list[str] = Field(default_factory=list, description="dependencies not installed")

    def trouble(self) -> str | None:
        """Why the product does not run this plugin as installed (None: it does)."""
        if not self.enabled:
            return "disabled"
        if self.status != "loaded":
            return f"status {self.status}"
        if self.missing:
            return f"missing dependencies {', '.join(self.missing)}"
        return None


class ProfileReadiness(Model):
    """One gateway profile's doctor and probes."""

    profile: str
    port: int
    doctor: list[Finding] = Field(default_factory=list)
    post_upgrade: list[Finding] = Field(default_factory=list)
    healthz: bool = False
    readyz: bool = False
    health_ok: bool | None = None
    running_version: str | None = None
    lb_weight: int | None = None
    plugins: list[PluginState] = Field(
        default_factory=list, description="non-bundled plugins, as the product lists them"
    )


class Readiness(Model):
    """The merged readiness of one host: the runbook's 'one readiness JSON'."""

    schema_version: Literal[1] = 1
    fleet: Name
    host: Name
    observed_at: str = Field(description="RFC 3339; volatile, outside the fingerprint")
    spec_commit: str | None = None
    lock_sha256: str | None = None
    node_version: str | None = None
    installed: Installed
    profiles: list[ProfileReadiness]
    green: bool
    reasons: list[str] = Field(default_factory=list, description="why the host is not green")
    free_disk_mb: int | None = Field(None, description="free MB under the npm prefix; volatile")
    basis: dict[str, Any] = Field(
        default_factory=dict,
        description="the fingerprint's input, so a status can name the fields peers differ on",
    )
    fingerprint: Digest
    readiness_sha256: Digest


def fingerprint_basis(
    lock_sha256: str | None, installed: Installed, profiles: list[ProfileReadiness]
) -> dict[str, Any]:
    """What peers on one release must share, as plain JSON; nothing host-specific enters
    (no timestamps, durations, pids, paths, ports or names: duplicates keep only versions)."""
    findings = {(f.check_id, f.severity) for p in profiles for f in (*p.doctor, *p.post_upgrade)}
    return {
        "lock": lock_sha256,
        "core": installed.core,
        "plugins": dict(sorted(installed.plugins.items())),
        "duplicates": sorted(d.rsplit("@", 1)[-1] for d in installed.duplicates),
        "running": sorted({p.running_version or "" for p in profiles}),
        "doctor": [list(pair) for pair in sorted(findings)],
    }


def fingerprint_of(
    lock_sha256: str | None, installed: Installed, profiles: list[ProfileReadiness]
) -> str:
    """sha256 over `fingerprint_basis`."""
    return sha256_of(fingerprint_basis(lock_sha256, installed, profiles))


def seal_readiness(draft: dict[str, object]) -> Readiness:
    """Fill in `readiness_sha256` over everything else in the document."""
    body = {k: v for k, v in draft.items() if k != "readinessSha256"}
    return Readiness.model_validate({**body, "readinessSha256": sha256_of(body)})


def with_lb_weights(doc: Readiness, weights: Mapping[str, int | None]) -> Readiness:
    """The same readiness with new LB weights (profile -> weight), resealed. Weights are an LB
    fact the reconciler itself just set; they are outside the fingerprint."""
    body = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    for profile in body["profiles"]:
        if profile["profile"] in weights:
            profile["lbWeight"] = weights[profile["profile"]]
    return seal_readiness(body)


def reweighed(host: Host, doc: Readiness, weights: Mapping[str, int]) -> Readiness:
    """A host's readiness with the LB weights a step has just set (observed before it set
    them), so the status branch records the weights the load balancer now has."""
    by_profile = {
        p.key(): weights[server_name(host, p)]
        for p in host.profiles
        if server_name(host, p) in weights
    }
    return with_lb_weights(doc, by_profile)


class RecoveryAsset(Model):
    """One path an archive holds, as the backup's manifest names it."""

    kind: str = Field(description="state, config, credentials, workspace or agent")
    source_path: str = Field(description="where it lives on the host")
    archive_path: str = Field(description="where it sits inside the archive")


class RecoveryPoint(Model):
    """One profile's verified `openclaw backup create` archive, taken before the host changed:
    the state the installed release wrote, which an older release needs back to start."""

    host: Name
    profile: str = Field(description="profile key (default for the unnamed one)")
    seq: int = Field(ge=0, description="the bookmark that took it")
    archive: str = Field(description="archive path on the host")
    sha256: Digest
    size_bytes: int = Field(ge=0)
    created_at: str
    archive_root: str
    runtime_version: str = Field(description="the release that wrote it (manifest)")
    node_version: str = ""
    include_workspace: bool
    installed: Installed = Field(description="the core and plugins installed when it was taken")
    assets: list[RecoveryAsset]


class Bookmark(Model):
    """What to restore a host to: written BEFORE each step that changes a host or a weight."""

    seq: int = Field(ge=0)
    fleet: Name
    host: Name
    phase: str
    spec_commit: str
    created_at: str
    lb_weights: dict[str, int] = Field(description="every LB server's weight at that moment")
    installed: Installed
    lock_sha256: str | None = None
    readiness_sha256: dict[str, str] = Field(
        default_factory=dict, description="host -> readiness_sha256 at that moment"
    )
    skill_links: dict[str, str] = Field(
        default_factory=dict, description="symlink path -> target under ~/.openclaw/skills"
    )
    hosts: dict[str, Installed] = Field(
        default_factory=dict, description="host -> installed tree (several for all-at-once)"
    )
    return_weights: dict[str, int] = Field(
        default_factory=dict,
        description="server -> weight a restore gives back: its weight then, or the spec's "
        "when the host was already drained (a host a failed rollout left out returns to service)",
    )
    recovery_points: list[RecoveryPoint] = Field(
        default_factory=list, description="one verified backup per host and profile"
    )


class HostStatus(Model):
    """One host's progress within a rollout."""

    phase: HostPhase = "Pending"
    step: int | None = Field(None, description="index of the current weight step")
    weight_percent: int | None = None
    from_versions: dict[str, str] = Field(default_factory=dict)
    message: str = ""


class Invalid(Model):
    """The newest spec commit that failed validation (nothing of it was applied)."""

    commit: str
    problems: list[str]


class RolloutRecord(Model):
    """`rollout.json`: where the fleet's rollout stands."""

    fleet: Name
    phase: RolloutPhase
    spec_commit: str | None = None
    base_commit: str | None = Field(None, description="the spec commit this rollout moves from")
    applied_commit: str | None = Field(
        None, description="the spec commit of the last rollout that completed"
    )
    target: dict[str, str] = Field(default_factory=dict, description="package -> version")
    plan_sha256: str | None = None
    done_steps: list[str] = Field(default_factory=list, description="ids of finished plan steps")
    current_step: str | None = None
    hosts: dict[str, HostStatus] = Field(default_factory=dict)
    failed_commits: list[str] = Field(default_factory=list)
    repair_first: list[str] = Field(
        default_factory=list,
        description="hosts out of service when the rollout started: the plan takes them first",
    )
    golden_fingerprint: str | None = Field(
        None, description="fingerprint of the first host upgraded in this rollout"
    )
    soak_until: str | None = Field(None, description="RFC 3339 end of the current soak")
    soak_baseline: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="LB counters of the soaking host's servers when its soak began",
    )
    invalid: Invalid | None = None
    message: str = ""
    updated_at: str

    # --- transitions ------------------------------------------------------------------------
    # Each names one change of the rollout's progress and returns the next record (a record
    # never changes in place); the engine writes what a transition returns. A transition only
    # sets fields: rollout.json keeps exactly its shape and names.

    def stamped(self, at: str) -> RolloutRecord:
        """The record as written at `at`."""
        return self._next(updated_at=at)

    def refused(self, commit: str, problems: list[str]) -> RolloutRecord:
        """The spec at `commit` is invalid (the first 50 `problems` kept): nothing of it is
        applied, the last good state stays, and a settled fleet shows Invalid."""
        phase = self.phase if self.phase not in ("Idle", "Complete") else "Invalid"
        return self._next(invalid=Invalid(commit=commit, problems=problems[:50]), phase=phase)

    def held(self, phase: RolloutPhase, message: str) -> RolloutRecord:
        """Waiting where it stands (`phase` Paused or Frozen), `message` says why."""
        return self._next(phase=phase, message=message)

    def paused(self, message: str) -> RolloutRecord:
        """Paused where it stands: a gate, a soak or a closed window holds it."""
        return self.held("Paused", message)

    def step_done(
        self,
        step: str,
        plan: Sequence[str],
        *,
        hosts: Sequence[str],
        host_phase: str | None,
        percent: int | None,
        message: str,
        golden: str | None = None,
    ) -> RolloutRecord:
        """`step` finished: its `hosts` move to `host_phase` (at `percent`), the next step of
        `plan` (step ids) not done becomes current; `golden`: the fingerprint of a verified
        host, kept when this rollout has none yet."""
        done = [*self.done_steps, step]
        return self._next(
            done_steps=done,
            current_step=_first_undone(plan, done),
            hosts=self._hosts_at(hosts, host_phase, percent),
            phase="Progressing",
            message=message,
            golden_fingerprint=self._golden_or(golden),
        )

    def soaking(
        self,
        step: str,
        *,
        until: str,
        baseline: dict[str, dict[str, int]],
        hosts: Sequence[str],
        host_phase: str | None,
        percent: int | None,
        message: str,
    ) -> RolloutRecord:
        """`step` (a ramp) set its weights and soaks until `until`: it stays the current step,
        with the LB's counters of its servers as the soak began (`baseline`)."""
        return self._next(
            done_steps=self.done_steps,
            current_step=step,
            hosts=self._hosts_at(hosts, host_phase, percent),
            phase="Progressing",
            message=message,
            soak_until=until,
            soak_baseline=baseline,
        )

    def soak_passed(self, step: str, plan: Sequence[str]) -> RolloutRecord:
        """The soak of `step` ended and its analysis passed: the step is done."""
        done = [*self.done_steps, step]
        return self._next(
            done_steps=done,
            soak_until=None,
            soak_baseline={},
            current_step=_first_undone(plan, done),
        )

    def converged(
        self,
        steps: Sequence[str],
        plan: Sequence[str],
        *,
        hosts: Sequence[str],
        message: str,
        golden: str,
    ) -> RolloutRecord:
        """`hosts` were found already on the target and green: `steps` (theirs) are done
        without acting, the hosts are Verified; the phase stays as it was."""
        done = [*self.done_steps, *[s for s in steps if s not in self.done_steps]]
        return self._next(
            done_steps=done,
            current_step=_first_undone(plan, done),
            hosts=self._hosts_at(hosts, "Verified", None),
            message=message,
            golden_fingerprint=self._golden_or(golden),
        )

    def completed(self, message: str) -> RolloutRecord:
        """Every step is done: this spec commit is the one the fleet converged to."""
        return self._next(
            phase="Complete", current_step=None, message=message, applied_commit=self.spec_commit
        )

    def failed(self, hosts: Sequence[str], host_phase: HostPhase, message: str) -> RolloutRecord:
        """A step went red on `hosts` (Failed: restored next; RolledBack: nothing changed on
        them); this spec commit is remembered as failed, so it is never tried again."""
        return self._next(
            phase="Failed",
            hosts=self._hosts_at(hosts, host_phase, None),
            message=message,
            failed_commits=[*self.failed_commits, self.spec_commit or ""],
        )

    def restored(self, host: str, message: str) -> RolloutRecord:
        """`host` is back as its bookmark recorded it."""
        return self._next(hosts=self._hosts_at([host], "RolledBack", None), message=message)

    def drifted(self, message: str) -> RolloutRecord:
        """A Complete fleet left the desired state: `message` says how (reported once)."""
        return self._next(message=message)

    def healing(self, plan_sha256: str, first_step: str | None, message: str) -> RolloutRecord:
        """Self-heal: start over at the same spec commit with the full plan (no base, no host
        first), whose converged hosts are skipped when observed."""
        return self._next(
            phase="Progressing",
            base_commit=None,
            plan_sha256=plan_sha256,
            done_steps=[],
            current_step=first_step,
            golden_fingerprint=None,
            soak_until=None,
            repair_first=[],
            message=f"self-heal: {message}",
        )

    def _next(self, **changes: object) -> RolloutRecord:
        unknown = changes.keys() - type(self).model_fields.keys()
        assert not unknown, f"not fields of the rollout record: {sorted(unknown)}"
        return self.model_copy(update=changes)

    def _golden_or(self, golden: str | None) -> str | None:
        return self.golden_fingerprint if self.golden_fingerprint is not None else golden

    def _hosts_at(
        self, names: Sequence[str], phase: str | None, percent: int | None
    ) -> dict[str, HostStatus]:
        """`hosts` with each of `names` moved to `phase` and `percent` (None: as it was)."""
        out = dict(self.hosts)
        for name in names:
            update: dict[str, object] = {}
            if phase:
                update["phase"] = phase
            if percent is not None:
                update["weight_percent"] = percent
            out[name] = out.get(name, HostStatus()).model_copy(update=update)
        return out


def _first_undone(plan: Sequence[str], done: Sequence[str]) -> str | None:
    return next((s for s in plan if s not in done), None)


class Freeze(Model):
    """`freeze.json`: while present, no reconciler widens traffic on this fleet."""

    fleet: Name
    reason: str
    host: str | None = None
    spec_commit: str | None = None
    created_at: str


class Lease(Model):
    """`lease.json`: which reconciler instance may act on the fleet, until when."""

    fleet: Name
    holder: str
    acquired_at: str
    expires_at: str
