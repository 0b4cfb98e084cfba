"""Per-phase timings of rollouts, read from a status branch (the flight recorder).

Why: the status branch records one commit per transition, so the time between a host's
transitions is the time its phase took, on whatever hosts did the work (the real product on
the real-product lane, a fleet in production). No instrumentation, no timed test.

Run: `python bench/phase_timings.py --repo PATH [--since-subject TEXT]`
(PATH: a clone or the bare spec repository that holds `reconciler/status`). Prints one
markdown row per host and transition: the phase reached and the seconds since the previous
transition of that host (commit times have one-second resolution).
"""

from __future__ import annotations

import argparse
import re

import pygit2

HOST = re.compile(r"^([a-z0-9][a-z0-9-]*): (.*)$")
PHASES = (
    ("bookmarked", "backup create (recovery point) and bookmark"),
    ("drained", "drain"),
    ("preflight", "preflight"),
    ("installed", "install (core, then plugins)"),
    ("restarted", "restart"),
    ("running, doctor green, ready", "restart to ready (verify)"),
    ("weight", "ramp"),
    ("restored to", "restore"),
    ("red after", "verify (red)"),
    ("failed", "step failed"),
)


def phase_of(subject: str) -> str:
    return next((name for key, name in PHASES if key in subject), subject[:40])


def rows(repo: pygit2.Repository, since: str | None) -> list[tuple[str, str, int]]:
    head = repo.revparse_single("refs/heads/reconciler/status")
    commits = list(repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL))[::-1]
    if since:
        start = next((i for i, c in enumerate(commits) if since in c.message), 0)
        commits = commits[start:]
    last: dict[str, int] = {}
    previous = commits[0].commit_time if commits else 0
    out = []
    for commit in commits:
        subject = commit.message.splitlines()[0]
        match = HOST.match(subject)
        if match is None:
            previous = commit.commit_time
            continue
        host = match.group(1)
        began = last.get(host, previous)
        out.append((host, phase_of(match.group(2)), commit.commit_time - began))
        last[host] = previous = commit.commit_time
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--since-subject", default=None)
    args = parser.parse_args()
    print("| host | phase | seconds |\n|---|---|---|")
    for host, phase, seconds in rows(pygit2.Repository(args.repo), args.since_subject):
        print(f"| {host} | {phase} | {seconds} |")


if __name__ == "__main__":
    main()
