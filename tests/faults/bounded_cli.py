"""`reconciler reconcile --once`, with a retry budget a test can wait for.

The real CLI retries a temporary error (an unreachable host, git remote or load balancer) 8
times with exponential backoff up to 60 s: about four minutes before it gives up and exits 1
(`--max-passes` bounds it too, but counts every pass, the good ones included, so a test cannot
say how many failures it allows). The fault suite needs to see that give-up, so this runs the
very same parser, store, engine and `run_until_settled` as `reconciler.cli.cmd_reconcile`, with
only `max_failures` and `max_backoff` taken from the environment, and maps the outcome to the
CLI's exit codes and `error: ...` line (test_git_faults checks the real CLI's own give-up once).
Run as `python -m tests.faults.bounded_cli --remote ... --fleet ...`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from reconciler import render
from reconciler.cli import EXIT_CHANGES, EXIT_INTERNAL, EXIT_INVALID, EXIT_OK, build_parser
from reconciler.daemon import build_engine, run_until_settled
from reconciler.errors import ReconcilerError
from reconciler.gitstore import GitStore

FAILURES_ENV = "FAULTS_MAX_FAILURES"
BACKOFF_ENV = "FAULTS_MAX_BACKOFF"


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(["reconcile", "--once", *argv])
    try:
        store = GitStore(args.remote, Path(args.cache) / "repo.git", branch=args.branch)
        engine = build_engine(args, store)
        result = run_until_settled(
            engine,
            progress=not args.json,
            max_passes=args.max_passes,
            max_failures=int(os.environ.get(FAILURES_ENV, "3")),
            max_backoff=float(os.environ.get(BACKOFF_ENV, "0.5")),
        )
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    if args.json:
        render.emit_json({"phase": result.phase, "message": result.message})
    if result.phase in ("Complete", "Idle"):
        return EXIT_OK
    return EXIT_CHANGES if result.phase in ("Progressing", "Paused", "Frozen") else EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
