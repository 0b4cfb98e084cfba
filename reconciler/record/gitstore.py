"""The spec repo and its status branch, read and written with pygit2 and no working tree.

The reconciler keeps a bare mirror of the spec remote in its cache directory. It reads the
watched branch (desired state) and the status branch (observed state) from there, and writes
status commits straight into the object database. A write is a compare-and-swap on the remote
ref: the push is refused unless the remote still points at the parent we built on (checked in
libgit2's push negotiation, before any object is sent), so two writers can never overwrite
each other. The loser refetches and redoes its step: it never force-pushes.

A remote over SSH is fetched and pushed with the `git` client and OpenSSH, never libgit2:
libgit2 (through pygit2) hands the certificate check no host key for SSH, so it could only
trust the service user's `~/.ssh/known_hosts`. OpenSSH checks the host key against the pinned
known_hosts file the operator names (`StrictHostKeyChecking=yes`, no other file) and offers
only the named key; the push keeps its compare-and-swap (`--force-with-lease` on the expected
remote commit).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler import redact
from reconciler.errors import PermanentError, ReconcilerError, TemporaryError

log = logging.getLogger(__name__)

STATUS_BRANCH = "reconciler/status"
_ZERO = "0" * 40
OUTGOING = "refs/reconciler/outgoing"  # what a push sends
LINGER_S = 0.05
"""A deferred push waits this long for a newer commit, so one push carries both (steps of a
rollout often record a few in a row; the bookmark's write or a flush ends the wait at once)."""


class StatusConflict(TemporaryError):
    """Someone else moved the status branch first: refetch and redo the step."""


class RemoteUnavailable(TemporaryError):
    """The git remote could not be reached."""


class StatusRewritten(PermanentError):
    """The status branch was rewritten (force-pushed) under us: refuse to act."""


class RemoteRefused(PermanentError):
    """The SSH remote refused us for good: its host key is not the pinned one, or our key is
    not accepted. Retrying cannot help until an operator fixes known_hosts or the key."""


SSH_URL = re.compile(r"^(ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:(?!//))")
"""ssh://... or scp-like user@host:path."""
_SSH_REFUSALS = ("Host key verification failed", "Permission denied", "REMOTE HOST IDENTIFICATION")


def _pattern(branch: str) -> str:
    """A refspec for `branch` that matches nothing, rather than failing, while it is absent."""
    parent, slash, _ = branch.rpartition("/")
    glob = f"{parent}/*" if slash else f"{branch}*"
    return f"+refs/heads/{glob}:refs/remotes/origin/{glob}"


@dataclass(frozen=True)
class SshAccess:
    """How to reach a spec remote over SSH: the private key to offer and the known_hosts file
    its host key must be in (nothing else is trusted)."""

    key_file: Path
    known_hosts: Path
    timeout: float = 120.0

    def env(self) -> dict[str, str]:
        ssh = [
            "ssh", "-F", "none", "-i", str(self.key_file), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
        ]  # fmt: skip
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        return keep | {"GIT_SSH_COMMAND": shlex.join(ssh), "GIT_TERMINAL_PROMPT": "0"}


class CacheUnwritable(PermanentError):
    """The reconciler's own cache (the bare mirror) cannot be written: disk full, read-only,
    over quota. Retrying cannot help until an operator frees space; nothing was recorded."""


# libgit2 reports a failed local write with the OS's words in its message (no errno).
_DISK_ERRORS = tuple(os.strerror(e) for e in (errno.ENOSPC, errno.EDQUOT, errno.EROFS))


def _disk_error(exc: BaseException) -> str | None:
    """The OS's words when `exc` is a failed local write (disk full, quota, read-only)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return exc.strerror or os.strerror(exc.errno)
    text = str(exc)
    return next((words for words in _DISK_ERRORS if words in text), None)


def _said(exc: BaseException) -> str:
    """What libgit2 said, with any URL's userinfo hidden (its messages may quote the remote)."""
    return redact.text(str(exc))


@contextlib.contextmanager
def _cache_write(says: Callable[[str], str]) -> Iterator[None]:
    """A failed local write in the block (disk full, quota, read-only) becomes CacheUnwritable
    with the message `says(the OS's words)`; any other error goes through untouched."""
    try:
        yield
    except (pygit2.GitError, OSError) as exc:
        why = _disk_error(exc)
        if why is None:
            raise
        raise CacheUnwritable(says(why)) from None


@dataclass(frozen=True)
class Identity:
    name: str = "openclaw-reconciler"
    email: str = "reconciler@localhost"


class _Callbacks(pygit2.RemoteCallbacks):
    """Host-key checking, credentials, and the compare-and-swap guard for pushes."""

    def __init__(
        self,
        *,
        expect: Mapping[str, str] | None = None,
        keypair: pygit2.Keypair | None = None,
        known_hosts_ok: Any = None,
    ) -> None:
        super().__init__(credentials=keypair)
        self.expect = dict(expect or {})
        self.known_hosts_ok = known_hosts_ok
        self.rejected: list[str] = []

    def certificate_check(self, certificate: Any, valid: bool, host: bytes | str) -> bool:
        # libgit2 accepts any SSH host key unless told otherwise: `valid` is its own check
        # against known_hosts, and a caller may add a stricter one.
        if self.known_hosts_ok is not None:
            return bool(self.known_hosts_ok(certificate, host))
        if not valid:
            raise pygit2.GitError(f"host key of {host!r} is not in known_hosts")
        return True

    def push_negotiation(self, updates: list[Any]) -> None:
        for update in updates:
            want = self.expect.get(update.dst_refname)
            if want is not None and str(update.src) != want:
                self.rejected.append(f"{update.dst_refname} is at {update.src}, expected {want}")
                raise pygit2.GitError("compare-and-swap failed")

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected.append(f"{refname}: {message}")


class GitStore:
    """A bare mirror of one spec remote: read desired and observed state, write status."""

    def __init__(
        self,
        remote_url: str,
        cache_dir: Path,
        *,
        branch: str = "main",
        status_branch: str = STATUS_BRANCH,
        identity: Identity | None = None,
        keypair: pygit2.Keypair | None = None,
        ssh: SshAccess | None = None,
    ) -> None:
        if SSH_URL.match(remote_url) and ssh is None:
            raise RemoteRefused(
                f"{redact.url(remote_url)} is reached over SSH: name the key "
                "(--git-ssh-key, gitSsh.keyFile) and the pinned known_hosts "
                "(--git-known-hosts, gitSsh.knownHosts)"
            )
        self.ssh = ssh if SSH_URL.match(remote_url) else None
        self.remote_url = remote_url
        self.shown_url = redact.url(remote_url)  # for messages: never the token in the URL
        self.branch = branch
        self.status_branch = status_branch
        self.identity = identity or Identity()
        self.keypair = keypair
        self._lock = threading.Lock()
        self.repo = self._open(cache_dir)
        self._pusher: tuple[ThreadPoolExecutor, pygit2.Repository] | None = None
        self._pending: Future[None] | None = None  # the last push queued
        self._pending_oid: pygit2.Oid | None = None  # the newest commit not yet on the remote
        self._remote_oid: pygit2.Oid | None = None  # where the remote is, as the pusher knows it
        self._push_error: ReconcilerError | None = None
        self._hurry = threading.Event()  # set: a write or a flush waits, stop lingering

    def _open(self, cache_dir: Path) -> pygit2.Repository:
        with _cache_write(
            lambda why: (
                f"cache {cache_dir}: cannot create the mirror of {self.shown_url}: "
                f"{why}; free space there (or point --cache elsewhere) and run again"
            )
        ):
            return self._open_or_init(cache_dir)

    def _open_or_init(self, cache_dir: Path) -> pygit2.Repository:
        if (cache_dir / "HEAD").exists():
            repo = pygit2.Repository(str(cache_dir))
        else:
            cache_dir.mkdir(parents=True, exist_ok=True)
            repo = pygit2.init_repository(str(cache_dir), bare=True)
        if "origin" not in [r.name for r in repo.remotes]:
            repo.remotes.create("origin", self.remote_url)
        elif repo.remotes["origin"].url != self.remote_url:
            repo.remotes.set_url("origin", self.remote_url)
        return repo

    # --- reading -------------------------------------------------------------------------

    def fetch(self) -> None:
        """Bring the watched branch and the status branch up to date from the remote. While
        a status push of ours is in flight, the status branch is ours (we hold the lease and
        its compare-and-swap would catch anyone else), so only the watched branch is fetched."""
        if self._pending is not None and (self._pending.done() or self._push_error):
            self.flush()  # a finished or failed push: its error is this pass's to handle
        specs = [f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}"]
        if self._pending is None:
            specs.append(
                f"+refs/heads/{self.status_branch}:refs/remotes/origin/{self.status_branch}"
            )

        def says(why: str) -> str:
            return (
                f"fetch from {self.shown_url} into the cache {self.repo.path} failed: {why}; "
                "free space there and run again (nothing was applied)"
            )

        if self.ssh is not None:
            with _cache_write(says), self._lock:
                # git fails on a refspec whose ref is missing (a status branch not written yet),
                # libgit2 skips it: the status branch is fetched through a pattern.
                wanted = [specs[0], *(_pattern(self.status_branch) for _ in specs[1:])]
                fetch = ["fetch", "--no-tags", "--no-write-fetch-head", "origin", *wanted]
                self._git_ssh("fetch", fetch)
            return
        try:
            with _cache_write(says), self._lock:
                self.repo.remotes["origin"].fetch(specs, callbacks=_Callbacks(keypair=self.keypair))
        except pygit2.GitError as exc:  # not a local write: the remote
            raise RemoteUnavailable(f"fetch from {self.shown_url} failed: {_said(exc)}") from None

    def _ref(self, name: str) -> pygit2.Commit | None:
        ref = self.repo.references.get(f"refs/remotes/origin/{name}")
        if ref is None:
            return None
        commit = self.repo.get(ref.target)
        return commit if isinstance(commit, pygit2.Commit) else None

    def spec_head(self) -> pygit2.Commit | None:
        return self._ref(self.branch)

    def remote_status_head(self) -> pygit2.Commit | None:
        """The status branch as the remote last confirmed it (no write in flight)."""
        return self._ref(self.status_branch)

    def status_head(self) -> pygit2.Commit | None:
        """The status branch as we last wrote or fetched it (a write in flight included)."""
        if self._pending_oid is not None:
            commit = self.repo.get(self._pending_oid)
            return commit if isinstance(commit, pygit2.Commit) else None
        return self._ref(self.status_branch)

    def read(self, commit: pygit2.Commit | None, path: str) -> bytes | None:
        if commit is None:
            return None
        try:
            obj = commit.tree / path
        except KeyError:
            return None
        return obj.data if isinstance(obj, pygit2.Blob) else None

    def list_dir(self, commit: pygit2.Commit | None, path: str) -> list[str]:
        if commit is None:
            return []
        try:
            tree = commit.tree / path
        except KeyError:
            return []
        return sorted(e.name or "" for e in tree) if isinstance(tree, pygit2.Tree) else []

    def is_ancestor(self, older: str, newer: str) -> bool:
        return older == newer or bool(self.repo.descendant_of(newer, older))

    # --- writing -------------------------------------------------------------------------

    def commit_status(
        self,
        parent: pygit2.Commit | None,
        changes: Mapping[str, bytes | None],
        message: str,
        *,
        defer: bool = False,
    ) -> str | None:
        """Commit `changes` (path -> bytes, or None to delete) over `parent` and push with CAS.

        Returns the new commit id, or None when the tree would not change (nothing new).
        Raises CacheUnwritable when the commit cannot even be built in the cache (disk full):
        then nothing was pushed, and the step that produced it is redone by the next pass.

        `defer=True` returns once the commit is in the cache and pushes it in the background,
        so the push overlaps the next steps' work instead of adding to it (a push costs from
        ~50 ms to a git daemon to a second to a hosted forge). Pushes go one at a time, in
        order; a commit made while one is in flight is pushed after it, together with any
        commit it supersedes (its ancestors), so a write never waits for the network, and a
        deferred push lingers LINGER_S for a newer commit to carry it. A failed
        push fails every commit queued after it; the next write, `fetch` or `flush` raises
        that error. Only for records whose loss is harmless: a step that is idempotent and
        re-observed, so a reconciler that dies with the push in flight redoes it. Without
        `defer`, the commit is queued the same way and waited for (with every push before it).
        """
        if self._push_error is not None:
            self.flush()
        with _cache_write(
            lambda why: (
                f"cannot write the status commit {message.splitlines()[0]!r} in the "
                f"cache {self.repo.path}: {why}; nothing was recorded (the step is redone on the "
                "next run); free space there and run again"
            )
        ):
            oid = self._build(parent, changes, message)
        if oid is None:
            return None
        local = f"refs/heads/{self.status_branch}"
        self.set_local_ref(local, oid, consequence="nothing was recorded (the step is redone)")
        if self._pusher is None:  # one thread, with a repository handle of its own
            self._pusher = (
                ThreadPoolExecutor(1, thread_name_prefix="status-push"),
                pygit2.Repository(self.repo.path),
            )
        pool, repo = self._pusher
        if self._pending is None:  # nothing in flight: the remote is at the parent
            self._remote_oid = parent.id if parent is not None else None
        self._pending_oid = oid
        self._pending = pool.submit(self._push_queued, oid, repo)
        if not defer:
            self.flush()
        return str(oid)

    def _push_queued(self, oid: pygit2.Oid, repo: pygit2.Repository) -> None:
        """On the pusher thread: push `oid` over where the remote is, unless a newer commit
        was queued meanwhile (its push carries this one) or an earlier push failed."""
        if self._push_error is not None:
            raise self._push_error
        if not self._superseded(oid, repo):
            self._hurry.wait(LINGER_S)
        if self._superseded(oid, repo):
            return
        try:
            self._push(oid, self._remote_oid, repo)
        except Exception as exc:  # whatever it was, this commit and those behind it are not there
            self._push_error = (
                exc
                if isinstance(exc, ReconcilerError)
                else RemoteUnavailable(f"push to {self.shown_url} failed: {_said(exc)}")
            )
            raise self._push_error from exc
        self._remote_oid = oid

    def _superseded(self, oid: pygit2.Oid, repo: pygit2.Repository) -> bool:
        """A newer commit is queued, and it carries `oid` (it descends from it)."""
        newest = self._pending_oid
        return newest is not None and newest != oid and repo.descendant_of(newest, oid)

    def flush(self) -> None:
        """Wait for the status pushes in flight, if any; raise their error (StatusConflict,
        RemoteUnavailable): then those commits are not on the remote, and the view falls back
        to the remote's, so the steps they recorded are redone."""
        pending = self._pending
        if pending is None:
            return
        self._hurry.set()
        error: ReconcilerError | None = None
        try:
            pending.result()
        except ReconcilerError as exc:
            error = exc
        error = error or self._push_error
        # Only once the queue has drained (an interrupt above leaves it for `close`).
        self._pending, self._pending_oid, self._push_error = None, None, None
        self._hurry.clear()
        if error is not None:
            raise error

    def close(self) -> None:
        """Push what is in flight (errors are logged: the next reconciler redoes the step)."""
        try:
            self.flush()
        except ReconcilerError as exc:
            log.warning("the last status push failed: %s", exc)
        if self._pusher is not None:
            self._pusher[0].shutdown(wait=True)
            self._pusher = None

    def _build(
        self, parent: pygit2.Commit | None, changes: Mapping[str, bytes | None], message: str
    ) -> pygit2.Oid | None:
        index = pygit2.Index()
        if parent is not None:
            index.read_tree(parent.tree)
        for path, data in changes.items():
            if data is None:
                if path in index:
                    index.remove(path)
            else:
                blob = self.repo.create_blob(data)
                index.add(pygit2.IndexEntry(path, blob, pygit2.enums.FileMode.BLOB))
        tree = index.write_tree(self.repo)
        if parent is not None and tree == parent.tree.id:
            return None
        sig = pygit2.Signature(self.identity.name, self.identity.email)
        parents = [parent.id] if parent is not None else []
        oid: pygit2.Oid = self.repo.create_commit(None, sig, sig, message, tree, parents)
        return oid

    def _push(self, oid: pygit2.Oid, remote: pygit2.Oid | None, repo: pygit2.Repository) -> None:
        """Push `oid` to the status branch with CAS on `remote` (where the remote must be,
        None: nowhere), through `repo` (the pusher thread's own handle)."""
        local = f"refs/heads/{self.status_branch}"
        expect = {local: str(remote) if remote is not None else _ZERO}
        callbacks = _Callbacks(expect=expect, keypair=self.keypair)
        # Exactly `oid` (the branch may have moved on meanwhile): through a ref of its own.
        self.set_local_ref(OUTGOING, oid, consequence="nothing was pushed", repo=repo)
        if self.ssh is not None:
            lease = f"--force-with-lease={local}:{str(remote) if remote is not None else ''}"
            self._git_ssh("push", ["push", "--porcelain", lease, "origin", f"{OUTGOING}:{local}"])
        else:
            self._push_pygit2(repo, local, callbacks)
        self.set_local_ref(
            f"refs/remotes/origin/{self.status_branch}",
            oid,
            consequence="the commit IS on the remote; the next run fetches it",
            repo=repo,
        )

    def _push_pygit2(self, repo: pygit2.Repository, local: str, callbacks: _Callbacks) -> None:
        try:
            repo.remotes["origin"].push([f"{OUTGOING}:{local}"], callbacks=callbacks)
        except pygit2.GitError as exc:
            if (
                callbacks.rejected
                or "non-fast-forward" in str(exc)
                or "compare-and-swap" in str(exc)
            ):
                raise StatusConflict(
                    f"status branch moved: {'; '.join(callbacks.rejected) or _said(exc)}",
                    delay=0.0,
                ) from None
            raise RemoteUnavailable(f"push to {self.shown_url} failed: {_said(exc)}") from None
        if callbacks.rejected:
            raise StatusConflict("; ".join(callbacks.rejected), delay=0.0)

    def _git_ssh(self, what: str, args: list[str]) -> None:
        """`git <args>` on the cache against the SSH remote, with the pinned host key and the
        named key only; a refusal of ours (the lease) is a StatusConflict, a host key or key
        refusal a RemoteRefused, anything else a RemoteUnavailable."""
        assert self.ssh is not None
        argv = ["git", f"--git-dir={self.repo.path}", *args]
        try:
            done = subprocess.run(
                argv, env=self.ssh.env(), capture_output=True, text=True,
                timeout=self.ssh.timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RemoteUnavailable(
                f"{what} {self.shown_url}: no answer within {self.ssh.timeout:g}s"
            ) from None
        if done.returncode == 0:
            return
        said = " | ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        said = redact.text(said[-800:])
        rejected = [line for line in done.stdout.splitlines() if line.startswith("!")]
        if rejected:
            raise StatusConflict(f"status branch moved: {'; '.join(rejected)}", delay=0.0)
        if any(refusal in said for refusal in _SSH_REFUSALS):
            raise RemoteRefused(f"{what} {self.shown_url} refused: {said}")
        raise RemoteUnavailable(f"{what} {self.shown_url} failed: {said}")

    def set_local_ref(
        self,
        name: str,
        target: pygit2.Oid | str,
        *,
        consequence: str = "nothing was done",
        repo: pygit2.Repository | None = None,
    ) -> None:
        """Point a ref of the cache (never the remote) at `target`; a full disk is a
        CacheUnwritable that says what it means (`consequence`), not a raw OSError."""
        oid = target if isinstance(target, pygit2.Oid) else pygit2.Oid(hex=target)
        with _cache_write(
            lambda why: (
                f"cannot update {name} in the cache {self.repo.path}: {why}; "
                f"{consequence}; free space there and run again"
            )
        ):
            (repo or self.repo).references.create(name, oid, force=True)
