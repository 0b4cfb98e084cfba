"""`reconciler status` and `reconciler history`: the status branch, rendered for a terminal.

Both read only the status branch, the same data a reviewer sees with `git log`, so what the
terminal says and what git says can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pygit2
from rich.console import Console
from rich.table import Table

from reconciler.desired.spec import Fleet
from reconciler.record.documents import Freeze, Readiness
from reconciler.record.gitstore import STATUS_BRANCH, GitStore
from reconciler.record.status import FleetStatus, fleet_dir
from reconciler.rollout import windows
from reconciler.rollout.gates import differing_fields, out_of_service_observed

INSTALLED = ("Installed", "Restarted")
"""Host phases in which a finished install step put the rollout's target on the host, after
its last observation (the next one is the verify's)."""


def status_doc(status: FleetStatus) -> dict[str, Any]:
    """The JSON form of `reconciler status --json`."""
    record = status.rollout
    golden = record.golden_fingerprint if record else None
    if golden is None and status.nodes:  # no rollout yet: agreement means all alike
        prints = [d.fingerprint for d in status.nodes.values()]
        golden = max(set(prints), key=prints.count)
    reference = next((d for d in status.nodes.values() if d.fingerprint == golden), None)
    hosts = []
    names = list(record.hosts) if record else []
    names += [n for n in sorted(status.nodes) if n not in names]
    for name in names:
        doc = status.nodes.get(name)
        progress = record.hosts.get(name) if record else None
        agrees = None if doc is None or golden is None else doc.fingerprint == golden
        phase = progress.phase if progress else None
        hosts.append(
            {
                "host": name,
                "phase": phase,
                "weightPercent": progress.weight_percent if progress else None,
                "observedAt": doc.observed_at if doc else None,
                "core": doc.installed.core if doc else None,
                "plugins": doc.installed.plugins if doc else {},
                "installedByStep": record.target if record and phase in INSTALLED else None,
                "green": doc.green if doc else None,
                "reasons": doc.reasons if doc else [],
                "weights": {p.profile: p.lb_weight for p in doc.profiles} if doc else {},
                "fingerprint": doc.fingerprint if doc else None,
                "agrees": agrees,
                "differs": differing_fields(reference, doc)
                if reference and doc and not agrees
                else [],
            }
        )
    return {
        "fleet": status.fleet,
        "statusCommit": str(status.commit.id) if status.commit else None,
        "phase": record.phase if record else "Idle",
        "specCommit": record.spec_commit if record else None,
        "target": record.target if record else {},
        "currentStep": record.current_step if record else None,
        "message": record.message if record else "",
        "frozen": status.freeze.dump() if status.freeze else None,
        "lease": status.lease.dump() if status.lease else None,
        "goldenFingerprint": golden,
        "peersAgree": all(h["agrees"] is not False for h in hosts),
        "hosts": hosts,
    }


def print_status(doc: dict[str, Any], out: Console) -> None:
    spec = (doc["specCommit"] or "")[:12]
    out.print(f"fleet {doc['fleet']}: {doc['phase']} at spec {spec or '-'}  {doc['message']}")
    if doc["frozen"]:
        out.print(f"FROZEN: {doc['frozen']['reason']}")
    columns = ("host", "phase", "openclaw", "weights", "green", "observed", "fingerprint")
    table = Table(*columns, box=None)
    for h in doc["hosts"]:
        weights = ",".join(f"{k}={v}" for k, v in h["weights"].items() if v is not None)
        fp = (h["fingerprint"] or "")[:12] + ("" if h["agrees"] is not False else " (differs)")
        green = {True: "yes", False: "NO", None: "-"}[h["green"]]
        observed = (h["observedAt"] or "-").replace("T", " ")[:19]
        table.add_row(
            h["host"], h["phase"] or "-", _core(h), weights or "-", green, observed, fp or "-"
        )
    out.print(table)
    for h in doc["hosts"]:
        if h["differs"]:
            out.print(f"{h['host']} differs on: {'; '.join(h['differs'])}")
        if h["reasons"] and h["green"] is False:
            out.print(f"{h['host']} red: {'; '.join(h['reasons'])}")
    out.print("peers agree" if doc["peersAgree"] else "PEERS DISAGREE: traffic will not widen")


def _core(host: dict[str, Any]) -> str:
    """The observed core; the one an install step put there since, when it differs."""
    observed = host["core"] or "-"
    installed = (host["installedByStep"] or {}).get("openclaw")
    if installed and installed != host["core"]:
        return f"{installed} (installed; observed {observed} before)"
    return observed


def history(store: GitStore, fleet: str, limit: int) -> Iterator[dict[str, Any]]:
    """The fleet's status commits, newest first."""
    head = store.status_head()
    if head is None:
        return
    prefix = fleet_dir(fleet) + "/"
    walker = store.repo.walk(
        head.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME
    )
    shown = 0
    for commit in walker:
        if shown >= limit:
            return
        if not touches(commit, prefix):
            continue
        shown += 1
        yield {
            "commit": str(commit.id),
            "time": datetime.fromtimestamp(commit.commit_time, UTC).isoformat(),
            "subject": commit.message.partition("\n")[0],
            "trailers": trailers(commit.message),
        }


def trailers(message: str) -> dict[str, str]:
    """A status commit's trailers (`Spec-Commit: ...`, `Phase: ...`)."""
    body = message.partition("\n")[2]
    return dict(line.split(": ", 1) for line in body.strip().splitlines() if ": " in line)


def touches(commit: pygit2.Commit, prefix: str) -> bool:
    """Whether `commit` changed anything under `prefix` (a fleet's directory)."""
    if not commit.parents:
        return True
    diff = commit.tree.diff_to_tree(commit.parents[0].tree)
    return any(
        (d.new_file.path or "").startswith(prefix) or (d.old_file.path or "").startswith(prefix)
        for d in diff.deltas
    )


def print_history(entries: list[dict[str, Any]], out: Console) -> None:
    for e in entries:
        phase = e["trailers"].get("Phase", "")
        out.print(f"{e['commit'][:10]}  {e['time'][:19]}  {phase:<11} {e['subject']}")


def last_observed(repo: pygit2.Repository, fleet: Fleet) -> dict[str, Readiness]:
    """The readiness of each host of `fleet` as the status branch of `repo` (if it has one)
    last recorded it: what `plan --repo` judges the hosts by before anything runs."""
    try:
        head = repo.revparse_single(f"refs/heads/{STATUS_BRANCH}").peel(pygit2.Commit)
        nodes = head.tree / f"{fleet_dir(fleet.name)}/nodes"
    except (KeyError, ValueError, pygit2.GitError):
        return {}
    docs = {}
    for entry in nodes if isinstance(nodes, pygit2.Tree) else ():
        blob = repo[entry.id]
        name = (entry.name or "").removesuffix(".json")
        if isinstance(blob, pygit2.Blob) and name in {h.name for h in fleet.hosts}:
            docs[name] = Readiness.model_validate_json(blob.data)
    return docs


def out_of_service(fleet: Fleet, docs: Mapping[str, Readiness]) -> dict[str, str]:
    """Hosts those observations saw out of service, and why: what `plan` shows, and takes
    first."""
    desired = {h.name: {p.key(): p.weight for p in h.profiles} for h in fleet.hosts}
    return out_of_service_observed(desired, docs)


_HOST_SUBJECT = re.compile(r"^([a-z0-9][a-z0-9-]*): (.*)$")
_PHASES = (
    ("bookmarked", "backup create (recovery point) and bookmark"),
    ("drained", "drain"),
    ("preflight", "preflight"),
    ("restored from its recovery point", "restore onto the recovery point (install step)"),
    ("installed", "install (core, then plugins)"),
    ("restarted", "restart"),
    ("running, doctor green, ready", "restart to ready (verify)"),
    ("weight", "ramp"),
    ("restored to", "restore"),
    ("red after", "verify (red)"),
    ("failed", "step failed"),
)


def phase_rows(repo: pygit2.Repository, after: str | None = None) -> list[tuple[str, str, int]]:
    """(host, phase, seconds) from the status branch: the time between a host's transitions
    is the time its phase took (commit times: one-second resolution). `after`: only the
    transitions after that status commit."""
    head = repo.revparse_single(f"refs/heads/{STATUS_BRANCH}").peel(pygit2.Commit)
    walker = repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE)
    previous: int | None = None
    if after is not None:
        since = repo.revparse_single(after).peel(pygit2.Commit)
        walker.hide(since.id)
        previous = since.commit_time
    last: dict[str, int] = {}
    rows: list[tuple[str, str, int]] = []
    for commit in walker:
        began = previous if previous is not None else commit.commit_time
        match = _HOST_SUBJECT.match(commit.message.splitlines()[0])
        if match is not None:
            host, subject = match.groups()
            phase = next((name for key, name in _PHASES if key in subject), subject[:40])
            rows.append((host, phase, commit.commit_time - last.get(host, began)))
            last[host] = commit.commit_time
        previous = commit.commit_time
    return rows


def held_notices(repo: pygit2.Repository, fleet: Fleet) -> list[str]:
    """What would hold a rollout of `fleet` now: a freeze on its status branch, a maintenance
    window closed."""
    notices = []
    try:
        head = repo.revparse_single(f"refs/heads/{STATUS_BRANCH}").peel(pygit2.Commit)
        blob = head.tree / f"{fleet_dir(fleet.name)}/freeze.json"
    except (KeyError, ValueError, pygit2.GitError):
        blob = None
    if isinstance(blob, pygit2.Blob):
        freeze = Freeze.model_validate_json(blob.data)
        notices.append(f"the fleet is frozen: {freeze.reason} (`reconciler unfreeze` lifts it)")
    now = datetime.now(UTC)
    if fleet.windows and not windows.is_open(fleet.windows, now):
        opens = windows.next_open(fleet.windows, now)
        when = f"; it opens {opens.isoformat(timespec='minutes')}" if opens else ""
        notices.append(f"no maintenance window is open now{when}: the rollout waits for one")
    return notices
