"""Commit statuses and PR comments, over real HTTP, against strict emulators of each forge.

Every request goes through urllib to a ThreadingHTTPServer on 127.0.0.1 (tests/fixtures/forge.py)
that answers 404, 401 or 422 (GitLab 400) to a wrong method, path, auth header or body, so a
wrong shape fails here. The token is a distinctive string: each test that can leak it searches
the exceptions, reprs and log records for it.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydantic
import pytest
from ruamel.yaml import YAML

from reconciler import cli
from reconciler.desired.spec import CommitStatus, Fleet
from reconciler.forge.client import (
    DEFAULT_TOKEN_ENV,
    ForgeClient,
    ForgeError,
    ForgeInputError,
    ForgeUnavailable,
    read_token,
    split_comments,
    upsert_plan_comments,
)
from reconciler.record.gitstore import GitStore
from reconciler.rollout.events import Event
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import World
from reconciler.serve.daemon import SpecNotifier, engine_for, run_until_settled
from reconciler.serve.notify import (
    Broadcaster,
    CommitStatusSink,
    commit_status_sink,
    sinks_for_fleet,
)
from reconciler.views.render import MARKDOWN_MARKER
from tests.fixtures.forge import TOKEN, ForgeEmulator

FORGES = ("github", "gitea", "gitlab")
SHA = "3f" * 20
Forges = Callable[[str], ForgeEmulator]


def client(emulator: ForgeEmulator, token: str = TOKEN) -> ForgeClient:
    return ForgeClient(emulator.forge, emulator.api, emulator.repository, token, timeout=5.0)  # type: ignore[arg-type]


def event(kind: str, message: str, phase: str | None = None, sha: str | None = SHA) -> Event:
    return Event(
        kind=kind,  # type: ignore[arg-type]
        fleet="studio",
        message=message,
        phase=phase,
        spec_commit=sha,
        at="2026-11-24T10:00:00Z",
    )


def comment(fleet: str, text: str) -> str:
    return f"{MARKDOWN_MARKER.format(fleet=fleet)}\n### Rollout plan: fleet `{fleet}`\n\n{text}\n"


# --- commit statuses -------------------------------------------------------------------------

EXPECTED_STATES = {
    "github": ["success", "failure", "pending", "error"],
    "gitea": ["success", "failure", "pending", "error"],
    "gitlab": ["success", "failed", "pending", "failed"],
}


@pytest.mark.parametrize("forge", FORGES)
def test_each_outcome_is_posted_as_the_forges_own_state(forge: str, forges: Forges) -> None:
    emulator = forges(forge)
    sink = CommitStatusSink(client(emulator), "openclaw-reconciler/studio", "https://ci.example/r")
    broadcaster = Broadcaster([sink], backoff_s=0.01)
    red = "mac-2: red after upgrade; " + "doctor finding " * 20  # over GitHub's 140
    for e in (
        event("success", "rollout complete: fleet on openclaw 2026.4.3"),  # Complete
        event("failure", red, phase="Failed"),
        event("gate", "outside maintenance windows"),  # Paused
        event("failure", "spec is invalid: $.hosts: expected a list"),  # Invalid
        event("drift", "mac-1 drifted"),  # says nothing of the outcome
        event("success", "no spec commit", sha=None),
    ):
        broadcaster.notify(e)
    assert broadcaster.flush(10)

    assert not broadcaster.undelivered, broadcaster.undelivered
    assert [s["state"] for s in emulator.statuses] == EXPECTED_STATES[forge]
    assert {s["sha"] for s in emulator.statuses} == {SHA}
    name = "name" if forge == "gitlab" else "context"
    assert {s[name] for s in emulator.statuses} == {"openclaw-reconciler/studio"}
    assert {s["target_url"] for s in emulator.statuses} == {"https://ci.example/r"}
    descriptions = [s["description"] for s in emulator.statuses]
    assert descriptions[2] == "held: outside maintenance windows"
    assert len(descriptions[1]) == 140 and descriptions[1].startswith("mac-2: red after upgrade")
    project = (
        "/projects/ops%2Finfra%2Ffleet" if forge == "gitlab" else f"/repos/{emulator.repository}"
    )
    root = emulator.api.split("://", 1)[1].split("/", 1)[1]
    assert emulator.requests == [("POST", f"/{root}{project}/statuses/{SHA}")] * 4


def test_errors_name_forge_method_path_and_status_and_never_the_token(
    forges: Forges, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = forges("github")
    path = f"/repos/{emulator.repository}/statuses/{SHA}"
    seen: list[str] = []

    emulator.token = "a-token-the-client-does-not-have"
    with pytest.raises(ForgeError) as refused:
        client(emulator).post_status(SHA, "success", "done", "ctx")
    assert not isinstance(refused.value, ForgeUnavailable), "a 401 is not worth a retry"
    assert str(refused.value).startswith(f"github POST {path}: HTTP 401")
    emulator.token = TOKEN

    emulator.fail_with = 500
    with pytest.raises(ForgeUnavailable, match=re.escape(f"github POST {path}: HTTP 500")) as e500:
        client(emulator).post_status(SHA, "success", "done", "ctx")
    emulator.stop()
    with pytest.raises(ForgeUnavailable, match=re.escape(f"github POST {path}: no answer")) as down:
        client(emulator).post_status(SHA, "success", "done", "ctx")

    sink = CommitStatusSink(client(emulator), "ctx")
    broadcaster = Broadcaster([sink], attempts=2, backoff_s=0.01)
    broadcaster.notify(event("success", "rollout complete"))
    assert broadcaster.flush(10)
    ((name, _, error),) = broadcaster.undelivered
    assert name == "commit-status" and "no answer" in error

    for exc in (refused.value, e500.value, down.value):
        seen += [str(exc), repr(exc), str(exc.args)]
    seen += [repr(client(emulator)), repr(sink), error, caplog.text]
    seen += [str(r.args) for r in caplog.records]
    assert all(TOKEN not in text for text in seen)


def test_an_undelivered_status_is_logged_with_forge_sha_and_status(
    forges: Forges, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = forges("gitea")
    emulator.fail_with = 503
    fleet = Fleet.model_validate(fleet_doc(emulator, "GITEA_TEST_TOKEN"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITEA_TEST_TOKEN", TOKEN)
        sink = commit_status_sink(fleet)
    assert sink is not None and sink.context == "openclaw-reconciler/studio"
    broadcaster = Broadcaster([sink], attempts=3, backoff_s=0.01)
    broadcaster.notify(event("success", "rollout complete"))
    assert broadcaster.flush(10)

    assert len(emulator.requests) == 3, "a 503 is retried"
    ((_, ev, error),) = broadcaster.undelivered
    assert ev.spec_commit == SHA and "HTTP 503" in error
    (record,) = [r for r in caplog.records if "undelivered" in r.getMessage()]
    line = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "gitea" in line and SHA in line and "HTTP 503" in line
    assert TOKEN not in caplog.text


# --- PR comments -----------------------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_a_comment_is_created_then_updated_in_place(forge: str, forges: Forges) -> None:
    emulator = forges(forge)
    marker = MARKDOWN_MARKER.format(fleet="studio")
    others = [
        emulator.seed(7, "LGTM"),
        emulator.seed(7, f"> {marker}\nquoting the bot is not being the bot"),
        emulator.seed(7, MARKDOWN_MARKER.format(fleet="studio-2") + "\nanother fleet's"),
    ]
    before = [dict(c) for c in others]
    c = client(emulator)

    first = c.upsert_comment(7, comment("studio", "mac-1 then mac-2"))
    second = c.upsert_comment(7, comment("studio", "mac-2 first: it is out of service"))
    third = c.upsert_comment(7, comment("studio", "mac-2 first: it is out of service"))

    assert (first.action, second.action, third.action) == ("created", "updated", "unchanged")
    assert first.id == second.id == third.id
    mine = [b for b in emulator.bodies(7) if b.startswith(marker)]
    assert mine == [comment("studio", "mac-2 first: it is out of service")]
    assert len(emulator.bodies(7)) == 4, "one comment after two calls"
    assert [dict(c) for c in others] == before, "a comment of someone else was touched"
    writes = [m for m, _ in emulator.requests if m != "GET"]
    assert writes == ["POST", "PUT" if forge == "gitlab" else "PATCH"]
    if forge != "gitlab":
        assert first.url is not None and first.url.endswith(f"#issuecomment-{first.id}")


@pytest.mark.parametrize("forge", FORGES)
def test_the_marker_is_found_past_the_first_page(forge: str, forges: Forges) -> None:
    emulator = forges(forge)
    for n in range(150):
        emulator.seed(3, f"comment {n}")
    ours = emulator.seed(3, comment("studio", "old plan"), author="reconciler-bot")

    result = client(emulator).upsert_comment(3, comment("studio", "new plan"))

    assert (result.action, result.id) == ("updated", ours["id"])
    assert len(emulator.bodies(3)) == 151 and emulator.bodies(3)[-1].endswith("new plan\n")
    pages = [p for m, p in emulator.requests if m == "GET"]
    if forge == "gitea":  # Gitea answers every comment at once, whatever the page
        assert len(pages) == 1 and "limit=50&page=1" in pages[0]
    else:
        assert len(pages) == 2 and "per_page=100&page=2" in pages[1]

    # A fleet with no comment yet: the whole list is read, and its end is seen (a short page;
    # on Gitea, a page that brings nothing new) before one is created.
    emulator.requests.clear()
    assert client(emulator).upsert_comment(3, comment("lab", "plan")).action == "created"
    assert [m for m, _ in emulator.requests] == ["GET", "GET", "POST"]


@pytest.mark.parametrize("forge", FORGES)
def test_two_fleets_in_one_markdown_are_two_comments(forge: str, forges: Forges) -> None:
    emulator = forges(forge)
    markdown = comment("studio", "studio's plan") + "\n" + comment("lab", "lab's plan")

    made = upsert_plan_comments(client(emulator), 12, markdown)
    again = upsert_plan_comments(client(emulator), 12, markdown.replace("'s plan", "'s new plan"))

    assert [(f, r.action) for f, r in made] == [("studio", "created"), ("lab", "created")]
    assert [(f, r.action) for f, r in again] == [("studio", "updated"), ("lab", "updated")]
    assert emulator.bodies(12) == [
        comment("studio", "studio's new plan"),
        comment("lab", "lab's new plan"),
    ]


def test_markdown_without_a_marker_or_with_one_fleet_twice_is_refused() -> None:
    with pytest.raises(ForgeInputError, match="no marker line"):
        split_comments("### Rollout plan\n\nnothing hidden\n")
    with pytest.raises(ForgeInputError, match="text before the first marker"):
        split_comments("stray words\n" + comment("studio", "plan"))
    with pytest.raises(ForgeInputError, match="more than one comment for fleet studio"):
        split_comments(comment("studio", "a") + comment("studio", "b"))
    assert [f for f, _ in split_comments("\n\n" + comment("a", "x") + comment("b", "y"))] == [
        "a",
        "b",
    ]


# --- tokens and input ----------------------------------------------------------------------------


def test_a_token_comes_from_a_variable_or_a_file_and_its_absence_names_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_TEST_TOKEN", f" {TOKEN}\n")
    assert read_token(env="FORGE_TEST_TOKEN") == TOKEN
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert read_token(env="FORGE_TEST_TOKEN", file=tmp_path / "token") == TOKEN
    monkeypatch.delenv("FORGE_TEST_TOKEN")
    with pytest.raises(ForgeInputError, match="FORGE_TEST_TOKEN is not set"):
        read_token(env="FORGE_TEST_TOKEN")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ForgeInputError, match="empty"):
        read_token(file=tmp_path / "empty")
    with pytest.raises(ForgeInputError, match="No such file or directory"):
        read_token(file=tmp_path / "missing")


@pytest.mark.parametrize(
    ("forge", "repository", "api"),
    [
        ("github", "just-a-name", "https://api.github.com"),
        ("gitea", "a/b/c", "https://git.example/api/v1"),
        ("gitlab", "group/", "https://gitlab.example/api/v4"),
        ("github", "octo/fleet", "ftp://api.github.com"),
        ("github", "octo/fleet", f"https://user:{TOKEN}@api.github.com"),
        ("github", "octo/fleet", "https://api.github.com?token=x"),
    ],
)
def test_a_bad_repository_or_api_root_is_refused_before_any_request(
    forge: str, repository: str, api: str
) -> None:
    with pytest.raises(ForgeInputError) as refused:
        ForgeClient(forge, api, repository, TOKEN)  # type: ignore[arg-type]
    assert TOKEN not in str(refused.value)


# --- reconciler comment ---------------------------------------------------------------------------


@dataclass
class CommentRun:
    """`reconciler comment` against an emulator, its token in the forge's default variable."""

    emulator: ForgeEmulator
    plan: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *extra: str, repository: str | None = None) -> tuple[int, str]:
        """The exit code and what was printed (stdout and stderr)."""
        argv = [
            "comment", "--forge", self.emulator.forge, "--api", self.emulator.api,
            "--repository", repository or self.emulator.repository, "--pr", "5", *extra,
        ]  # fmt: skip
        code = cli.main(argv)
        out, err = self.capsys.readouterr()
        return code, out + err


@pytest.fixture
def comment_cli(
    forges: Forges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[[str], CommentRun]:
    def start(forge: str) -> CommentRun:
        monkeypatch.setenv(DEFAULT_TOKEN_ENV[forge], TOKEN)  # type: ignore[index]
        return CommentRun(forges(forge), tmp_path / "plan.md", capsys)

    return start


def test_reconciler_comment_posts_each_fleets_comment_then_updates_it(
    comment_cli: Callable[[str], CommentRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = comment_cli("github")
    run.plan.write_text(comment("studio", "mac-1, mac-2, mac-3"))

    code, created = run(str(run.plan))
    assert code == 0, created
    monkeypatch.setattr("sys.stdin", io.StringIO(comment("studio", "mac-2 first")))
    code, updated = run("-")
    assert code == 0, updated

    (body,) = run.emulator.bodies(5)
    assert body == comment("studio", "mac-2 first")
    comment_id = run.emulator.comments[5][0]["id"]
    assert f"fleet studio: created comment {comment_id}: https://" in created
    assert f"fleet studio: updated comment {comment_id}" in updated


def test_reconciler_comment_reads_a_token_file_and_gitlab_paths(
    comment_cli: Callable[[str], CommentRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = comment_cli("gitlab")
    monkeypatch.delenv("GITLAB_TOKEN")
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(comment("lab", "plan")))
    assert run("--token-file", str(tmp_path / "token"))[0] == 0
    assert run.emulator.bodies(5) == [comment("lab", "plan")]


def test_reconciler_comment_exits_2_on_bad_input_and_1_when_the_api_fails(
    comment_cli: Callable[[str], CommentRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = comment_cli("gitea")
    run.plan.write_text("### a plan without its marker\n")
    code, said = run(str(run.plan))
    assert code == 2 and "no marker line" in said

    run.plan.write_text(comment("studio", "plan"))
    code, said = run(str(run.plan), repository="no-owner")
    assert code == 2 and "expected OWNER/NAME" in said
    monkeypatch.delenv("GITEA_TOKEN")
    code, said = run(str(run.plan))
    assert code == 2 and "GITEA_TOKEN is not set" in said
    assert run.emulator.requests == [], "bad input reached the API"

    monkeypatch.setenv("GITEA_TOKEN", TOKEN)
    run.emulator.fail_with = 500
    code, said = run(str(run.plan))
    assert code == 1
    assert f"gitea GET /repos/{run.emulator.repository}/issues/5/comments: HTTP 500" in said
    assert TOKEN not in said


# --- the spec and the engine -----------------------------------------------------------------


def fleet_doc(emulator: ForgeEmulator, token_env: str) -> dict[str, object]:
    return {
        "name": "studio",
        "openclaw": {"version": "2026.4.3", "registry": "https://npm.example.net/"},
        "loadBalancer": {"driver": "file", "address": "/tmp/weights.json"},
        "hosts": [{"name": "gw-1", "address": "10.0.0.1", "user": "openclaw"}],
        "commitStatus": {
            "forge": emulator.forge,
            "api": emulator.api,
            "repository": emulator.repository,
            "tokenEnv": token_env,
        },
    }


def test_commit_status_in_the_spec_and_a_missing_token_skips_the_sink(
    forges: Forges, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = forges("gitlab")
    fleet = Fleet.model_validate(fleet_doc(emulator, "GITLAB_TEST_TOKEN"))
    monkeypatch.delenv("GITLAB_TEST_TOKEN", raising=False)
    assert commit_status_sink(fleet) is None
    assert "GITLAB_TEST_TOKEN is not set" in caplog.text and "skipped" in caplog.text

    monkeypatch.setenv("GITLAB_TEST_TOKEN", TOKEN)
    (sink,) = sinks_for_fleet(fleet)
    assert isinstance(sink, CommitStatusSink) and TOKEN not in repr(sink)

    with pytest.raises(pydantic.ValidationError, match="expected OWNER/NAME on github"):
        CommitStatus.model_validate(
            {"forge": "github", "api": "https://api.github.com", "repository": "ops/infra/fleet",
             "tokenEnv": "GITHUB_TOKEN"}
        )  # fmt: skip


def test_the_documented_example_is_a_valid_commit_status() -> None:
    """specs/example/fleet.yaml carries a commented-out `commitStatus`: uncommented, it loads."""
    text = (Path(__file__).parent.parent / "specs" / "example" / "fleet.yaml").read_text()
    block = re.search(r"^# commitStatus:\n(?:#  .*\n)+", text, re.M)
    assert block is not None, "the example lost its commitStatus"
    doc = YAML(typ="safe").load(re.sub(r"^# ?", "", block.group(0), flags=re.M))
    status = CommitStatus.model_validate(doc["commitStatus"])
    assert status.forge == "github" and status.token_env == "GITHUB_TOKEN"


COMMIT_STATUS = """commitStatus:
  forge: gitea
  api: {api}
  repository: {repository}
  tokenEnv: RECONCILER_TEST_FORGE_TOKEN
  targetUrl: https://reconciler.example/fleets/sandbox
loadBalancer:"""


def test_a_rollout_posts_its_outcome_on_its_spec_commit_and_a_dead_forge_never_stops_it(
    tmp_path: Path, registry: LocalRegistry, forges: Forges, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = forges("gitea")
    monkeypatch.setenv("RECONCILER_TEST_FORGE_TOKEN", TOKEN)
    block = COMMIT_STATUS.format(api=emulator.api, repository=emulator.repository)
    with World(
        tmp_path / "w", names=("mac-1",), transport="local", steps=(100,), registry=registry
    ) as world:

        def commit(core: str) -> str:
            files = world.spec_files(core)
            files["fleet.yaml"] = files["fleet.yaml"].replace(b"loadBalancer:", block.encode())
            return world.commit(files, f"openclaw {core}")

        notifier = SpecNotifier()
        store = GitStore(world.remote, tmp_path / "cache" / "repo.git")
        engine = engine_for(store, "sandbox", notifier=notifier, lease_s=30.0)

        def settle() -> str:
            result = run_until_settled(engine, progress=False, max_failures=3, max_backoff=0.5)
            notifier.flush(30)
            return result.phase

        adopted = commit("2026.4.2")
        assert settle() == "Complete"
        (status,) = emulator.statuses
        assert (status["sha"], status["state"]) == (adopted, "success")
        assert status["context"] == "openclaw-reconciler/sandbox"
        assert status["target_url"] == "https://reconciler.example/fleets/sandbox"

        broadcaster = notifier.broadcaster
        assert broadcaster is not None
        broadcaster.backoff_s = 0.01
        emulator.fail_with = 500
        bump = commit("2026.4.3")
        assert settle() == "Complete", "a forge that fails stopped the rollout"
        assert world.version(world.hosts[0]) == "2026.4.3"
        (undelivered,) = broadcaster.undelivered
        assert undelivered[0] == "commit-status gitea" and undelivered[1].spec_commit == bump
        assert "HTTP 500" in undelivered[2] and len(emulator.statuses) == 1
