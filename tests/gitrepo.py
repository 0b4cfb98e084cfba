"""Real git repositories for tests: commits made with pygit2, as an operator's PRs would be."""

from __future__ import annotations

from pathlib import Path

import pygit2

SIG = pygit2.Signature("Operator", "operator@example.com", 1_790_000_000, 0)


class SpecRepo:
    """A non-bare spec repository whose commits are built from dicts of files."""

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), bare=False, initial_head="main")
        self.path = path

    def commit(self, files: dict[str, bytes], message: str, *, remove: tuple[str, ...] = ()) -> str:
        """Write `files` over the current tree (dropping `remove`) and commit on main."""
        index = self.repo.index
        for rel, data in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            index.add(rel)
        for rel in remove:
            (self.path / rel).unlink()
            index.remove(rel)
        index.write()
        tree = index.write_tree()
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        oid = self.repo.create_commit("HEAD", SIG, SIG, message, tree, parents)
        return str(oid)

    def revert(self, commit: str, message: str) -> str:
        """`git revert <commit>` on main, done the way git does it (a new commit)."""
        target = self.repo.get(commit)
        assert isinstance(target, pygit2.Commit)
        self.repo.revert(target)
        index = self.repo.index
        assert not index.conflicts, "revert conflicted"
        tree = index.write_tree()
        oid = self.repo.create_commit("HEAD", SIG, SIG, message, tree, [self.repo.head.target])
        self.repo.state_cleanup()
        return str(oid)
