"""Bad input the other suites do not already cover, data-driven: each a clear refusal that
changes nothing it should not.

Already covered elsewhere (and counted in the suite's table, not repeated here): 97 invalid
spec folders (tests/cases/invalid), malformed host outputs (tests/test_facts.py: empty, not
JSON, cut in half, truncated, binary garbage, not UTF-8, gigantic, wrong shape, for five
facts), the basic webhook refusals (tests/test_server.py) and the SSH identity problems
(tests/faults/test_host_faults.py).

Here:
- webhook deliveries to a real Server over real HTTP: signatures that are almost right,
  envelopes that lie, signed payloads that are not pushes, replays under a new delivery id or
  with a new body. None may trigger a pass, and no secret may appear in an answer or a log line;
- versions a host reports that are not versions (npm ls, the gateway's /startupz) and pins
  from a bookmark that are not exact: refused, never passed on to a command or a status file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.errors import FactParseError
from reconciler.hosts import facts, productfacts, tree
from reconciler.hosts.operations import wanted_versions
from reconciler.hosts.transport import CommandResult, check_env
from reconciler.serve.metrics import Metrics
from reconciler.serve.server import Server

DATA = Path(__file__).resolve().parents[1] / "data"
SECRETS = {
    "github": b"faults-gh-hmac-3Jd8-never-echoed",
    "gitea": b"faults-gitea-hmac-9Kq2-never-echoed",
    "gitlab": b"faults-gitlab-token-Hh71-never-echoed",
}
MAX_BODY = 64 * 1024
TIMEOUT = 5.0


# --- webhooks -----------------------------------------------------------------------------------


@dataclass
class Hooks:
    server: Server
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)

    def send(self, request: bytes) -> int:
        """One raw HTTP request on its own connection; returns the status code."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        self.answers.append(answer)
        return int(answer.split(b" ", 2)[1])


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h: Hooks

    def trigger(branch: str, urls: tuple[str, ...]) -> list[str]:
        h.calls.append((branch, urls))
        return ["sandbox"]

    server = Server(
        "127.0.0.1",
        0,
        secrets=SECRETS,
        trigger=trigger,
        readiness=lambda fleet: None,
        metrics=Metrics(),
        max_body=MAX_BODY,
        request_timeout=1.0,  # how long a body shorter than its Content-Length is waited for
    )
    h = Hooks(server)
    server.start()
    try:
        yield h
    finally:
        server.stop()


def push(ref: str = "refs/heads/main", **drop: bool) -> bytes:
    doc = json.loads((DATA / "webhooks" / "github-push.json").read_text())
    doc["ref"] = ref
    for key in drop:
        doc.pop(key, None)
    return json.dumps(doc).encode()


def hexmac(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def github(body: bytes, *, event: str = "push", signed: bytes | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hexmac(SECRETS["github"], signed if signed is not None else body),
    }


def gitea(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": hexmac(SECRETS["gitea"], body),
    }


def gitlab(body: bytes, token: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "X-Gitlab-Token": SECRETS["gitlab"].decode() if token is None else token,
    }


def request(
    body: bytes, headers: dict[str, str], *, length: str | None = "auto", chunked: bool = False
) -> bytes:
    lines = ["POST /hooks/git HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        if length is not None:
            lines.append(f"Content-Length: {len(body) if length == 'auto' else length}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in names}


def _changed_after_signing() -> bytes:
    body = push()
    return request(body.replace(b"main", b"mainx", 1), github(body))


def _sha1_only() -> bytes:
    body = push()
    sha1 = "sha1=" + hmac.new(SECRETS["github"], body, hashlib.sha1).hexdigest()
    return request(body, {**without(github(body), "X-Hub-Signature-256"), "X-Hub-Signature": sha1})


def _signature(value: Callable[[str], str]) -> bytes:
    body = push()
    headers = github(body)
    headers["X-Hub-Signature-256"] = value(headers["X-Hub-Signature-256"])
    return request(body, headers)


def _gitea_in_github_header() -> bytes:
    body = push()
    headers = without(gitea(body), "X-Gitea-Signature")
    return request(
        body, {**headers, "X-Hub-Signature-256": "sha256=" + hexmac(SECRETS["gitea"], body)}
    )


def _content_type(kind: str | None, maker: Callable[[bytes], dict[str, str]] = github) -> bytes:
    body = push()
    headers = without(maker(body), "Content-Type")
    return request(body, {**headers, **({"Content-Type": kind} if kind else {})})


def _gitlab_form() -> bytes:
    body = b"payload=" + push()
    return request(body, {**gitlab(body), "Content-Type": "application/x-www-form-urlencoded"})


def _signed(body: bytes, event: str = "push") -> bytes:
    return request(body, github(body, event=event))


# case -> (the raw request, the status the server must answer)
WEBHOOK_CASES: dict[str, tuple[Callable[[], bytes], int]] = {
    "github: body changed after signing": (_changed_after_signing, 401),
    "github: signed with the gitea secret": (
        lambda: request(push(), github(push(), signed=b"x" + push())),
        401,
    ),
    "github: only the legacy sha1 signature": (_sha1_only, 401),
    "github: sha256= and nothing after": (lambda: _signature(lambda s: "sha256="), 401),
    "github: signature cut to half": (lambda: _signature(lambda s: s[: len(s) // 2]), 401),
    "github: sha512= prefix": (lambda: _signature(lambda s: s.replace("sha256", "sha512")), 401),
    "github: signature of the empty body": (
        lambda: _signature(lambda s: "sha256=" + hexmac(SECRETS["github"], b"")),
        401,
    ),
    "github: signature base64, not hex": (
        lambda: _signature(lambda s: "sha256=" + base64.b64encode(bytes.fromhex(s[7:])).decode()),
        401,
    ),
    "gitea: its signature only in GitHub's header": (_gitea_in_github_header, 401),
    "gitea: sha256= prefix in X-Gitea-Signature": (
        lambda: request(
            push(),
            {**gitea(push()), "X-Gitea-Signature": "sha256=" + hexmac(SECRETS["gitea"], push())},
        ),
        401,
    ),
    "gitlab: token with a trailing space": (
        lambda: request(push(), gitlab(push(), SECRETS["gitlab"].decode() + " ")),
        401,
    ),
    "gitlab: token in upper case": (
        lambda: request(push(), gitlab(push(), SECRETS["gitlab"].decode().upper())),
        401,
    ),
    "gitlab: the github secret as token": (
        lambda: request(push(), gitlab(push(), SECRETS["github"].decode())),
        401,
    ),
    "github: text/plain": (lambda: _content_type("text/plain"), 415),
    "github: no content type": (lambda: _content_type(None), 415),
    "github: multipart/form-data": (lambda: _content_type("multipart/form-data; boundary=x"), 415),
    "gitlab: form encoded": (_gitlab_form, 415),
    "no Content-Length (chunked)": (lambda: request(push(), github(push()), chunked=True), 411),
    "Content-Length not a number": (lambda: request(push(), github(push()), length="12ab"), 400),
    "Content-Length over the limit, small body": (
        lambda: request(push(), github(push()), length=str(MAX_BODY + 1)),
        413,
    ),
    "body shorter than its Content-Length": (
        lambda: request(push(), github(push()), length=str(len(push()) + 100)),
        400,
    ),
    "no provider event header": (
        lambda: request(push(), without(github(push()), "X-GitHub-Event")),
        400,
    ),
    "github: signed, not JSON": (lambda: _signed(b"ref=refs/heads/main"), 400),
    "github: signed JSON array": (lambda: _signed(b'["refs/heads/main"]'), 400),
    "github: signed push without ref": (lambda: _signed(push(ref="")), 400),
    "github: signed push without after": (lambda: _signed(push(after=True)), 400),
    "github: signed push of a tag": (lambda: _signed(push(ref="refs/tags/v1")), 202),
    "github: signed ping": (lambda: _signed(push(), event="ping"), 202),
}


@pytest.mark.parametrize("case", list(WEBHOOK_CASES))
def test_bad_webhook_delivery_is_refused_and_triggers_nothing(
    hooks: Hooks, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    make, status = WEBHOOK_CASES[case]
    assert hooks.send(make()) == status, hooks.answers[-1][:400]
    assert hooks.calls == [], "a bad delivery triggered a pass"
    no_secret(hooks, caplog)


def _new_delivery_id(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}


def _same_id_other_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    other = push(ref="refs/heads/other")
    resigned = github(other)
    resigned["X-GitHub-Delivery"] = headers["X-GitHub-Delivery"]
    return other, resigned


REPLAYS: dict[str, Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]] = {
    "the same delivery again": lambda body, headers: (body, headers),
    "the same body under a new delivery id": lambda body, headers: (
        body,
        _new_delivery_id(headers),
    ),
    "the same delivery id with another signed body": _same_id_other_body,
}


@pytest.mark.parametrize("case", list(REPLAYS))
def test_replayed_delivery_gets_409_and_triggers_once(
    hooks: Hooks, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = push()
    headers = github(body)
    assert hooks.send(request(body, headers)) == 202
    again_body, again_headers = REPLAYS[case](body, headers)
    assert hooks.send(request(again_body, again_headers)) == 409, hooks.answers[-1][:400]
    assert len(hooks.calls) == 1, hooks.calls
    no_secret(hooks, caplog)


def no_secret(hooks: Hooks, caplog: pytest.LogCaptureFixture) -> None:
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    shown = b"\n".join(hooks.answers) + repr(hooks.server).encode()
    for secret in SECRETS.values():
        assert secret not in shown, "a secret in an answer"
        assert secret.decode() not in logged, "a secret in a log line"


# --- versions a host reports --------------------------------------------------------------------

NOT_VERSIONS: dict[str, object] = {
    "trailing newline": "2026.4.3\n",
    "a dist-tag": "latest",
    "empty": "",
    "shell": "2026.4.3; reboot",
    "substitution": "$(id)",
    "65 characters": "2026.4." + "3" * 58,  # a valid semver, too long for npm ls
    "a number": 2026.43,
    "a list": ["2026.4.3"],
    "no-break space": "2026.4.3\u00a0",
}


def _npm_ls(version: object) -> CommandResult:
    argv = ("npm", "ls", "-g", "--json", "--long", "--depth=1", "--prefix", "/opt/openclaw")
    doc = {
        "name": "lib",
        "path": "/opt/openclaw/lib",
        "dependencies": {
            "openclaw": {"version": version, "path": "/opt/openclaw/lib/node_modules/openclaw"}
        },
    }
    return CommandResult(argv, 0, json.dumps(doc).encode(), b"", 0.1, False)


def _tree_read(version: object) -> CommandResult:
    package = {"name": "openclaw", "version": version, "deps": {}, "peers": {}, "optional": []}
    doc = {"node": "v22.1.0", "packages": [{**package, "found": {}}], "copies": [], "disk": None}
    return CommandResult(tree.argv("/opt/openclaw"), 0, json.dumps(doc).encode(), b"", 0.1, False)


@pytest.mark.parametrize("case", list(NOT_VERSIONS))
def test_a_version_that_is_not_one_is_refused(case: str) -> None:
    bad = NOT_VERSIONS[case]
    # npm ls: a parse error naming the host and the command, with a bounded excerpt (a word
    # like "latest" is taken as a version there: it then differs from every pin).
    if case != "a dist-tag":
        with pytest.raises(FactParseError) as caught:
            facts.parse_npm_ls("mac-1", _npm_ls(bad))
        message = str(caught.value)
        assert message.startswith("mac-1: `npm ls") and "no valid version" in message
        assert len(message) < 600
        # the on-disk tree reader: the same refusal, whatever the version's type.
        with pytest.raises(FactParseError) as caught:
            facts.parse_host_tree("mac-1", _tree_read(bad))
        message = str(caught.value)
        assert message.startswith("mac-1: `node -e") and "no valid version" in message
        assert len(message) < 900
    # the gateway's /startupz: the running version is unknown, not the bad value.
    startupz = json.dumps({"ok": True, "version": bad, "uptimeMs": 5})
    probes = [
        {"path": "/healthz", "status": 200, "body": "{}"},
        {"path": "/readyz", "status": 200, "body": '{"ready":true}'},
        {"path": "/startupz", "status": 200, "body": startupz},
    ]
    result = CommandResult(("node", "-e", "..."), 0, json.dumps(probes).encode(), b"", 0.1, False)
    running = productfacts.parse_probes("mac-1", result).running_version
    assert running is None or (case == "a dist-tag" and running == bad), running
    # a bookmark's pins (read back from the status branch): never reach a command.
    if isinstance(bad, str) and case != "65 characters":  # that one is a valid semver
        with pytest.raises(ValueError, match="not an exact npm pin"):
            wanted_versions({"openclaw": bad})
    if isinstance(bad, str) and not re.fullmatch(r"[a-z0-9._~-]*", bad):
        with pytest.raises(ValueError, match="not an exact npm pin"):
            wanted_versions({f"@openclaw/discord{bad}": "2026.4.3"})


def test_an_environment_name_with_a_trailing_newline_is_refused() -> None:
    # `^...$` with re.match lets a trailing newline through; the name must be refused whole.
    with pytest.raises(ValueError, match="invalid environment variable name"):
        check_env({"OPENCLAW_PROFILE\n": "work"})
