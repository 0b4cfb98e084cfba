"""The fleet page: the status branch as people would rather see it than as 27 commit subjects.

A rolling upgrade is a story in time, so besides the table `reconciler status` prints, the page
draws each host's load-balancer weight over time with a mark for every transition (bookmark,
drain, install, restart, verified, red, restored, freeze) and lists the rollouts with their
steps, durations and outcomes. It is built from the status branch alone, like `reconciler
status` (the roles and desired weights come from the spec commit the rollout applied, which the
same repository holds), so the page and `git log reconciler/status` can never disagree.

This module only reads and shapes; `render_page` (Jinja2, templates/page/) turns the shapes into
one self-contained HTML document (inline CSS, inline SVG, a few lines of inline script for the
live update), so the daemon's `/` and `reconciler status --html FILE` are the same document and
it works offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import jinja2
import pygit2

from reconciler.desired import source
from reconciler.desired.spec import Fleet
from reconciler.desired.validate import load
from reconciler.errors import SpecError
from reconciler.record.documents import Freeze, Readiness, RolloutRecord
from reconciler.record.gitstore import STATUS_BRANCH
from reconciler.record.status import fleet_dir
from reconciler.rollout.gates import differing_fields
from reconciler.views import report
from reconciler.views.timeline import Chart, chart

M = TypeVar("M", Readiness, RolloutRecord, Freeze)

HISTORY_LIMIT = 400
"""Status commits read per fleet, newest first: enough for several rollouts of a small fleet,
and a bound on the work of each page view."""

MARK_KINDS = (
    ("bookmarked", "bookmark"),
    ("drained", "drain"),
    ("red after", "red"),
    ("restored to", "restored"),
    ("restored from its recovery point", "install"),
    ("installed", "install"),
    ("restarted", "restart"),
    ("running, doctor green, ready", "verified"),
)
"""Subject words of a host's status commit -> the mark the timeline draws for it."""


@dataclass(frozen=True)
class Mark:
    host: str
    at: datetime
    kind: str
    commit: str
    subject: str
    weight: int | None = None
    """The host's weight as this status commit left it (commit times have one-second
    resolution, so a time alone cannot say which side of a drain a bookmark was)."""


@dataclass(frozen=True)
class Rollout:
    """The status commits of one spec commit, oldest first."""

    spec_commit: str
    steps: tuple[tuple[datetime, str, str], ...]
    """(time, status commit, subject) of each transition."""
    outcome: str
    target: Mapping[str, str]

    @property
    def started(self) -> datetime:
        return self.steps[0][0]

    @property
    def duration_s(self) -> float:
        return (self.steps[-1][0] - self.steps[0][0]).total_seconds()


@dataclass(frozen=True)
class HostRow:
    """One row of the hosts table."""

    name: str
    role: str
    installed: str
    running: str
    plugins: Mapping[str, str]
    plugin_states: tuple[str, ...]
    weights: Mapping[str, int | None]
    desired: Mapping[str, int]
    green: bool | None
    reasons: tuple[str, ...]
    fingerprint: str
    agrees: bool | None
    observed_at: str
    document: str
    """The readiness document as JSON, for the page's "show" fold."""
    versus_green: tuple[str, ...] = ()
    """For a red host: the fields its readiness differs on from a green peer's."""
    green_peer: str | None = None


@dataclass(frozen=True)
class FleetPage:
    fleet: str
    status: Mapping[str, Any]
    """`reconciler status --json`'s document of the fleet."""
    spec_subject: str
    hosts: tuple[HostRow, ...]
    series: Mapping[str, tuple[tuple[datetime, int], ...]]
    """host -> (time, summed LB weight of its profiles) at each change, oldest first."""
    marks: tuple[Mark, ...]
    rollouts: tuple[Rollout, ...]
    """Newest first."""
    held: str | None = None
    disagreeing: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())
    """(host, the fields it differs on from the golden fingerprint) of each host that does."""


# --- reading the status branch ----------------------------------------------------------------


def collect(
    repo: pygit2.Repository, fleet: str, *, limit: int = HISTORY_LIMIT, at: str | None = None
) -> FleetPage:
    """Everything the page shows of `fleet`, read from `repo`'s status branch (or as it was at
    the status commit `at`: what a page built then showed, for `data-status-commit`)."""
    from reconciler.record.status import FleetStatus

    head = repo.revparse_single(at).peel(pygit2.Commit) if at else _status_head(repo)
    walk = list(_fleet_commits(repo, head, fleet, limit)) if head is not None else []
    nodes = _nodes_at(repo, head, fleet) if head is not None else {}
    record = _document(head, f"{fleet_dir(fleet)}/rollout.json", RolloutRecord)
    freeze = _document(head, f"{fleet_dir(fleet)}/freeze.json", Freeze)
    status = FleetStatus(fleet, head, record, freeze, None, nodes, [])
    doc = report.status_doc(status)
    spec = _spec_at(repo, record.spec_commit if record else None, fleet)
    return FleetPage(
        fleet=fleet,
        status=doc,
        spec_subject=_subject(repo, record.spec_commit if record else None),
        hosts=tuple(_rows(doc, nodes, spec)),
        series=_series(repo, walk, fleet),
        marks=tuple(_marks(repo, walk, fleet)),
        rollouts=tuple(reversed(_rollouts(repo, walk, fleet))),
        held=_held(doc),
        disagreeing=tuple((h["host"], tuple(h["differs"])) for h in doc["hosts"] if h["differs"]),
    )


def _status_head(repo: pygit2.Repository) -> pygit2.Commit | None:
    """The status branch: a checkout's own branch, else a mirror's copy of the remote's."""
    for ref in (f"refs/heads/{STATUS_BRANCH}", f"refs/remotes/origin/{STATUS_BRANCH}"):
        try:
            return repo.revparse_single(ref).peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            continue
    return None


def _fleet_commits(
    repo: pygit2.Repository, head: pygit2.Commit, fleet: str, limit: int
) -> Iterator[pygit2.Commit]:
    """The fleet's status commits, oldest first (the newest `limit`)."""
    prefix = fleet_dir(fleet) + "/"
    order = pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME
    newest: list[pygit2.Commit] = []
    for commit in repo.walk(head.id, order):
        if len(newest) >= limit:
            break
        if report.touches(commit, prefix):
            newest.append(commit)
    return reversed(newest)


def _blob(commit: pygit2.Commit, path: str) -> pygit2.Blob | None:
    try:
        obj = commit.tree / path
    except KeyError:
        return None
    return obj if isinstance(obj, pygit2.Blob) else None


def _document(commit: pygit2.Commit | None, path: str, model: type[M]) -> M | None:
    blob = _blob(commit, path) if commit is not None else None
    try:
        return model.model_validate_json(blob.data) if blob is not None else None
    except ValueError:
        return None


def _nodes_at(repo: pygit2.Repository, commit: pygit2.Commit, fleet: str) -> dict[str, Readiness]:
    try:
        tree = commit.tree / f"{fleet_dir(fleet)}/nodes"
    except KeyError:
        return {}
    docs = {}
    for entry in tree if isinstance(tree, pygit2.Tree) else ():
        doc = _document(commit, f"{fleet_dir(fleet)}/nodes/{entry.name}", Readiness)
        if doc is not None:
            docs[doc.host] = doc
    return docs


def _weight(doc: Readiness) -> int:
    return sum(p.lb_weight or 0 for p in doc.profiles)


def _series(
    repo: pygit2.Repository, walk: Sequence[pygit2.Commit], fleet: str
) -> dict[str, tuple[tuple[datetime, int], ...]]:
    """Each host's weight after every status commit that changed its readiness document."""
    seen: dict[str, pygit2.Oid] = {}
    points: dict[str, list[tuple[datetime, int]]] = {}
    for commit in walk:
        try:
            tree = commit.tree / f"{fleet_dir(fleet)}/nodes"
        except KeyError:
            continue
        for entry in tree if isinstance(tree, pygit2.Tree) else ():
            host = (entry.name or "").removesuffix(".json")
            if seen.get(host) == entry.id:
                continue
            seen[host] = entry.id
            blob = repo[entry.id]
            try:
                doc = Readiness.model_validate_json(blob.data)  # type: ignore[attr-defined]
            except ValueError:
                continue
            points.setdefault(host, []).append((_time(commit), _weight(doc)))
    return {host: tuple(p) for host, p in sorted(points.items())}


def _time(commit: pygit2.Commit) -> datetime:
    return datetime.fromtimestamp(commit.commit_time, UTC)


def _marks(repo: pygit2.Repository, walk: Sequence[pygit2.Commit], fleet: str) -> Iterator[Mark]:
    freeze_path = f"{fleet_dir(fleet)}/freeze.json"
    had_freeze = False
    for commit in walk:
        subject = commit.message.split("\n", 1)[0]
        host, _, words = subject.partition(": ")
        kind = next((k for key, k in MARK_KINDS if key in words), None)
        if kind is not None and " " not in host:
            yield Mark(
                host, _time(commit), kind, str(commit.id), subject, _weight_at(commit, fleet, host)
            )
        frozen = _document(commit, freeze_path, Freeze)
        if frozen is not None and not had_freeze:
            where = frozen.host or "fleet"
            weight = _weight_at(commit, fleet, where)
            yield Mark(where, _time(commit), "freeze", str(commit.id), subject, weight)
        had_freeze = frozen is not None


def _weight_at(commit: pygit2.Commit, fleet: str, host: str) -> int | None:
    doc = _document(commit, f"{fleet_dir(fleet)}/nodes/{host}.json", Readiness)
    return _weight(doc) if doc is not None else None


def _rollouts(repo: pygit2.Repository, walk: Sequence[pygit2.Commit], fleet: str) -> list[Rollout]:
    """Consecutive status commits of one spec commit make one rollout."""
    rollouts: list[Rollout] = []
    steps: list[tuple[datetime, str, str]] = []
    spec, phase = "", "Idle"
    for commit in walk:
        trailers = report.trailers(commit.message)
        commit_spec = trailers.get("Spec-Commit", "")
        if commit_spec != spec and steps:
            rollouts.append(_rollout(repo, spec, steps, phase, fleet))
            steps = []
        spec, phase = commit_spec, trailers.get("Phase", phase)
        steps.append((_time(commit), str(commit.id), commit.message.split("\n", 1)[0]))
    if steps:
        rollouts.append(_rollout(repo, spec, steps, phase, fleet))
    return [r for r in rollouts if r.spec_commit]


def _rollout(
    repo: pygit2.Repository, spec: str, steps: list[tuple[datetime, str, str]], phase: str,
    fleet: str,
) -> Rollout:  # fmt: skip
    last = repo.get(steps[-1][1])
    record = (
        _document(last, f"{fleet_dir(fleet)}/rollout.json", RolloutRecord)
        if isinstance(last, pygit2.Commit)
        else None
    )
    outcome = record.phase if record and record.spec_commit == spec else phase
    return Rollout(spec, tuple(steps), outcome, dict(record.target) if record else {})


def _subject(repo: pygit2.Repository, commit: str | None) -> str:
    try:
        found = repo.get(commit) if commit else None
    except ValueError:
        return ""
    return found.message.split("\n", 1)[0] if isinstance(found, pygit2.Commit) else ""


def _spec_at(repo: pygit2.Repository, commit: str | None, fleet: str) -> Fleet | None:
    """The fleet's spec at `commit` (for roles and desired weights), when the repository has it."""
    if not commit:
        return None
    try:
        _, files = source.read_commit(repo, commit)
        for f in files:
            spec = load(f, require_lock=False).fleet
            if spec.name == fleet:
                return spec
    except (source.SourceError, SpecError, KeyError, ValueError):
        return None
    return None


def _rows(
    doc: Mapping[str, Any], nodes: Mapping[str, Readiness], fleet: Fleet | None
) -> Iterator[HostRow]:
    roles = {h.name: h.role for h in fleet.hosts} if fleet else {}
    desired = (
        {h.name: {p.key(): p.weight for p in h.profiles} for h in fleet.hosts} if fleet else {}
    )
    green = [d for d in nodes.values() if d.green]
    for h in doc["hosts"]:
        node = nodes.get(h["host"])
        peer = green[0] if green and node is not None and not node.green else None
        yield HostRow(
            name=h["host"],
            role=roles.get(h["host"], "-"),
            installed=h["core"] or "-",
            running=", ".join(sorted({p.running_version or "-" for p in node.profiles}))
            if node
            else "-",
            plugins=h["plugins"],
            plugin_states=tuple(
                f"{s.id} {s.version or ''} {s.status}".strip()
                for p in (node.profiles if node else [])
                for s in p.plugins
            ),
            weights=h["weights"],
            desired=desired.get(h["host"], {}),
            green=h["green"],
            reasons=tuple(h["reasons"]),
            fingerprint=(h["fingerprint"] or "")[:12],
            agrees=h["agrees"],
            observed_at=(h["observedAt"] or "-").replace("T", " ")[:19],
            document=_shown(node),
            versus_green=tuple(differing_fields(peer, node)) if peer and node else (),
            green_peer=peer.host if peer else None,
        )


def _shown(node: Readiness | None) -> str:
    """The readiness document as the page shows it (indented JSON; the status branch holds no
    secret, so neither does this)."""
    if node is None:
        return ""
    return json.dumps(node.dump(), indent=2, sort_keys=True)


def _held(doc: Mapping[str, Any]) -> str | None:
    frozen = doc.get("frozen")
    if isinstance(frozen, dict):
        return f"Frozen: {frozen.get('reason', '')}"
    if doc.get("phase") == "Paused":
        return f"Held: {doc.get('message', '')}"
    return None


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shown:
    page: FleetPage
    chart: Chart | None


KINDS = tuple(dict.fromkeys([k for _, k in MARK_KINDS] + ["freeze"]))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["duration"] = _duration
    return env


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _context(pages: Sequence[FleetPage], now: datetime) -> dict[str, Any]:
    shown = [_Shown(p, chart(p.series, p.marks, end=now)) for p in pages]
    return {"fleets": shown, "kinds": KINDS}


def render_main(pages: Sequence[FleetPage], *, now: datetime | None = None) -> str:
    """The page's `<main>`: what the live page fetches and swaps in."""
    now = now or datetime.now(UTC)
    return _environment().get_template("page/fleets.html.j2").render(_context(pages, now))


def render_page(
    pages: Sequence[FleetPage],
    *,
    live: bool = False,
    interval_s: float = 5.0,
    now: datetime | None = None,
) -> str:
    """One self-contained HTML document: no request leaves it (no CDN, no font, no image)."""
    now = now or datetime.now(UTC)
    names = ", ".join(p.fleet for p in pages)
    values = _context(pages, now) | {
        "title": f"openclaw-reconciler: fleet{'s' if len(pages) > 1 else ''} {names}",
        "generated": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "live": live,
        "interval_ms": int(interval_s * 1000),
    }
    return _environment().get_template("page/fleet.html.j2").render(values)
