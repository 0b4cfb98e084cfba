"""Signed deliveries that are authentic and still must not trigger a pass (issue 15, item 5).

A real Server watching one repository, over real HTTP: a signed body nested too deep to
parse answers 400 (it answered 500 with a traceback in the log), and a signed push of another
repository to a branch of the watched name is accepted and ignored (one secret often signs a
whole organisation's hooks), while the watched repository under any of its spellings triggers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from reconciler.serve.notify import sign
from tests.faults.test_http_limits import Listener, post
from tests.test_server import SECRETS, payload

WATCHED = "https://github.com/example-org/openclaw-fleet.git"


@pytest.fixture
def watching() -> Iterator[Listener]:
    listener = Listener.start(remote=WATCHED)
    try:
        yield listener
    finally:
        listener.server.stop()


def github(body: bytes, content_type: str = "application/json") -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRETS["github"], body),
    }


def gitea(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": sign(SECRETS["gitea"], body).removeprefix("sha256="),
    }


DEEP = 100_000


def _nested(case: str) -> tuple[bytes, dict[str, str]]:
    array = b'{"ref": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    if case == "github form":
        body = b"payload=" + b"%5B" * DEEP
        return body, github(body, "application/x-www-form-urlencoded")
    if case == "gitea json":
        return array, gitea(array)
    return array, github(array)


@pytest.mark.parametrize("case", ["github json", "gitea json", "github form"])
def test_a_signed_body_nested_100k_deep_answers_400_without_a_traceback(
    watching: Listener, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert post(watching.server, *_nested(case)) == 400
    assert watching.calls == []
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"


def push_of(urls: dict[str, str], name: str = "example-org/openclaw-fleet") -> bytes:
    doc = json.loads(payload("github-push.json"))
    doc["after"] = uuid.uuid4().hex + "0" * 8
    doc["repository"] = {"full_name": name, **urls}
    return json.dumps(doc).encode()


OTHER_REPOSITORIES: dict[str, bytes] = {
    "another repository of the same organisation": push_of(
        {
            "clone_url": "https://github.com/example-org/website.git",
            "ssh_url": "git@github.com:example-org/website.git",
        },
        "example-org/website",
    ),
    "the same path on another host": push_of(
        {"clone_url": "https://git.example.net/example-org/openclaw-fleet.git"}
    ),
    "a push without any repository URL": push_of({}),
    "a fork: the same name under another owner": push_of(
        {"clone_url": "https://github.com/mallory/openclaw-fleet.git"}, "mallory/openclaw-fleet"
    ),
}


@pytest.mark.parametrize("case", list(OTHER_REPOSITORIES))
def test_a_signed_push_of_another_repository_is_ignored(watching: Listener, case: str) -> None:
    body = OTHER_REPOSITORIES[case]
    assert post(watching.server, body, github(body)) == 202
    assert watching.calls == [], "a push of another repository triggered a pass"


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:example-org/openclaw-fleet.git",
        "https://github.com/Example-Org/openclaw-fleet",
        "ssh://git@github.com/example-org/openclaw-fleet.git",
    ],
)
def test_a_signed_push_of_the_watched_repository_under_any_spelling_triggers(
    watching: Listener, url: str
) -> None:
    body = push_of({"clone_url": url})
    assert post(watching.server, body, github(body)) == 202
    assert watching.calls == ["main"]
