"""A fleet's observed state on the status branch: read it whole, write one transition at a time.

Layout under `fleets/<fleet>/`: `rollout.json`, `nodes/<host>.json`, `bookmarks/<seq>-<host>-
<phase>.json`, `freeze.json`, `lease.json`. Each transition is one commit with a subject a
human reads in `git log` and trailers a machine reads (`Spec-Commit:`, `Node:`, `Phase:`,
`Readiness-Sha256:`). Volatile fields (timestamps) alone never make a commit: a pass that
observes nothing new writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import pygit2
from pydantic import BaseModel

from reconciler.canonical import pretty_bytes
from reconciler.record.documents import (
    Bookmark,
    Freeze,
    Lease,
    Readiness,
    RecoveryPoint,
    RolloutRecord,
)
from reconciler.record.gitstore import GitStore

M = TypeVar("M", bound=BaseModel)
VOLATILE = frozenset({"updatedAt", "observedAt", "readinessSha256", "freeDiskMb"})


def fleet_dir(fleet: str) -> str:
    return f"fleets/{fleet}"


@dataclass(frozen=True)
class FleetStatus:
    """Everything the status branch says about one fleet, at one status commit."""

    fleet: str
    commit: pygit2.Commit | None
    rollout: RolloutRecord | None
    freeze: Freeze | None
    lease: Lease | None
    nodes: dict[str, Readiness]
    bookmarks: list[str]

    @property
    def next_seq(self) -> int:
        seqs = [int(name.split("-", 1)[0]) for name in self.bookmarks if name[:1].isdigit()]
        return max(seqs, default=0) + 1

    def bookmark_for(self, store: GitStore, host: str, spec_commit: str) -> Bookmark | None:
        """The newest bookmark of `host` taken for `spec_commit`."""
        for name in reversed(self.bookmarks):
            if f"-{host}-" not in name:
                continue
            bookmark = _parse(
                store.read(self.commit, f"{fleet_dir(self.fleet)}/bookmarks/{name}"), Bookmark
            )
            if (
                bookmark is not None
                and bookmark.host == host
                and bookmark.spec_commit == spec_commit
            ):
                return bookmark
        return None

    def recovery_points(
        self, store: GitStore, host: str, *, newest: int = 20
    ) -> list[RecoveryPoint]:
        """The recovery points the newest `newest` bookmarks of `host` (or of the whole fleet)
        recorded for it, newest first. Whether each is still on the host is for the host to
        say (they are pruned there)."""
        names = [n for n in reversed(self.bookmarks) if f"-{host}-" in n or "-fleet-" in n]
        points: list[RecoveryPoint] = []
        for name in names[:newest]:
            data = store.read(self.commit, f"{fleet_dir(self.fleet)}/bookmarks/{name}")
            bookmark = _parse(data, Bookmark)
            points += [p for p in (bookmark.recovery_points if bookmark else []) if p.host == host]
        return points


def _parse(data: bytes | None, model: type[M]) -> M | None:
    if data is None:
        return None
    return model.model_validate(json.loads(data))


def read_status(store: GitStore, fleet: str) -> FleetStatus:
    """Read one fleet's status from the (already fetched) status branch."""
    head = store.status_head()
    base = fleet_dir(fleet)
    nodes = {}
    for name in store.list_dir(head, f"{base}/nodes"):
        doc = _parse(store.read(head, f"{base}/nodes/{name}"), Readiness)
        if doc is not None:
            nodes[doc.host] = doc
    return FleetStatus(
        fleet=fleet,
        commit=head,
        rollout=_parse(store.read(head, f"{base}/rollout.json"), RolloutRecord),
        freeze=_parse(store.read(head, f"{base}/freeze.json"), Freeze),
        lease=_parse(store.read(head, f"{base}/lease.json"), Lease),
        nodes=nodes,
        bookmarks=store.list_dir(head, f"{base}/bookmarks"),
    )


@dataclass
class Transition:
    """The files and message of one status commit, assembled before it is written."""

    fleet: str
    subject: str
    spec_commit: str | None = None
    node: str | None = None
    phase: str | None = None
    files: dict[str, bytes | None] = field(default_factory=dict)
    readiness_sha256: str | None = None
    reconciler: str | None = None

    def put(self, rel: str, doc: BaseModel | None) -> Transition:
        path = f"{fleet_dir(self.fleet)}/{rel}"
        self.files[path] = (
            None
            if doc is None
            else pretty_bytes(doc.model_dump(mode="json", by_alias=True, exclude_none=True))
        )
        return self

    def readiness(self, doc: Readiness) -> Transition:
        self.readiness_sha256 = doc.readiness_sha256
        return self.put(f"nodes/{doc.host}.json", doc)

    def bookmark(self, doc: Bookmark) -> Transition:
        return self.put(f"bookmarks/{doc.seq:06d}-{doc.host}-{doc.phase}.json", doc)

    def message(self) -> str:
        trailers = [
            ("Fleet", self.fleet),
            ("Spec-Commit", self.spec_commit),
            ("Node", self.node),
            ("Phase", self.phase),
            ("Readiness-Sha256", self.readiness_sha256),
            ("Reconciler", self.reconciler),
        ]
        lines = [f"{key}: {value}" for key, value in trailers if value]
        return f"{self.subject}\n\n" + "\n".join(lines) + "\n"


def _same_but_volatile(old: bytes | None, new: bytes | None) -> bool:
    if old is None or new is None:
        return old is new
    try:
        a, b = json.loads(old), json.loads(new)
    except ValueError:
        return False
    if not isinstance(a, dict) or not isinstance(b, dict):
        return bool(a == b)
    return {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE
    }


def material_changes(
    store: GitStore, parent: pygit2.Commit | None, files: Mapping[str, bytes | None]
) -> dict[str, bytes | None]:
    """Drop the files whose only change is a timestamp or a digest of one."""
    return {
        path: data
        for path, data in files.items()
        if not _same_but_volatile(store.read(parent, path), data)
    }


def write(
    store: GitStore,
    status: FleetStatus,
    transition: Transition,
    *,
    force: bool = False,
    defer: bool = False,
) -> str | None:
    """Write one transition over `status.commit` (CAS); None when nothing material changed.
    `defer`: push in the background (GitStore.commit_status says when that is safe)."""
    files = transition.files if force else material_changes(store, status.commit, transition.files)
    if not files:
        return None
    return store.commit_status(status.commit, files, transition.message(), defer=defer)
