"""Where a spec comes from: a directory on disk or a commit in a git repository.

Reading from git goes straight to the object database with pygit2 (no working tree, no
checkout), so `validate --ref` and `plan --base --head` see exactly what was committed.
A repository holds either one fleet (`fleet.yaml` at the top) or several
(`fleets/<name>/fleet.yaml`); each fleet's lock sits beside its fleet file and known_hosts
is found through `ssh.knownHosts`, relative to the fleet file.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path

import pygit2
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.errors import PermanentError
from reconciler.lock import LOCK_FILE
from reconciler.validate import SpecFiles

FLEET_FILE = "fleet.yaml"

Reader = Callable[[str], bytes | None]


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

    fleet = read(shown(fleet_path))
    if fleet is None:
        raise SourceError(f"{shown(fleet_path)}: not found")
    here = posixpath.dirname(fleet_path)
    name = _known_hosts_name(fleet)
    known_path = posixpath.normpath(posixpath.join(here, name))
    # Pinned keys must live in the reviewed spec tree: no absolute path, no way out of it.
    inside = not posixpath.isabs(name) and not known_path.startswith("..")
    lock_path = posixpath.join(here, LOCK_FILE) if here else LOCK_FILE
    return SpecFiles(
        fleet_path=shown(fleet_path),
        fleet=fleet,
        lock_path=shown(lock_path),
        lock=read(shown(lock_path)),
        known_hosts_path=shown(known_path) if inside else name,
        known_hosts=read(shown(known_path)) if inside else None,
    )


def _known_hosts_name(fleet: bytes) -> str:
    """`ssh.knownHosts` (default `known_hosts`), read leniently: validation comes later."""
    try:
        doc = YAML(typ="safe").load(fleet)
    except (YAMLError, ValueError):
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

    def read(name: str) -> bytes | None:
        target = Path(name)
        return target.read_bytes() if target.is_file() else None

    return [_files(name, read, root.as_posix()) for name in names]


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


def _blob(tree: pygit2.Tree, rel: str) -> bytes | None:
    try:
        obj = tree / rel
    except KeyError:
        return None
    return obj.data if isinstance(obj, pygit2.Blob) else None
