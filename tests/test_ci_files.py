"""The CI files `reconciler init` writes, run as their forge would run them.

Each file's `run:` steps (GitLab: its `script:` lines) are executed in order, in bash, in a clone
of a real spec repository (a bare origin holding main, a bump on a branch and the status branch),
with the variables the forge would set. The forge itself is an emulator of its REST API on
127.0.0.1 that checks every request's shape (tests/fixtures/forge.py). Expressions (`${{ }}`)
are filled in from a table here; one the table does not know fails the test, and none may appear
inside a script, where a PR's text could inject commands.

The install step runs as written: pip finds the pinned version already installed and does not
reach for an index (`PIP_NO_INDEX`), so a pin that differs from this package's version fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pygit2
import pytest
from ruamel.yaml import YAML

from reconciler.cli import main
from reconciler.forge.scaffold import CI_FILES
from reconciler.sandbox.sshfleet import SSHFleet
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.views.render import MARKDOWN_MARKER
from tests.fixtures.forge import ForgeEmulator
from tests.test_init import init_argv
from tests.test_plan import observed

PR = 7
EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")


def git(cwd: Path, *args: str) -> str:
    who = ["-c", "user.name=Operator", "-c", "user.email=operator@example.com"]
    done = subprocess.run(
        ["git", *who, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def status_branch_of(repo: Path, nodes: dict[str, bytes]) -> None:
    """The reconciler's status branch, as it would have pushed it."""
    r = pygit2.Repository(str(repo))
    index = pygit2.Index()
    for path, data in nodes.items():
        index.add(pygit2.IndexEntry(path, r.create_blob(data), pygit2.enums.FileMode.BLOB))
    who = pygit2.Signature("reconciler", "reconciler@example.com")
    r.create_commit("refs/heads/reconciler/status", who, who, "observed", index.write_tree(r), [])


def pull_request(
    tmp_path: Path, ssh_fleet: SSHFleet, registry: LocalRegistry
) -> tuple[Path, str, str]:
    """A checkout of a PR that bumps openclaw 2026.4.2 -> 2026.4.3: (dir, base, head). The
    status branch saw mac-2 down."""
    work = tmp_path / "work"
    assert main(init_argv(work, ssh_fleet, registry.url, "--openclaw", "2026.4.2")) == 0
    assert main(["lock", str(work)]) == 0
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "fleet studio")
    base = git(work, "rev-parse", "HEAD")
    status_branch_of(
        work, {"fleets/studio/nodes/mac-2.json": observed("mac-2", ready=False, weight=0)}
    )
    git(work, "checkout", "-q", "-b", "bump")
    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "origin.git"))
    git(work, "push", "-q", str(tmp_path / "origin.git"), "main", "reconciler/status")
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(tmp_path / "checkout"))
    return tmp_path / "checkout", base, push(tmp_path, "2026.4.3")


def push(tmp_path: Path, version: str) -> str:
    """A commit on the PR's branch that bumps openclaw to `version`, pushed and checked out
    as the CI job would; its sha."""
    work, checkout = tmp_path / "work", tmp_path / "checkout"
    fleet = work / "fleet.yaml"
    fleet.write_text(
        re.sub(r'(?m)^  version: "[^"]+"', f'  version: "{version}"', fleet.read_text(), count=1)
    )
    assert main(["lock", str(work)]) == 0
    git(work, "commit", "-q", "-am", f"openclaw {version}")
    git(work, "push", "-q", str(tmp_path / "origin.git"), "bump")
    head = git(work, "rev-parse", "HEAD")
    git(checkout, "fetch", "-q", "origin")
    git(checkout, "checkout", "-q", "--detach", head)
    return head


def actions_steps(path: Path, context: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """(env, script) of each `run:` step of a GitHub/Gitea/Forgejo workflow, in order."""
    (job,) = YAML(typ="safe").load(path.read_text())["jobs"].values()
    for step in job["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], f"an expression inside a script: {step['run']}"
            env = {**job.get("env", {}), **step.get("env", {})}
            yield {k: filled(str(v), context) for k, v in env.items()}, step["run"]


def gitlab_steps(path: Path, context: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """The job's `script:` as one shell (GitLab runs its lines in one session)."""
    (job,) = YAML(typ="safe").load(path.read_text()).values()
    env = {k: str(v) for k, v in job["variables"].items()} | context
    yield env, "\n".join(job["script"])


def filled(value: str, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: context[m.group(1)], value)


def run_steps(steps: Iterator[tuple[dict[str, str], str]], checkout: Path, fake_home: Path) -> None:
    base = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(fake_home), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LANG": "C.UTF-8",
    }  # fmt: skip
    for env, script in steps:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=checkout, env=base | env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"


def contexts(forge: ForgeEmulator, base: str, head: str) -> dict[str, dict[str, str]]:
    server = forge.api.removesuffix("/api/v1")
    actions = {
        "github.event.pull_request.base.sha": base, "github.event.pull_request.head.sha": head,
        "github.event.pull_request.number": str(PR), "github.repository": forge.repository,
        "github.api_url": forge.api, "github.server_url": server,
        "secrets.GITHUB_TOKEN": forge.token, "secrets.GITEA_TOKEN": forge.token,
        "secrets.FORGEJO_TOKEN": forge.token,
    }  # fmt: skip
    gitlab = {
        "CI_MERGE_REQUEST_DIFF_BASE_SHA": base, "CI_COMMIT_SHA": head,
        "CI_API_V4_URL": forge.api, "CI_PROJECT_PATH": forge.repository,
        "CI_MERGE_REQUEST_IID": str(PR), "RECONCILER_GITLAB_TOKEN": forge.token,
    }  # fmt: skip
    return {"actions": actions, "gitlab": gitlab}


@pytest.mark.parametrize("ci", sorted(CI_FILES))
def test_the_ci_file_posts_the_plan_once_and_updates_it_on_the_next_push(
    ci: str,
    tmp_path: Path,
    ssh_fleet: SSHFleet,
    registry: LocalRegistry,
    forges: Callable[[str], ForgeEmulator],
) -> None:
    checkout, base, head = pull_request(tmp_path, ssh_fleet, registry)
    forge = forges("gitea" if ci == "forgejo" else ci)
    forge.seed(PR, "LGTM, but wait for the plan")
    context = contexts(forge, base, head)
    path = checkout / CI_FILES[ci].path
    if ci == "gitlab":
        steps = lambda: gitlab_steps(path, context["gitlab"])  # noqa: E731
    else:
        steps = lambda: actions_steps(path, context["actions"])  # noqa: E731
    (tmp_path / "home").mkdir()

    run_steps(steps(), checkout, tmp_path / "home")

    plan = (checkout / "plan.md").read_text()
    assert plan.startswith(MARKDOWN_MARKER.format(fleet="studio"))
    assert "2026.4.2 | 2026.4.3" in plan
    assert "mac-2 is out of service" in plan  # read from the status branch the step fetched
    assert forge.token not in plan
    [comment] = [b for b in forge.bodies(PR) if b.startswith("<!--")]
    assert comment.strip() == plan.strip()
    assert "LGTM, but wait for the plan" in forge.bodies(PR)

    head = push(tmp_path, "2026.4.4")  # the next push to the PR: its comment, updated in place
    context = contexts(forge, base, head)
    run_steps(steps(), checkout, tmp_path / "home")

    [comment] = [b for b in forge.bodies(PR) if b.startswith("<!--")]
    assert "2026.4.2 | 2026.4.4" in comment
    assert len(forge.bodies(PR)) == 2
    assert [m for m, _ in forge.requests].count("PUT" if ci == "gitlab" else "PATCH") == 1
