"""Deferred status pushes on a real git daemon: in order, visible at once, errors surfaced.

A step's record is pushed while the next step runs (GitStore.commit_status(defer=True)). What
must hold: the writer sees its own commit at once and never waits for a deferred push; the
remote gets every commit, in order, by the next synchronous write or `flush`; a push that
loses a compare-and-swap race raises (for it and every commit queued behind it) and the
writer's view falls back to the remote's, so the steps are redone, never lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from reconciler.record.gitstore import STATUS_BRANCH, GitStore, StatusConflict
from reconciler.sandbox.gitd import GitDaemon


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with GitDaemon(tmp_path / "daemon") as daemon:
        yield daemon.create("fleet")


def remote_log(path: Path) -> list[str]:
    repo = pygit2.Repository(str(path))
    ref = repo.references.get(f"refs/heads/{STATUS_BRANCH}")
    if ref is None:
        return []
    return [c.message.strip() for c in repo.walk(ref.target)]


def write(store: GitStore, text: str, *, defer: bool) -> str | None:
    return store.commit_status(store.status_head(), {"f.txt": text.encode()}, text, defer=defer)


def test_deferred_pushes_arrive_in_order_and_are_visible_at_once(
    remote: tuple[Path, str], tmp_path: Path
) -> None:
    path, url = remote
    store = GitStore(url, tmp_path / "cache")
    store.fetch()
    write(store, "one", defer=False)
    second = write(store, "two", defer=True)
    head = store.status_head()
    assert head is not None and str(head.id) == second  # the writer sees its own commit
    store.fetch()  # a fetch while a push is in flight does not undo the writer's view
    assert str(store.status_head().id) == second  # type: ignore[union-attr]
    third = write(store, "three", defer=True)  # queued behind "two": the writer never waits
    assert str(store.status_head().id) == third  # type: ignore[union-attr]
    assert remote_log(path)[-1] == "one"
    store.close()
    assert remote_log(path) == ["three", "two", "one"]
    assert store.remote_status_head() == store.status_head()


def test_many_deferred_writes_reach_the_remote_in_order_and_a_sync_write_waits_for_them(
    remote: tuple[Path, str], tmp_path: Path
) -> None:
    path, url = remote
    store = GitStore(url, tmp_path / "cache")
    store.fetch()
    write(store, "0", defer=False)
    for i in range(1, 21):  # faster than the pushes: later ones supersede queued ones
        write(store, str(i), defer=True)
    write(store, "sync", defer=False)  # waits for every push in flight, then its own
    assert remote_log(path) == ["sync", *[str(i) for i in range(20, -1, -1)]]
    store.fetch()
    assert store.remote_status_head() == store.status_head()
    store.close()


def test_a_deferred_push_that_loses_the_race_is_raised_and_the_view_falls_back(
    remote: tuple[Path, str], tmp_path: Path
) -> None:
    path, url = remote
    mine = GitStore(url, tmp_path / "mine")
    other = GitStore(url, tmp_path / "other")
    mine.fetch()
    write(mine, "base", defer=False)
    other.fetch()
    write(other, "theirs", defer=False)  # someone else moves the branch first
    write(mine, "lost", defer=True)
    write(mine, "lost too", defer=True)  # queued behind a push that will fail
    with pytest.raises(StatusConflict):
        mine.flush()
    mine.fetch()
    head = mine.status_head()
    assert head is not None and head.message.strip() == "theirs"
    assert remote_log(path) == ["theirs", "base"]
    mine.close()
    other.close()


def test_a_failed_push_surfaces_at_the_next_fetch_and_nothing_behind_it_lands(
    remote: tuple[Path, str], tmp_path: Path
) -> None:
    path, url = remote
    mine, other = GitStore(url, tmp_path / "mine"), GitStore(url, tmp_path / "other")
    mine.fetch()
    write(mine, "base", defer=False)
    other.fetch()
    write(other, "theirs", defer=False)
    write(mine, "lost", defer=True)
    write(mine, "lost too", defer=True)
    with pytest.raises(StatusConflict):
        for _ in range(100):  # the pass's fetch raises once the push has failed
            mine.fetch()
    assert remote_log(path) == ["theirs", "base"]
    mine.fetch()  # the error was this pass's; the view is the remote's again
    assert mine.status_head().message.strip() == "theirs"  # type: ignore[union-attr]
    mine.close()
    other.close()
