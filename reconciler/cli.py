"""The `reconciler` command line.

Exit codes are part of the interface, because CI and bots read them:
0 ok (and for `plan`: nothing changes), 1 internal error, 2 invalid input,
3 `plan` found changes.

This module is the entry point: the argument parser and `main`. The commands themselves are
in `reconciler.commands_spec` (validate, schema, init, lock, plan, comment) and
`reconciler.commands_fleet` (reconcile, status, history, unfreeze, run, demo, lb); the exit
codes in `reconciler.exitcodes`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import __version__
from reconciler.commands_fleet import (
    cmd_demo,
    cmd_history,
    cmd_lb,
    cmd_reconcile,
    cmd_run,
    cmd_status,
    cmd_unfreeze,
)
from reconciler.commands_spec import (
    cmd_comment,
    cmd_init,
    cmd_lock,
    cmd_plan,
    cmd_schema,
    cmd_validate,
)
from reconciler.desired import source
from reconciler.desired.spec import NAME
from reconciler.errors import InitError, ReconcilerError
from reconciler.exitcodes import EXIT_CHANGES, EXIT_INTERNAL, EXIT_INVALID, EXIT_OK
from reconciler.serve.config import ConfigError

if TYPE_CHECKING:
    from reconciler.desired.signatures import SignaturePolicy

__all__ = ["EXIT_CHANGES", "EXIT_INTERNAL", "EXIT_INVALID", "EXIT_OK", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


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
    from reconciler.desired.signatures import SignersFileError, load_policy

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
