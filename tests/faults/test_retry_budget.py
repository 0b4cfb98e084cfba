"""The retry budget of `reconcile --once`: `--retries N` temporary failures in a row are
retried, at most `--max-backoff` seconds apart, then the run gives up: exit 1, and a last line
that says the last error, how many attempts failed, and which budget was spent.

The spec remote here is a real TCP listener on loopback that accepts every connection and hangs
up at once (a git server that is there but broken). libgit2 makes one connection per fetch, so
the listener counts the attempts, and times the backoff between them, independently of what the
reconciler prints about them. Nothing is ever applied: the first step of a pass is that fetch.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
import pytest

from reconciler.cli import build_parser, main
from tests.faults.conftest import ROOT

DEFAULT_FIRST_DELAY = 5.0
"""What a fetch failure asks to wait (RemoteUnavailable's delay): the backoff without a cap."""


@dataclass
class HangUp:
    """A listener that accepts and closes every connection, noting when each came."""

    sock: socket.socket
    url: str
    hits: list[float] = field(default_factory=list)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed: the test is over
            self.hits.append(time.monotonic())
            conn.close()


@contextlib.contextmanager
def hang_up_remote() -> Iterator[HangUp]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    remote = HangUp(sock, f"git://127.0.0.1:{sock.getsockname()[1]}/spec.git")
    thread = threading.Thread(target=remote.serve, daemon=True)
    thread.start()
    try:
        yield remote
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(5)


@pytest.mark.parametrize(
    ("flags", "attempts", "why"),
    [
        (("--retries", "2"), 3, "the retry budget of 2 is spent"),
        (("--retries", "0"), 1, "the retry budget of 0 is spent"),
        (("--retries", "5", "--max-passes", "2"), 2, "the limit of 2 passes is reached"),
    ],
    ids=["retries 2", "retries 0", "max-passes first"],
)
def test_retry_budget_is_honoured_and_said(
    tmp_path: Path, flags: tuple[str, ...], attempts: int, why: str
) -> None:
    with hang_up_remote() as remote:
        argv = [
            sys.executable, "-m", "reconciler", "reconcile", "--once",
            "--remote", remote.url, "--fleet", "sandbox", "--cache", str(tmp_path / "cache"),
            "--max-backoff", "0.2", *flags,
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "1000"},  # rich: one line per message
        )
        took = time.monotonic() - started
        time.sleep(0.2)  # a stray further attempt would show up here
        hits = list(remote.hits)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # Exactly `attempts` fetches reached the remote, and the reconciler counts the same.
    assert len(hits) == attempts, (hits, done.stderr)
    retried = [line for line in done.stderr.splitlines() if line.startswith("retrying in")]
    max_failures = int(flags[1]) + 1
    assert [m.split(": ", 1)[0] for m in retried] == [
        f"retrying in 0.2s (attempt {i} of {max_failures} failed)" for i in range(1, attempts)
    ], done.stderr
    assert all(f"fetch from {remote.url} failed" in m for m in retried), retried
    # The last line: the last error, then why the run stopped.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: fetch from {remote.url} failed: "), done.stderr
    plural = "s" if attempts != 1 else ""
    assert last.endswith(f" (gave up after {attempts} attempt{plural}: {why})"), last
    # The backoff was waited, and capped: 0.2 s, never the 5 s (then 10 s) the error asks for.
    for before, after in itertools.pairwise(hits):
        assert 0.2 <= after - before < DEFAULT_FIRST_DELAY - 1, hits
    assert took < DEFAULT_FIRST_DELAY * (attempts - 1) + 10, took
    # Nothing was applied: the cache never saw a status branch.
    cache = tmp_path / "cache" / "repo.git"
    if cache.exists():
        assert not list(pygit2.Repository(str(cache)).references), "something was fetched"


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--retries", "-1", "argument --retries: expected a whole number >= 0, got '-1'"),
        ("--retries", "1.5", "argument --retries: expected a whole number >= 0, got '1.5'"),
        ("--retries", "many", "argument --retries: expected a whole number >= 0, got 'many'"),
        ("--max-backoff", "-0.5", "argument --max-backoff: expected seconds >= 0, got '-0.5'"),
        ("--max-backoff", "nan", "argument --max-backoff: expected seconds >= 0, got 'nan'"),
        ("--max-backoff", "inf", "argument --max-backoff: expected seconds >= 0, got 'inf'"),
        ("--max-backoff", "1m", "argument --max-backoff: expected seconds >= 0, got '1m'"),
    ],
)
def test_bad_retry_flags_are_refused_by_argparse(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    argv = ["reconcile", "--once", "--remote", "r", "--fleet", "f", flag, value]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"reconciler reconcile: error: {expected}", err


def test_retry_flags_defaults_and_edges() -> None:
    base = ["reconcile", "--once", "--remote", "r", "--fleet", "f"]
    args = build_parser().parse_args(base)
    assert (args.retries, args.max_backoff) == (7, 60.0)  # the budget before the flags existed
    args = build_parser().parse_args([*base, "--retries", "0", "--max-backoff", "0"])
    assert (args.retries, args.max_backoff) == (0, 0.0)
