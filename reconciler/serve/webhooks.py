"""Git push webhooks from GitHub, Gitea and GitLab: verified before a byte of them is believed.

A push webhook only ever asks for a pass sooner (the poll would have found the commit anyway),
so what matters is that nobody else can make the reconciler act, or act twice on one captured
delivery. Each provider authenticates differently and this module does exactly what each one
documents, over the exact bytes received, never over re-serialised JSON:

- GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body; `X-GitHub-Event`.
- Gitea (and Forgejo): `X-Gitea-Signature: <hex>`, HMAC-SHA256 of the raw body;
  `X-Gitea-Event`. Gitea also sends GitHub's headers, so it is recognised first.
- GitLab: `X-Gitlab-Token: <secret>`, the secret itself, compared in constant time;
  `X-Gitlab-Event: Push Hook`.

Neither signature covers a timestamp, so a captured delivery verifies forever: `ReplayGuard`
remembers each delivery id (`X-GitHub-Delivery`, `X-Gitea-Delivery`, `X-Gitlab-Event-UUID`) AND
the body's digest for a bounded time and size, because the delivery id header is outside the
signature and can be changed by whoever replays. Two real pushes never share a body (`before`
and `after` differ).

Every refusal is a `Rejected` carrying the HTTP status the server answers with; secrets are only
ever inputs to `hmac` and never appear in an exception, a log line or a response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Provider = Literal["github", "gitea", "gitlab"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitea", "gitlab")
MAX_BODY_BYTES = 5 * 1024 * 1024
"""GitHub caps payloads at 25 MB, but a push of a spec repository is a few KB; 5 MiB leaves
room for pushes of thousands of commits and keeps one request's memory bounded."""
ZERO_SHA = "0" * 40
JSON_TYPES = ("application/json",)
FORM_TYPE = "application/x-www-form-urlencoded"


class Rejected(Exception):
    """A delivery refused with an HTTP status (4xx), or accepted and ignored (202)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class PushEvent:
    """One verified push, reduced to what decides which fleets to pass."""

    provider: Provider
    ref: str
    branch: str
    after: str
    repository_urls: tuple[str, ...]
    delivery_id: str | None
    repository: str = ""
    deleted: bool = False


@dataclass(frozen=True)
class _Scheme:
    """How one provider names its headers."""

    provider: Provider
    event_header: str
    push_event: str
    delivery_headers: tuple[str, ...]
    form_allowed: bool


SCHEMES = {
    "gitea": _Scheme("gitea", "x-gitea-event", "push", ("x-gitea-delivery",), True),
    "gitlab": _Scheme(
        "gitlab", "x-gitlab-event", "Push Hook", ("x-gitlab-event-uuid", "idempotency-key"), False
    ),
    "github": _Scheme("github", "x-github-event", "push", ("x-github-delivery",), True),
}


# --- the envelope, before the body is read ------------------------------------------------------


def lower_headers(headers: Mapping[str, str] | Any) -> dict[str, str]:
    """Header names lower-cased; the first of a repeated header wins."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        out.setdefault(str(name).lower(), str(value))
    return out


def detect(headers: Mapping[str, str]) -> Provider:
    """Which provider sent this, from its event header (Gitea before GitHub: it sends both)."""
    for scheme in SCHEMES.values():
        if scheme.event_header in headers:
            return scheme.provider
    raise Rejected(400, "unknown provider: no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event")


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_envelope(
    headers: Mapping[str, str], content_length: int | None, max_body: int = MAX_BODY_BYTES
) -> Provider:
    """Refuse what can be refused from the headers alone: size (413), provider (400), type (415)."""
    if content_length is None:
        raise Rejected(411, "Content-Length required")
    if content_length < 0:
        raise Rejected(400, "bad Content-Length")
    if content_length > max_body:
        raise Rejected(413, f"body over {max_body} bytes")
    provider = detect(headers)
    kind = media_type(headers)
    allowed = (*JSON_TYPES, FORM_TYPE) if SCHEMES[provider].form_allowed else JSON_TYPES
    if kind not in allowed:
        shown = kind[:60] or "(none)"
        raise Rejected(415, f"content type {shown} is not one of {', '.join(allowed)}")
    return provider


# --- authentication ---------------------------------------------------------------------------


def hmac_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of two header values, whatever their length or charset."""
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


def authentic(provider: Provider, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    """Whether the delivery carries a valid signature (or token) under `secret`."""
    if provider == "github":
        given = headers.get("x-hub-signature-256", "").strip()
        return given.startswith("sha256=") and _same(
            given.lower(), "sha256=" + hmac_hex(secret, body)
        )
    if provider == "gitea":
        given = headers.get("x-gitea-signature", "").strip().lower()
        return bool(given) and _same(given, hmac_hex(secret, body))
    given = headers.get("x-gitlab-token", "")
    return bool(given) and _same(given, secret.decode("utf-8", "surrogateescape"))


_HEX64 = re.compile(r"[0-9a-f]{64}")


def authenticate_headers(
    provider: Provider, headers: Mapping[str, str], secrets: Mapping[str, bytes]
) -> None:
    """401 for what the headers alone prove forged, so that no byte of its body is read: no
    secret for the provider, a GitLab token that is wrong, a GitHub or Gitea signature that
    is not even shaped like one (64 hex digits)."""
    secret = secrets.get(provider)
    if not secret:
        raise Rejected(401, f"no {provider} webhook secret configured")
    if provider == "gitlab":
        if not authentic(provider, headers, b"", secret):
            raise Rejected(401, "bad or missing gitlab signature")
        return
    header = "x-hub-signature-256" if provider == "github" else "x-gitea-signature"
    given = headers.get(header, "").strip().lower()
    if provider == "github":
        given = given.removeprefix("sha256=") if given.startswith("sha256=") else ""
    if not _HEX64.fullmatch(given):
        raise Rejected(401, f"bad or missing {provider} signature")


def authenticate(
    provider: Provider, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, bytes]
) -> None:
    """401 unless signed with the configured secret; 401 too when none is configured (a
    provider without a secret is a provider we cannot tell from anyone else)."""
    secret = secrets.get(provider)
    if not secret:
        raise Rejected(401, f"no {provider} webhook secret configured")
    if not authentic(provider, headers, body, secret):
        raise Rejected(401, f"bad or missing {provider} signature")


# --- replay -------------------------------------------------------------------------------------


class ReplayGuard:
    """Remembers delivery ids and body digests for `ttl_s`, at most `max_entries` of them."""

    def __init__(
        self,
        ttl_s: float = 24 * 3600.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, keys: list[str]) -> bool:
        """False when any key was seen within the TTL; otherwise remember them all."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            if any(key in self._seen for key in keys):
                return False
            for key in keys:
                self._seen[key] = now + self.ttl_s
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return True

    def forget(self, keys: list[str]) -> None:
        """Drop keys admitted for a delivery that was not acted on after all."""
        with self._lock:
            for key in keys:
                self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[key]


def delivery_id(provider: Provider, headers: Mapping[str, str]) -> str | None:
    for name in SCHEMES[provider].delivery_headers:
        value = headers.get(name, "").strip()
        if value:
            return value[:200]
    return None


def replay_keys(provider: Provider, delivery: str | None, body: bytes) -> list[str]:
    keys = [f"{provider}:body:{hashlib.sha256(body).hexdigest()}"]
    if delivery:
        keys.append(f"{provider}:delivery:{delivery}")
    return keys


# --- the payload --------------------------------------------------------------------------------


def _payload(provider: Provider, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The JSON object of the body (or of its `payload=` form field)."""
    try:
        text = body.decode("utf-8")
        if media_type(headers) == FORM_TYPE:
            form = urllib.parse.parse_qs(text, max_num_fields=20, strict_parsing=True)
            text = form["payload"][0]
        doc = json.loads(text)
    except RecursionError:
        raise Rejected(400, f"malformed {provider} payload: nested too deep") from None
    except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise Rejected(400, f"malformed {provider} payload: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise Rejected(400, f"malformed {provider} payload: not a JSON object")
    return doc


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _urls(repo: object, keys: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(repo, dict):
        return ()
    found = [_text(repo.get(key)) for key in keys]
    return tuple(dict.fromkeys(u for u in found if u))


def _github_like(doc: dict[str, Any]) -> tuple[str, tuple[str, ...], str, bool]:
    repo = doc.get("repository")
    urls = _urls(repo, ("clone_url", "ssh_url", "git_url", "html_url", "url"))
    name = _text(repo.get("full_name")) if isinstance(repo, dict) else ""
    after = _text(doc.get("after"))
    deleted = bool(doc.get("deleted")) or after == ZERO_SHA
    return after, urls, name, deleted


def _gitlab(doc: dict[str, Any]) -> tuple[str, tuple[str, ...], str, bool]:
    project = doc.get("project")
    keys = ("git_http_url", "git_ssh_url", "http_url", "ssh_url", "web_url")
    urls = _urls(project, keys) + _urls(doc.get("repository"), (*keys, "url", "homepage"))
    name = _text(project.get("path_with_namespace")) if isinstance(project, dict) else ""
    after = _text(doc.get("checkout_sha")) or _text(doc.get("after"))
    deleted = _text(doc.get("after")) == ZERO_SHA
    return after, tuple(dict.fromkeys(urls)), name, deleted


def parse_push(
    provider: Provider, headers: Mapping[str, str], body: bytes, delivery: str | None
) -> PushEvent:
    """The PushEvent of a verified push body; 400 when malformed, 202 when not a branch."""
    doc = _payload(provider, headers, body)
    ref = doc.get("ref")
    if not isinstance(ref, str) or not ref:
        raise Rejected(400, f"malformed {provider} push: no ref")
    if not ref.startswith("refs/heads/"):
        raise Rejected(202, f"ignored: {ref} is not a branch")
    after, urls, name, deleted = _gitlab(doc) if provider == "gitlab" else _github_like(doc)
    if not after and not deleted:
        raise Rejected(400, f"malformed {provider} push: no after")
    return PushEvent(
        provider=provider,
        ref=ref,
        branch=ref.removeprefix("refs/heads/"),
        after=after,
        repository_urls=urls,
        delivery_id=delivery,
        repository=name,
        deleted=deleted,
    )


# --- all of it ----------------------------------------------------------------------------------


def verify(
    headers: Mapping[str, str] | Any,
    body: bytes,
    secrets: Mapping[str, bytes],
    guard: ReplayGuard,
    *,
    max_body: int = MAX_BODY_BYTES,
) -> PushEvent:
    """Verify one delivery, in the order that never trusts unauthenticated bytes:
    envelope (400/411/413/415) -> signature (401) -> event (202) -> replay (409) -> payload (400).
    """
    lowered = lower_headers(headers)
    provider = check_envelope(lowered, len(body), max_body)
    authenticate(provider, lowered, body, secrets)
    scheme = SCHEMES[provider]
    event = lowered.get(scheme.event_header, "").strip()
    if event != scheme.push_event:
        raise Rejected(202, f"ignored: {provider} event {event[:50]!r} is not a push")
    delivery = delivery_id(provider, lowered)
    if not guard.admit(replay_keys(provider, delivery, body)):
        raise Rejected(409, f"replayed {provider} delivery {delivery or '(body seen before)'}")
    return parse_push(provider, lowered, body, delivery)


# --- matching a push to the watched remote -------------------------------------------------------


def repository_key(url: str) -> str:
    """`host/path` of a git URL, lower-cased, without scheme, user, port or `.git`:
    `git@github.com:org/fleet.git` and `https://github.com/org/fleet` give the same key."""
    text = url.strip()
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
    elif ":" in text and not text.startswith("/"):
        userhost, _, path = text.partition(":")
        host = userhost.rsplit("@", 1)[-1]
    else:
        host, path = "", text
    path = path.strip("/").removesuffix(".git").rstrip("/")
    return f"{host.lower()}/{path.lower()}" if host else path


def same_repository(remote: str, repository_urls: Sequence[str]) -> bool:
    """Whether a push whose repository has these URLs is for the spec repository at `remote`
    (under any of its spellings: https, ssh, scp-like)."""
    key = repository_key(remote)
    return any(repository_key(u) == key for u in repository_urls)


def check_repository(event: PushEvent, remote: str) -> None:
    """202 (accepted, ignored) for a push of another repository than the watched `remote`: one
    secret often signs a whole organisation's hooks, and a push of any of its repositories to
    a branch of the watched name must not trigger a pass."""
    if not same_repository(remote, event.repository_urls):
        shown = event.repository[:100] or "a repository without URLs"
        raise Rejected(202, f"ignored: a push of {shown}, not of the watched repository")
