"""Where a spec comes from: a directory on disk or a commit in a git repository.

Reading from git goes straight to the object database with pygit2 (no working tree, no
checkout), so `validate --ref` and `plan --base --head` see exactly what was committed.
A repository holds either one fleet (`fleet.yaml` at the top) or several
(`fleets/<name>/fleet.yaml`); each fleet's lock sits beside its fleet file and known_hosts
is found through `ssh.knownHosts`, relative to the fleet file.

Every file is measured before it is read: a file over the spec size cap is not read (nor
parsed) at all, only recorded in `SpecFiles.too_large` for validation to refuse. So a 50 MB
fleet.yaml costs a stat, whether it comes from a directory, a git tree or the engine's mirror.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path

import pygit2
from ruamel.yaml.error import YAMLError

from reconciler.desired import yamlsafe
from reconciler.desired.lock import LOCK_FILE
from reconciler.desired.validate import MAX_SPEC_BYTES, SpecFiles
from reconciler.errors import PermanentError

FLEET_FILE = "fleet.yaml"


class TooLarge:
    """A file left unread: it is over the size cap."""

    def __init__(self, size: int) -> None:
        self.size = size


Reader = Callable[[str], bytes | TooLarge | None]


class SourceError(PermanentError):
    """The spec could not be read at all (no such directory, commit or fleet file)."""


def fleet_paths(names: list[str]) -> list[str]:
    """The fleet files among `names` (paths relative to the repo root), in a stable order."""
    found = [n for n in names if n == FLEET_FILE]
    found += sorted(n for n in names if re.fullmatch(r"fleets/[^/]+/" + re.escape(FLEET_FILE), n))
    return found


def _files(fleet_path: str, read: Reader, root: str = "") -> SpecFiles:
    """The files of the fleet at `fleet_path` (relative to the repo root `root`)."""

    def shown(rel: str) -> str:
        return posixpath.join(root, rel) if root else rel

    too_large: list[tuple[str, int]] = []

    def bounded(rel: str) -> bytes | None:
        data = read(shown(rel))
        if isinstance(data, TooLarge):
            too_large.append((shown(rel), data.size))
            return b""
        return data

    fleet = bounded(fleet_path)
    if fleet is None:
        raise SourceError(f"{shown(fleet_path)}: not found")
    here = posixpath.dirname(fleet_path)
    name = _known_hosts_name(fleet) if not too_large else "known_hosts"
    known_path = posixpath.normpath(posixpath.join(here, name))
    # Pinned keys must live in the reviewed spec tree: no absolute path, no way out of it.
    inside = not posixpath.isabs(name) and not known_path.startswith("..")
    lock_path = posixpath.join(here, LOCK_FILE) if here else LOCK_FILE
    return SpecFiles(
        fleet_path=shown(fleet_path),
        fleet=fleet,
        lock_path=shown(lock_path),
        lock=bounded(lock_path),
        known_hosts_path=shown(known_path) if inside else name,
        known_hosts=bounded(known_path) if inside else None,
        too_large=tuple(too_large),
    )


def _known_hosts_name(fleet: bytes) -> str:
    """`ssh.knownHosts` (default `known_hosts`), read leniently: validation comes later (and
    reads the same document again from yamlsafe's memo, not from a second parse)."""
    try:
        doc = yamlsafe.load(fleet)
    except (YAMLError, ValueError):  # UnicodeDecodeError is a ValueError
        return "known_hosts"
    ssh = doc.get("ssh") if isinstance(doc, dict) else None
    name = ssh.get("knownHosts") if isinstance(ssh, dict) else None
    return name if isinstance(name, str) and name else "known_hosts"


def read_directory(path: Path) -> list[SpecFiles]:
    """Every fleet under a spec directory (or the one fleet file `path` names)."""
    if path.is_file():
        root, names = path.parent, [FLEET_FILE] if path.name == FLEET_FILE else [path.name]
    elif path.is_dir():
        root = path
        names = [str(p.relative_to(path)) for p in path.glob("fleet.yaml")]
        names += [str(p.relative_to(path)) for p in path.glob("fleets/*/fleet.yaml")]
    else:
        raise SourceError(f"{path}: no such file or directory")
    names = fleet_paths(names) if path.is_dir() else names
    if not names:
        raise SourceError(f"{path}: no fleet.yaml and no fleets/*/fleet.yaml")

    def read(name: str) -> bytes | TooLarge | None:
        target = Path(name)
        return _read_file(target) if target.is_file() else None

    return [_files(name, read, root.as_posix()) for name in names]


def _read_file(path: Path) -> bytes | TooLarge:
    """The file's bytes, or its size when over the cap (read no further than one byte past it,
    so a file that grows while it is read is caught too)."""
    with path.open("rb") as f:
        data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            return TooLarge(os.fstat(f.fileno()).st_size)
    return data


def open_repo(repo: Path | str) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(repo))
    except pygit2.GitError as exc:
        raise SourceError(f"{repo}: not a git repository ({exc})") from None


def resolve(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    """A revision (branch, tag, sha, `HEAD~1`) to its commit."""
    try:
        obj = repo.revparse_single(rev)
        commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise SourceError(f"{rev}: no such revision in {repo.path} ({exc})") from None
    return commit


def read_commit(repo: pygit2.Repository, rev: str) -> tuple[str, list[SpecFiles]]:
    """Every fleet in the tree of `rev`; returns the commit id and the fleets."""
    commit = resolve(repo, rev)
    tree = commit.tree
    names = [n for n in (FLEET_FILE,) if n in tree]
    fleets = tree / "fleets" if "fleets" in tree else None
    if isinstance(fleets, pygit2.Tree):
        names += [f"fleets/{e.name}/{FLEET_FILE}" for e in fleets if e.type_str == "tree"]
    paths = [n for n in fleet_paths(names) if _blob(tree, n) is not None]
    if not paths:
        raise SourceError(f"{rev} ({str(commit.id)[:12]}): no fleet.yaml in the tree")
    return str(commit.id), [_files(p, lambda rel: _blob(tree, rel)) for p in paths]


def _blob(tree: pygit2.Tree, rel: str) -> bytes | TooLarge | None:
    try:
        obj = tree / rel
    except KeyError:
        return None
    if not isinstance(obj, pygit2.Blob):
        return None
    return TooLarge(obj.size) if obj.size > MAX_SPEC_BYTES else obj.data
