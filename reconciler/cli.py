"""The `reconciler` command line.

Exit codes are part of the interface, because CI and bots read them:
0 ok (and for `plan`: nothing changes), 1 internal error, 2 invalid input,
3 `plan` found changes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from reconciler import __version__, render, schemas, source
from reconciler.errors import Problem, ReconcilerError, SpecError
from reconciler.validate import LoadedSpec, SpecFiles, load

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


# --- lock --------------------------------------------------------------------------------------


def cmd_lock(args: argparse.Namespace) -> int:
    from reconciler.resolve import resolve_lock

    files = source.read_directory(Path(args.path))
    loaded, problems = _load_all(files, require_lock=False)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        return EXIT_INVALID
    for spec in loaded:
        lock = resolve_lock(spec.fleet, registry=args.registry, timeout=args.timeout)
        target = Path(spec.files.lock_path)
        data = lock.to_bytes()
        if args.check:
            if spec.lock is None or spec.lock.to_bytes() != data:
                print(f"{target}: stale; run `reconciler lock`", file=sys.stderr)
                return EXIT_INVALID
            continue
        target.write_bytes(data)
        print(f"wrote {target} ({len(lock.packages)} packages, sha256 {lock.sha256[:12]})")
    return EXIT_OK


# --- plan --------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
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
    plans = [
        plan(
            spec.fleet,
            spec.lock,
            base=base_fleets[spec.fleet.name].fleet if spec.fleet.name in base_fleets else None,
            base_commit=base_commit,
            head_commit=head_commit,
        )
        for spec in loaded
    ]
    if args.json:
        render.emit_json({"valid": True, "plans": [p.dump() for p in plans]})
    else:
        out = render.console()
        for p in plans:
            render.print_plan(p, out)
    return EXIT_CHANGES if any(p.changed for p in plans) else EXIT_OK


# --- wiring ------------------------------------------------------------------------------------


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
    p.add_argument("--fleet", help="only this fleet")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except source.SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130
