"""The `reconciler` command line.

Exit codes are part of the interface, because CI and bots read them:
0 ok (and for `plan`: nothing changes), 1 internal error, 2 invalid input,
3 `plan` found changes.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import __version__, render, schemas, source
from reconciler.config import ConfigError
from reconciler.errors import InitError, LockError, Problem, ReconcilerError, SpecError
from reconciler.spec import NAME
from reconciler.validate import LoadedSpec, SpecFiles, load

if TYPE_CHECKING:
    from reconciler.gitstore import GitStore
    from reconciler.signatures import SignaturePolicy

EXIT_OK, EXIT_INTERNAL, EXIT_INVALID, EXIT_CHANGES = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]


def _load_all(
    files: Sequence[SpecFiles], *, require_lock: bool = True
) -> tuple[list[LoadedSpec], list[Problem]]:
    loaded, problems = [], []
    for f in files:
        try:
            loaded.append(load(f, require_lock=require_lock))
        except SpecError as exc:
            problems += exc.problems
    return loaded, problems


def _spec_files(args: argparse.Namespace) -> tuple[str | None, list[SpecFiles]]:
    if args.repo:
        return source.read_commit(source.open_repo(args.repo), args.ref)
    return None, source.read_directory(Path(args.path))


def _select(files: list[SpecFiles], fleet: str | None) -> list[SpecFiles]:
    if fleet is None:
        return files
    chosen = [f for f in files if _fleet_name(f) == fleet]
    if not chosen:
        raise source.SourceError(f"no fleet named {fleet!r}")
    return chosen


def _fleet_name(files: SpecFiles) -> str | None:
    try:
        return load(files, require_lock=False).fleet.name
    except SpecError:
        return None


# --- validate ----------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    commit, files = _spec_files(args)
    loaded, problems = _load_all(files, require_lock=not args.no_lock)
    if args.json:
        render.emit_json(
            {
                "valid": not problems,
                "commit": commit,
                "fleets": [spec.fleet.name for spec in loaded],
                "problems": [p.as_dict() for p in problems],
            }
        )
    elif problems:
        print(render.problems_text(problems), file=sys.stderr)
    else:
        names = ", ".join(spec.fleet.name for spec in loaded)
        print(f"valid: {names}" + (f" at {commit[:12]}" if commit else ""))
    return EXIT_INVALID if problems else EXIT_OK


# --- schema ------------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check:
        stale = schemas.stale(out)
        for name in stale:
            print(
                f"{out / name}: differs from the models; run `reconciler schema`", file=sys.stderr
            )
        return EXIT_INVALID if stale else EXIT_OK
    for path in schemas.write(out):
        print(f"wrote {path}")
    return EXIT_OK


# --- init --------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from reconciler import scaffold

    hosts = scaffold.with_roles([scaffold.HostArg.parse(h) for h in args.host])
    version = args.openclaw or scaffold.latest_release(args.registry, args.timeout)
    request = scaffold.Request(
        fleet=args.fleet, hosts=hosts, registry=args.registry, version=version,
        lb=scaffold.LbArg.parse(args.lb) if args.lb else scaffold.DEFAULT_LB,
        service_manager=args.service_manager, key_file=args.ssh_key_file,
        ci=tuple(dict.fromkeys(args.ci or scaffold.CI_FILES)),
    )  # fmt: skip
    keys = scaffold.scan_all(request.hosts, args.timeout)
    target = Path(args.dir)
    scaffold.write(target, scaffold.render(request, keys))
    print("Host keys scanned. Check each fingerprint against its host, out of band")
    print("(on the host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), before you commit:")
    for host in request.hosts:
        for key in keys[host.name]:
            print(
                f"  {host.name:<16} {key.line.split()[0]:<24} {key.key_type:<20} {key.fingerprint}"
            )
    print(f"wrote {target}: a git repository for fleet {request.fleet} (openclaw {version})")
    print(f"next: cd {target} && reconciler lock && reconciler validate && git add -A")
    return EXIT_OK


# --- lock --------------------------------------------------------------------------------------


def cmd_lock(args: argparse.Namespace) -> int:
    from reconciler.resolve import resolve_lock

    files = source.read_directory(Path(args.path))
    # The lock on disk is what this command replaces: a stale one is not a problem here.
    loaded, problems = _load_all([replace(f, lock=None) for f in files], require_lock=False)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        return EXIT_INVALID
    for spec, f in zip(loaded, files, strict=True):
        try:
            lock = resolve_lock(spec.fleet, registry=args.registry, timeout=args.timeout)
        except LockError as exc:
            print(f"{spec.files.fleet_path}: cannot lock:\n{exc}", file=sys.stderr)
            return EXIT_INVALID
        target = Path(spec.files.lock_path)
        data = lock.to_bytes()
        if args.check:
            if f.lock != data:
                print(f"{target}: stale; run `reconciler lock`", file=sys.stderr)
                return EXIT_INVALID
            continue
        target.write_bytes(data)
        print(f"wrote {target} ({len(lock.packages)} packages, sha256 {lock.sha256[:12]})")
    return EXIT_OK


# --- plan --------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from reconciler import report
    from reconciler.planner import plan

    base_fleets: dict[str, LoadedSpec] = {}
    if args.repo:
        repo = source.open_repo(args.repo)
        head_commit, head_files = source.read_commit(repo, args.head)
        base_commit: str | None = None
        if args.base:
            base_commit, base_files = source.read_commit(repo, args.base)
            base_loaded, _ = _load_all(base_files, require_lock=False)
            base_fleets = {b.fleet.name: b for b in base_loaded}
    else:
        head_commit, base_commit = None, None
        head_files = source.read_directory(Path(args.path))
    loaded, problems = _load_all(_select(head_files, args.fleet))
    if problems:
        if args.json:
            render.emit_json({"valid": False, "problems": [p.as_dict() for p in problems]})
        else:
            print(render.problems_text(problems), file=sys.stderr)
        return EXIT_INVALID
    # What the status branch last observed (with --repo): hosts out of service go first, and
    # each host's Node is checked against the target's engines.node before the merge.
    seen = {s.fleet.name: report.last_observed(repo, s.fleet) if args.repo else {} for s in loaded}
    down = {s.fleet.name: report.out_of_service(s.fleet, seen[s.fleet.name]) for s in loaded}
    plans = [
        plan(
            spec.fleet,
            spec.lock,
            base=base_fleets[spec.fleet.name].fleet if spec.fleet.name in base_fleets else None,
            base_commit=base_commit,
            head_commit=head_commit,
            node_versions={
                h: d.node_version for h, d in seen[spec.fleet.name].items() if d.node_version
            },
            first=sorted(down[spec.fleet.name]),
        )
        for spec in loaded
    ]
    if args.json:
        dumped = [p.dump() | {"outOfService": down[p.fleet]} for p in plans]
        render.emit_json({"valid": True, "plans": dumped})
    elif args.format == "markdown":
        for spec, p in zip(loaded, plans, strict=True):
            roles = {h.name: h.role for h in spec.fleet.hosts}
            notices = report.held_notices(repo, spec.fleet) if args.repo else []
            print(render.plan_markdown(p, roles, out_of_service=down[p.fleet], notices=notices))
    else:
        out = render.console()
        for p in plans:
            render.print_plan(p, out, out_of_service=down[p.fleet])
    return EXIT_CHANGES if any(p.changed for p in plans) else EXIT_OK


# --- comment -----------------------------------------------------------------------------------


def cmd_comment(args: argparse.Namespace) -> int:
    from reconciler import forge

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        comments = forge.split_comments(text)
        env = args.token_env or forge.DEFAULT_TOKEN_ENV[args.forge]
        token = forge.read_token(env=env, file=args.token_file)
        client = forge.ForgeClient(args.forge, args.api, args.repository, token, args.timeout)
    except (OSError, UnicodeDecodeError, forge.ForgeInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for fleet, body in comments:
        print(f"fleet {fleet}: {client.upsert_comment(args.pr, body).describe()}")
    return EXIT_OK


# --- the engine ----------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> GitStore:
    from reconciler.gitstore import GitStore, SshAccess

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
    from reconciler.daemon import build_engine, run_until_settled

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
    from reconciler import report
    from reconciler.status import read_status

    store = _store(args)
    store.fetch()
    if args.html:
        from reconciler.page import collect, render_page

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
    from reconciler import report

    store = _store(args)
    store.fetch()
    entries = list(report.history(store, args.fleet, args.n))
    if args.json:
        render.emit_json(entries)
    else:
        report.print_history(entries, render.console())
    return EXIT_OK


def cmd_unfreeze(args: argparse.Namespace) -> int:
    from reconciler.status import Transition, read_status, write

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

    from reconciler.config import check_secret_files, load_config
    from reconciler.daemon import run_daemon

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
    from reconciler.lbshow import show

    files = source.read_directory(Path(args.path))
    loaded, problems = _load_all(files, require_lock=False)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        return EXIT_INVALID
    for spec in loaded:
        from reconciler.spec import server_name

        servers = [server_name(h, p) for h, p in spec.fleet.profiles()]
        show(from_spec(spec.fleet.load_balancer), render.console(), servers)
    return EXIT_OK


def _fleet_arg(text: str) -> str:
    """A fleet name as the spec allows it (it becomes a path on the status branch)."""
    if not re.fullmatch(NAME, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fleet name (lower-case letters, digits and '-', at most 63)"
        )
    return text


def _add_remote(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", required=True, help="spec repository URL or path")
    p.add_argument("--fleet", required=True, type=_fleet_arg, help="fleet name")
    p.add_argument("--branch", default="main", help="watched branch (default main)")
    p.add_argument("--cache", help="cache directory (default ~/.cache/openclaw-reconciler/...)")
    p.add_argument("--git-ssh-key", help="private key for an SSH remote (ssh:// or user@host:)")
    p.add_argument("--git-known-hosts", help="the SSH remote's pinned host key (known_hosts)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# --- wiring ------------------------------------------------------------------------------------

DEFAULT_RETRIES = 7
"""`reconcile --once` gives up on the 8th temporary failure in a row (about four minutes)."""
DEFAULT_MAX_BACKOFF = 60.0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _non_negative_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _trusted_signers(text: str) -> SignaturePolicy:
    """`--trusted-signers FILE`: read and checked while parsing, so a bad file stops the
    command (exit 2, file:line and what was expected) before anything is done."""
    from reconciler.signatures import SignersFileError, load_policy

    try:
        return load_policy(ssh_allowed_signers=Path(text))
    except SignersFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_trusted_signers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-signers",
        type=_trusted_signers,
        metavar="FILE",
        help="apply a head commit only if signed by a key in FILE (ssh-keygen allowed_signers "
        "lines, or public key lines); any other head is recorded as invalid, not applied",
    )


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default=".", help="spec directory or fleet file")
    p.add_argument("--repo", help="read from this git repository instead of a directory")
    p.add_argument("--ref", default="HEAD", help="revision to read with --repo (default HEAD)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconciler", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a spec: schema, semantics, known_hosts, lock")
    _add_source(p)
    p.add_argument("--no-lock", action="store_true", help="do not require openclaw.lock")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("schema", help="write schemas/*.schema.json from the models")
    p.add_argument("--out", default="schemas", help="output directory (default schemas/)")
    p.add_argument("--check", action="store_true", help="exit 2 when the files are stale")
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser("init", help="start a spec repository: fleet.yaml, scanned known_hosts, CI")
    p.add_argument("dir", help="the new repository's directory (absent or empty)")
    p.add_argument("--fleet", required=True, type=_fleet_arg, help="the fleet's name")
    p.add_argument(
        "--host", action="append", required=True, metavar="NAME=USER@ADDRESS[:PORT]",
        help="a host (repeat; the first of several is the canary)",
    )  # fmt: skip
    p.add_argument("--registry", required=True, help="the npm registry the hosts install from")
    p.add_argument("--openclaw", metavar="VERSION", help="core release (default: latest)")
    p.add_argument(
        "--lb", metavar="DRIVER:ADDRESS[:BACKEND]",
        help="haproxy:unix:///path:BACKEND, haproxy:tcp://host:port:BACKEND or file:/path "
        "(default haproxy:unix:///run/haproxy/admin.sock:openclaw)",
    )  # fmt: skip
    p.add_argument("--service-manager", choices=("launchd", "systemd"), default="launchd")
    p.add_argument("--ssh-key-file", help="the key the reconciler logs in with (else keyEnv)")
    p.add_argument(
        "--ci", action="append", choices=("github", "gitea", "forgejo", "gitlab"),
        help="CI files to write (repeat; default all four)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per host key scan")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("lock", help="resolve the pins against the registry; write openclaw.lock")
    p.add_argument("path", nargs="?", default=".", help="spec directory or fleet file")
    p.add_argument("--registry", help="resolve against this registry instead of the spec's")
    p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")
    p.add_argument("--check", action="store_true", help="exit 2 when the lock is stale")
    p.set_defaults(handler=cmd_lock)

    p = sub.add_parser("plan", help="the desired-state diff and the exact rollout plan")
    p.add_argument("path", nargs="?", default=".", help="spec directory (without --repo)")
    p.add_argument("--repo", help="git repository holding the spec")
    p.add_argument("--base", help="revision before the change (e.g. main)")
    p.add_argument("--head", default="HEAD", help="revision after the change (e.g. the PR)")
    p.add_argument("--fleet", type=_fleet_arg, help="only this fleet")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--format", choices=("text", "markdown"), default="text",
        help="markdown: one PR comment per fleet, with a hidden marker to update it in place",
    )  # fmt: skip
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("reconcile", help="converge a fleet: one pass (--once) until settled")
    _add_remote(p)
    p.add_argument(
        "--once", action="store_true", required=True, help="run until settled, then exit"
    )
    p.add_argument("--ssh-key", help="private key for the hosts (else the spec's keyFile/keyEnv)")
    p.add_argument("--instance", help="this reconciler's name in leases (default host:pid)")
    p.add_argument("--lease", type=float, default=120.0, help="lease seconds beyond a step")
    p.add_argument("--max-passes", type=int, default=10_000, help="stop after this many passes")
    _add_trusted_signers(p)
    p.add_argument(
        "--retries",
        type=_non_negative_int,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="temporary failures in a row retried before giving up with exit 1 "
        f"(default {DEFAULT_RETRIES}; 0: give up on the first)",
    )
    p.add_argument(
        "--max-backoff",
        type=_non_negative_seconds,
        default=DEFAULT_MAX_BACKOFF,
        metavar="SECONDS",
        help=f"cap on the exponential backoff between retries (default {DEFAULT_MAX_BACKOFF:g})",
    )
    p.set_defaults(handler=cmd_reconcile)

    p = sub.add_parser("status", help="hosts, versions, weights, phase, fingerprints")
    _add_remote(p)
    p.add_argument(
        "--html", metavar="FILE",
        help="write the fleet page (hosts, weight timeline, rollouts) as one self-contained file",
    )  # fmt: skip
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("history", help="the status branch log, readable")
    _add_remote(p)
    p.add_argument("-n", type=int, default=30, help="how many transitions (default 30)")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("unfreeze", help="remove the fleet's freeze record (with a commit)")
    _add_remote(p)
    p.add_argument("--reason", required=True, help="why; recorded in the commit")
    p.set_defaults(handler=cmd_unfreeze)

    p = sub.add_parser("lb", help="the load balancer as the reconciler sees it")
    lb_sub = p.add_subparsers(dest="lb_command", required=True, metavar="ACTION")
    show = lb_sub.add_parser("show", help="current weights and counters of the fleet's servers")
    show.add_argument("path", nargs="?", default=".", help="spec directory or fleet file")
    show.set_defaults(handler=cmd_lb)

    p = sub.add_parser("run", help="the daemon: poll and webhooks, one job per fleet")
    p.add_argument("--config", required=True, help="YAML settings (deploy/config.example.yaml)")
    _add_trusted_signers(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("comment", help="the plan's markdown on a PR: a comment per fleet, in place")
    p.add_argument("file", nargs="?", default="-", help="plan --format markdown output (- : stdin)")
    p.add_argument("--forge", required=True, choices=("github", "gitea", "gitlab"))
    p.add_argument(
        "--api", required=True,
        help="API root: https://api.github.com, https://HOST/api/v1 (Gitea, Forgejo), "
        "https://HOST/api/v4 (GitLab)",
    )  # fmt: skip
    p.add_argument("--repository", required=True, help="OWNER/NAME; GitLab: project path or id")
    p.add_argument("--pr", required=True, type=_non_negative_int, help="pull/merge request number")
    token = p.add_mutually_exclusive_group()
    token.add_argument(
        "--token-env", metavar="VAR",
        help="the API token from this variable (default GITHUB_TOKEN, GITEA_TOKEN, GITLAB_TOKEN)",
    )  # fmt: skip
    token.add_argument("--token-file", metavar="PATH", help="the API token from this file")
    p.add_argument("--timeout", type=_non_negative_seconds, default=10.0, help="HTTP timeout (s)")
    p.set_defaults(handler=cmd_comment)

    p = sub.add_parser("demo", help="the whole story in a local sandbox (the README's first step)")
    p.add_argument("--dir", help="sandbox directory (default ~/.cache/openclaw-reconciler/sandbox)")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (source.SourceError, ConfigError, InitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130
