"""Helpers for tests that drive a `World`: the real CLI against it, its flight recorder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

import pygit2

from reconciler.sandbox.world import World

RUN_TIMEOUT = 300


def reconcile(
    world: World, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`reconciler reconcile --once` against the world, as a subprocess (wide columns: the
    progress console must not fold a long line)."""
    full_env = {**os.environ, "COLUMNS": "1000", **(env or {})}
    return subprocess.run(
        world.reconcile_argv(*extra), capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env=full_env,
    )  # fmt: skip


def subjects(world: World) -> list[str]:
    """The status branch's commit subjects, oldest first."""
    repo = world.status_repo()
    head = repo.revparse_single("refs/heads/reconciler/status")
    walk = repo.walk(head.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE)
    return [c.message.splitlines()[0] for c in walk]
