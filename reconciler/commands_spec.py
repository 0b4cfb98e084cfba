"""The commands that read a spec and need no fleet: `validate`, `schema`, `init`, `lock`,
`plan` and `comment` (the plan's markdown posted on a pull request).

They work on a spec directory or a commit of the spec repository, never on hosts, and are
what CI runs on a pull request; `reconciler.commands_fleet` has the commands that act on (or
read the state of) a running fleet. `reconciler.cli` wires both to the argument parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reconciler.desired import source
from reconciler.desired.validate import LoadedSpec, SpecFiles, load
from reconciler.errors import LockError, Problem, SpecError
from reconciler.exitcodes import EXIT_CHANGES, EXIT_INVALID, EXIT_OK
from reconciler.views import render, schemas


def load_all(
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
    loaded, problems = load_all(files, require_lock=not args.no_lock)
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
    from reconciler.forge import scaffold

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
    from reconciler.desired.resolve import resolve_lock

    files = source.read_directory(Path(args.path))
    # The lock on disk is what this command replaces: a stale one is not a problem here.
    loaded, problems = load_all([replace(f, lock=None) for f in files], require_lock=False)
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
    from reconciler.rollout.planner import plan
    from reconciler.views import report

    base_fleets: dict[str, LoadedSpec] = {}
    if args.repo:
        repo = source.open_repo(args.repo)
        head_commit, head_files = source.read_commit(repo, args.head)
        base_commit: str | None = None
        if args.base:
            base_commit, base_files = source.read_commit(repo, args.base)
            base_loaded, _ = load_all(base_files, require_lock=False)
            base_fleets = {b.fleet.name: b for b in base_loaded}
    else:
        head_commit, base_commit = None, None
        head_files = source.read_directory(Path(args.path))
    loaded, problems = load_all(_select(head_files, args.fleet))
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
    from reconciler.forge import client as forge

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
