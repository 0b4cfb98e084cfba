"""Commit statuses and PR comments on GitHub, Gitea (and Forgejo) and GitLab.

A rollout's outcome belongs where the change was reviewed: on the spec commit it applied (a
commit status) and on the pull request that proposed it (the plan as one comment per fleet,
updated in place). This is a small client for exactly those calls of the three forges' REST
APIs, on urllib (no new dependency), every request bounded by a timeout.

The API token is a secret: it is read from an environment variable or a file, sent only in a
request header, and never appears in a repr, an exception or a log line (a message names the
variable or the file it came from). Every error names the forge, the method, the path and the
HTTP status. An answer that a later try may change (no answer, 429, 5xx) is a TemporaryError,
which the broadcaster retries; any other refusal is permanent.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from reconciler import redact
from reconciler.desired.spec import Forge, repository_problem
from reconciler.errors import ReconcilerError, TemporaryError
from reconciler.views.render import MARKDOWN_MARKER

Outcome = Literal["success", "failure", "error", "pending"]
"""What the reconciler reports; each forge spells it in its own states."""

DEFAULT_TOKEN_ENV: Mapping[Forge, str] = {
    "github": "GITHUB_TOKEN",
    "gitea": "GITEA_TOKEN",
    "gitlab": "GITLAB_TOKEN",
}
DESCRIPTION_MAX = 140  # GitHub refuses a longer description
MAX_PAGES = 100  # comments listed at most: 100 pages, so a server that ignores `page` ends too
MAX_ANSWER_BYTES = 8 * 1024 * 1024
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_MARKER = re.compile(
    "{}(?P<fleet>[a-z0-9-]{{1,63}}){}".format(*map(re.escape, MARKDOWN_MARKER.split("{fleet}")))
)


class ForgeInputError(ReconcilerError):
    """What was asked of a forge cannot be sent: no marker, a bad repository, no token."""


class ForgeError(ReconcilerError):
    """A forge refused a request, or answered nonsense; names the forge, method, path, status."""

    def __init__(self, forge: str, method: str, path: str, status: int | None, why: str) -> None:
        answer = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{forge} {method} {path}: {answer}" + (f" ({why})" if why else ""))
        self.forge, self.method, self.path, self.status = forge, method, path, status


class ForgeUnavailable(ForgeError, TemporaryError):
    """No answer, 429 or a 5xx: the same request may succeed later."""


@dataclass(frozen=True)
class _Dialect:
    """How one forge spells the same few calls."""

    auth: Callable[[str], dict[str, str]]
    states: Mapping[Outcome, str]
    status_name: str  # the body key of a status's context
    project: Callable[[str], str]  # repository -> the path every call starts with
    comments: str  # list and create, under `project`
    comment: str  # update one, under `project`
    update: str  # the method that updates a comment
    page: Callable[[int], dict[str, str | int]]  # the query asking for page n
    page_size: int | None  # a page shorter than this is the last; None: that proves nothing


def _owner_name(repository: str) -> str:
    return "/repos/" + "/".join(urllib.parse.quote(p, safe="") for p in repository.split("/"))


_GITHUB = _Dialect(
    auth=lambda token: {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    },
    states={"success": "success", "failure": "failure", "error": "error", "pending": "pending"},
    status_name="context",
    project=_owner_name,
    comments="/issues/{pr}/comments",
    comment="/issues/comments/{id}",
    update="PATCH",
    page=lambda n: {"per_page": 100, "page": n},
    page_size=100,
)
# Gitea's list of an issue's comments takes no `page`/`limit` (only since/before) and answers
# every comment at once; they are sent anyway, and a page that brings nothing new ends the list.
_GITEA = replace(
    _GITHUB,
    auth=lambda token: {"Authorization": f"token {token}"},
    page=lambda n: {"limit": 50, "page": n},
    page_size=None,  # a server's MAX_RESPONSE_ITEMS may cut a page below `limit`
)
_GITLAB = _Dialect(
    auth=lambda token: {"PRIVATE-TOKEN": token},
    states={"success": "success", "failure": "failed", "error": "failed", "pending": "pending"},
    status_name="name",
    project=lambda repository: "/projects/" + urllib.parse.quote(repository, safe=""),
    comments="/merge_requests/{pr}/notes",
    comment="/merge_requests/{pr}/notes/{id}",
    update="PUT",
    page=lambda n: {"per_page": 100, "page": n, "sort": "asc"},
    page_size=100,
)
DIALECTS: Mapping[Forge, _Dialect] = {"github": _GITHUB, "gitea": _GITEA, "gitlab": _GITLAB}


@dataclass(frozen=True)
class CommentResult:
    """What `upsert_comment` did: created, updated or left unchanged a comment."""

    action: Literal["created", "updated", "unchanged"]
    id: int | str
    url: str | None = None

    def describe(self) -> str:
        return f"{self.action} comment {self.id}" + (f": {self.url}" if self.url else "")


@dataclass(frozen=True)
class ForgeClient:
    """One repository on one forge, with the token that may write to it."""

    forge: Forge
    api: str
    repository: str
    token: str = field(repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.forge not in DIALECTS:
            raise ForgeInputError(f"unknown forge {self.forge!r} (expected github, gitea, gitlab)")
        problem = repository_problem(self.forge, self.repository) or _api_problem(self.api)
        if problem is not None:
            raise ForgeInputError(problem)
        if not self.token or any(c.isspace() or not c.isprintable() for c in self.token):
            raise ForgeInputError(f"the {self.forge} token is empty or has spaces or controls")

    @property
    def _dialect(self) -> _Dialect:
        return DIALECTS[self.forge]

    # --- commit statuses -------------------------------------------------------------------

    def post_status(
        self,
        sha: str,
        outcome: Outcome,
        description: str,
        context: str,
        target_url: str | None = None,
    ) -> None:
        """Set the status `context` of commit `sha` to `outcome`."""
        if not _SHA.fullmatch(sha):
            raise ForgeInputError(f"not a commit sha: {sha!r}")
        d = self._dialect
        if len(description) > DESCRIPTION_MAX:
            description = description[: DESCRIPTION_MAX - 1] + "…"
        body: dict[str, str] = {
            "state": d.states[outcome],
            "description": description,
            d.status_name: context,
        }
        if target_url:
            body["target_url"] = target_url
        self._call("POST", f"{d.project(self.repository)}/statuses/{sha}", body)

    # --- PR comments -------------------------------------------------------------------------

    def upsert_comment(self, pr: int, body: str) -> CommentResult:
        """Update in place the first comment on `pr` that starts with `body`'s first line (its
        hidden marker), else create one."""
        marker = body.split("\n", 1)[0].strip()
        if not marker:
            raise ForgeInputError("a comment to update in place starts with its marker line")
        d, project = self._dialect, self._dialect.project(self.repository)
        found = next((c for c in self._comments(pr) if c["body"].startswith(marker)), None)
        if found is None:
            made = self._call("POST", project + d.comments.format(pr=pr), {"body": body})
            return CommentResult("created", _comment_id(made), _url(made))
        if found["body"].rstrip() == body.rstrip():
            return CommentResult("unchanged", found["id"], _url(found))
        path = project + d.comment.format(pr=pr, id=found["id"])
        updated = self._call(d.update, path, {"body": body})
        return CommentResult("updated", found["id"], _url(updated) or _url(found))

    def _comments(self, pr: int) -> Iterator[dict[str, Any]]:
        """Every comment on `pr` with a text body, oldest first, page by page."""
        d = self._dialect
        path = d.project(self.repository) + d.comments.format(pr=pr)
        seen: set[object] = set()
        for number in range(1, MAX_PAGES + 1):
            page = self._call("GET", path, query=d.page(number))
            if not isinstance(page, list):
                raise ForgeError(self.forge, "GET", path, 200, "expected a list of comments")
            fresh = [c for c in page if _is_comment(c) and c["id"] not in seen]
            seen.update(c["id"] for c in fresh)
            yield from fresh
            if not fresh or (d.page_size is not None and len(page) < d.page_size):
                return

    # --- HTTP ----------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, object] | None = None,
        query: Mapping[str, str | int] | None = None,
    ) -> Any:
        url = self.api.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"User-Agent": "openclaw-reconciler", **self._dialect.auth(self.token)}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                status, raw = answer.status, answer.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            raise self._refused(method, path, exc) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, cut, timed out
            why = redact.text(str(getattr(exc, "reason", None) or exc), self.token)
            raise ForgeUnavailable(self.forge, method, path, None, why) from None
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ForgeError(self.forge, method, path, status, "the answer is not JSON") from None

    def _refused(self, method: str, path: str, exc: urllib.error.HTTPError) -> ForgeError:
        why = redact.text(_api_message(exc) or str(exc.reason or ""), self.token)
        kind = ForgeUnavailable if exc.code == 429 or exc.code >= 500 else ForgeError
        return kind(self.forge, method, path, exc.code, why)


def _api_message(exc: urllib.error.HTTPError) -> str:
    """The forge's own words from an error answer (GitHub and Gitea: `message`; GitLab:
    `message` or `error`), at most 200 characters."""
    try:
        doc = json.loads(exc.read(64 * 1024) or b"null")
    except (OSError, ValueError, AttributeError):  # no body, not JSON
        return ""
    if not isinstance(doc, dict):
        return ""
    words = doc.get("message") or doc.get("error") or ""
    return (words if isinstance(words, str) else json.dumps(words))[:200]


def _is_comment(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("body"), str) and "id" in value


def _comment_id(made: Any) -> int | str:
    return made["id"] if isinstance(made, dict) and "id" in made else "?"


def _url(comment: Any) -> str | None:
    url = comment.get("html_url") if isinstance(comment, dict) else None
    return url if isinstance(url, str) else None


def _api_problem(api: str) -> str | None:
    """Why `api` cannot be an API root, naming it without any userinfo; None when it can."""
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the API root {redact.url(api)!r} is not an http(s) URL with a host"
    if "@" in parts.netloc or parts.query or parts.fragment:
        return "the API root carries no credentials, query or fragment (the token goes apart)"
    return None


# --- tokens and plan comments --------------------------------------------------------------------


def read_token(*, env: str | None = None, file: str | Path | None = None) -> str:
    """The API token from the file `file`, else from the variable `env`; a ForgeInputError that
    names where it looked (never a value) when there is none."""
    if file is not None:
        try:
            token = Path(file).expanduser().read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise ForgeInputError(f"token file {file}: {why}") from None
        if not token:
            raise ForgeInputError(f"token file {file} is empty")
        return token
    token = os.environ.get(env or "", "").strip()
    if not token:
        raise ForgeInputError(f"{env or 'the token variable'} is not set (the forge API token)")
    return token


def split_comments(markdown: str) -> list[tuple[str, str]]:
    """(fleet, comment) for each fleet of `reconciler plan --format markdown`: the text split on
    its marker lines, each comment starting with its own."""
    sections: list[tuple[str, list[str]]] = []
    before: list[str] = []
    for line in markdown.splitlines():
        match = _MARKER.fullmatch(line.strip())
        if match:
            sections.append((match["fleet"], [line.strip()]))
        else:
            (sections[-1][1] if sections else before).append(line)
    example = MARKDOWN_MARKER.format(fleet="FLEET")
    if not sections:
        raise ForgeInputError(
            f"no marker line {example} in the text (the output of plan --format markdown)"
        )
    if any(line.strip() for line in before):
        raise ForgeInputError(f"text before the first marker line {example}: whose is it?")
    fleets = [fleet for fleet, _ in sections]
    twice = sorted({fleet for fleet in fleets if fleets.count(fleet) > 1})
    if twice:
        raise ForgeInputError(f"more than one comment for fleet {', '.join(twice)}")
    return [(fleet, "\n".join(lines).strip() + "\n") for fleet, lines in sections]


def upsert_plan_comments(
    client: ForgeClient, pr: int, markdown: str
) -> list[tuple[str, CommentResult]]:
    """One comment per fleet of `markdown` on `pr`, each updated in place by its marker."""
    return [(fleet, client.upsert_comment(pr, body)) for fleet, body in split_comments(markdown)]
