"""The commands that act on a fleet or read its state: `reconcile --once`, `status`,
`history`, `unfreeze`, `run` (the daemon), `demo` and `lb show`.

They reach the spec repository's remote (and its status branch), the hosts or the load
balancer; `reconciler.commands_spec` has the commands that only read a spec.
`reconciler.cli` wires both to the argument parser.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.commands_spec import load_all
from reconciler.desired import source
from reconciler.exitcodes import EXIT_CHANGES, EXIT_INVALID, EXIT_OK
from reconciler.serve.config import ConfigError
from reconciler.views import render

if TYPE_CHECKING:
    from reconciler.record.gitstore import GitStore


def _store(args: argparse.Namespace) -> GitStore:
    from reconciler.record.gitstore import GitStore, SshAccess

    cache = Path(args.cache) if args.cache else default_cache(args.remote)
    ssh = None
    if args.git_ssh_key or args.git_known_hosts:
        if not (args.git_ssh_key and args.git_known_hosts):
            raise ConfigError("--git-ssh-key and --git-known-hosts go together")
        ssh = SshAccess(Path(args.git_ssh_key), Path(args.git_known_hosts))
    return GitStore(args.remote, cache / "repo.git", branch=args.branch, ssh=ssh)


def default_cache(remote: str) -> Path:
    import hashlib
    import os

    root = Path(
        os.environ.get("RECONCILER_CACHE_DIR", Path.home() / ".cache" / "openclaw-reconciler")
    )
    return root / hashlib.sha256(remote.encode()).hexdigest()[:16]


def cmd_reconcile(args: argparse.Namespace) -> int:
    from reconciler.serve.daemon import build_engine, run_until_settled

    stop = _stop_on_signals()
    engine = build_engine(args, _store(args))
    try:
        result = run_until_settled(
            engine,
            progress=not args.json,
            max_passes=args.max_passes,
            max_failures=args.retries + 1,
            max_backoff=args.max_backoff,
            stop=stop,
        )
        if result.phase == "Stopped":
            engine.release()  # a standby (or the next run) takes over at once
    finally:
        engine.close()  # a status push still in flight reaches the remote first
    if args.json:
        render.emit_json(
            {"phase": result.phase, "message": result.message, "commit": result.commit}
        )
    elif result.phase not in ("Complete", "Idle"):
        print(f"{result.phase}: {result.message}", file=sys.stderr)
    return {"Complete": EXIT_OK, "Idle": EXIT_OK}.get(
        result.phase,
        EXIT_CHANGES if result.phase in NOT_SETTLED else EXIT_INVALID,
    )


NOT_SETTLED = ("Progressing", "Paused", "Frozen", "Stopped")
"""Phases a later run moves on from: `reconcile --once` exits 3 with them."""


def _stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT ask the run to stop after the step in hand (recorded, the lease
    released), as the daemon does; a second one stops at once, and the transports kill the
    command in hand on the way out, so no remote install goes on alone."""
    import signal

    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            sys.exit(128 + signum)
        stop.set()
        print("stopping after the step in hand (a second signal stops at once)", file=sys.stderr)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_status(args: argparse.Namespace) -> int:
    from reconciler.record.status import read_status
    from reconciler.views import report

    store = _store(args)
    store.fetch()
    if args.html:
        from reconciler.views.page import collect, render_page

        html = render_page([collect(store.repo, args.fleet)])
        _write_atomically(Path(args.html), html)
        print(f"wrote {args.html}: the fleet page of {args.fleet} ({len(html) // 1024} KiB)")
        return EXIT_OK
    doc = report.status_doc(read_status(store, args.fleet))
    if args.json:
        render.emit_json(doc)
    else:
        report.print_status(doc, render.console())
    return EXIT_OK


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def cmd_history(args: argparse.Namespace) -> int:
    from reconciler.views import report

    store = _store(args)
    store.fetch()
    entries = list(report.history(store, args.fleet, args.n))
    if args.json:
        render.emit_json(entries)
    else:
        report.print_history(entries, render.console())
    return EXIT_OK


def cmd_unfreeze(args: argparse.Namespace) -> int:
    from reconciler.record.status import Transition, read_status, write

    store = _store(args)
    store.fetch()
    status = read_status(store, args.fleet)
    if status.freeze is None:
        print(f"fleet {args.fleet} is not frozen")
        return EXIT_OK
    t = Transition(args.fleet, f"unfrozen by operator: {args.reason}", phase="Progressing")
    t.put("freeze.json", None)
    record = status.rollout
    if record is not None and record.phase == "Frozen":
        t.put(
            "rollout.json", record.model_copy(update={"phase": "Progressing", "message": t.subject})
        )
    commit = write(store, status, t)
    print(f"unfrozen ({(commit or '')[:12]}): was {status.freeze.reason}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from reconciler.serve.config import check_secret_files, load_config
    from reconciler.serve.daemon import run_daemon

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    config = load_config(Path(args.config))
    check_secret_files(Path(args.config), config)
    return run_daemon(config, signatures=args.trusted_signers)


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.demo import run

    return run(Path(args.dir) if args.dir else None)


def cmd_lb(args: argparse.Namespace) -> int:
    from reconciler.lb import from_spec
    from reconciler.views.lbshow import show

    files = source.read_directory(Path(args.path))
    loaded, problems = load_all(files, require_lock=False)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        return EXIT_INVALID
    for spec in loaded:
        from reconciler.desired.spec import server_name

        servers = [server_name(h, p) for h, p in spec.fleet.profiles()]
        show(from_spec(spec.fleet.load_balancer), render.console(), servers)
    return EXIT_OK
