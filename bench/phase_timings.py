"""Per-phase timings of rollouts, read from a status branch (the flight recorder).

Why: the status branch records one commit per transition, so the time between a host's
transitions is the time its phase took, on whatever hosts did the work (the real product on
the real-product lane, a fleet in production). No instrumentation, no timed test.

Run: `python bench/phase_timings.py --repo PATH [--after STATUS_COMMIT]`
(PATH: a clone or the bare spec repository that holds `reconciler/status`). Prints one
markdown row per host and transition: the phase reached and the seconds since the previous
transition of that host (commit times have one-second resolution).
"""

from __future__ import annotations

import argparse

import pygit2

from reconciler.views.report import phase_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--after", default=None, help="a status commit: only what came after")
    args = parser.parse_args()
    print("| host | phase | seconds |\n|---|---|---|")
    for host, phase, seconds in phase_rows(pygit2.Repository(args.repo), args.after):
        print(f"| {host} | {phase} | {seconds} |")


if __name__ == "__main__":
    main()
