"""A minimal npm registry client: packuments over HTTP with the standard library.

The lock needs only a few documents from the registry (one packument per pinned package), so
we speak the registry's HTTP API directly instead of shelling out to `npm view` (which needs
Node and a writable cache on the reconciler's machine) or adding an HTTP dependency. We ask for
the full packument (`Accept: application/json`), not the abbreviated install form, because the
fields that decide OpenClaw compatibility (`openclaw.compat`, `openclaw.install`) are custom
package.json keys that only the full document carries.

Every request has a timeout that bounds each socket operation and the whole transfer, and a
size limit, so a slow or hostile registry cannot hang or exhaust the reconciler. A token from
`NPM_TOKEN` is sent as a bearer token but never appears in an error message, and it is not
forwarded when the registry redirects elsewhere. Failures to reach the registry are
`RegistryError` (temporary: retry later); a package that does not exist is `PackageNotFound`
(permanent: the spec is wrong).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException, HTTPResponse
from typing import Any

from reconciler.errors import LockError, RegistryError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_WORKERS = 8
TOKEN_ENV = "NPM_TOKEN"  # noqa: S105 (the variable name, not a secret)
_CHUNK = 256 * 1024
_USER_AGENT = "openclaw-reconciler (+urllib)"

Packument = dict[str, Any]


class PackageNotFound(LockError):
    """The registry answered 404 for a package: the name is wrong or not published there."""

    def __init__(self, name: str, url: str) -> None:
        super().__init__(f"{name}: not found in the registry ({url} answered 404)")
        self.name = name
        self.url = url


def package_url(registry_url: str, name: str) -> str:
    """`<registry>/<name>`, with a scoped name encoded as npm does: `@scope%2fname`."""
    escaped = urllib.parse.quote(name, safe="@/").replace("/", "%2f")
    return f"{registry_url.rstrip('/')}/{escaped}"


def fetch_packument(
    registry_url: str, name: str, *, timeout: float, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Packument:
    """The full packument of `name`; PackageNotFound on 404, RegistryError when unreachable."""
    url = package_url(registry_url, name)
    body = _get(url, timeout=timeout, max_bytes=max_bytes, not_found=lambda: _missing(name, url))
    document = _json(url, body)
    if not isinstance(document.get("versions"), dict):
        raise RegistryError(f"{redact(url)}: not a packument (no 'versions' object)")
    return document


def fetch_packuments(
    registry_url: str, names: Iterable[str], *, timeout: float
) -> dict[str, Packument | PackageNotFound]:
    """Several packuments in parallel; a missing package maps to its PackageNotFound.

    A RegistryError from any request is raised (the first by name, so the message does not
    depend on thread timing) after every request has finished.
    """
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(wanted))) as pool:
        futures = {n: pool.submit(_fetch_or_missing, registry_url, n, timeout) for n in wanted}
    return {name: future.result() for name, future in futures.items()}


def version_manifest(packument: Mapping[str, Any], version: str) -> dict[str, Any] | None:
    """The package.json of one published version, or None when it was never published."""
    versions = packument.get("versions")
    manifest = versions.get(version) if isinstance(versions, Mapping) else None
    return manifest if isinstance(manifest, dict) else None


def ping(registry_url: str, timeout: float) -> None:
    """Preflight: `GET /-/ping`; RegistryError when the registry does not answer 2xx."""
    url = f"{registry_url.rstrip('/')}/-/ping"
    _get(url, timeout=timeout, max_bytes=64 * 1024, not_found=lambda: _unavailable(url, "HTTP 404"))


# --- HTTP ------------------------------------------------------------------------------------


def _fetch_or_missing(registry_url: str, name: str, timeout: float) -> Packument | PackageNotFound:
    try:
        return fetch_packument(registry_url, name, timeout=timeout)
    except PackageNotFound as exc:
        return exc


def _request(url: str) -> urllib.request.Request:
    request = urllib.request.Request(  # noqa: S310 (scheme checked in _get)
        url, headers={"Accept": "application/json", "User-Agent": _USER_AGENT}
    )
    token = os.environ.get(TOKEN_ENV)
    if token:
        # Unredirected: urllib drops it when following a redirect to another URL.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    return request


def _get(url: str, *, timeout: float, max_bytes: int, not_found: Callable[[], Exception]) -> bytes:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise LockError(f"{redact(url)}: only http(s) registries are supported")
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:  # noqa: S310
            return _read(url, response, deadline=deadline, max_bytes=max_bytes)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise not_found() from None
        raise _unavailable(url, f"HTTP {exc.code} {exc.reason}") from None
    except TimeoutError:
        raise _unavailable(url, f"timed out after {timeout:g}s") from None
    except urllib.error.URLError as exc:
        raise _unavailable(url, _reason(exc.reason)) from None
    except (OSError, HTTPException) as exc:
        raise _unavailable(url, _reason(exc)) from None


def _read(url: str, response: HTTPResponse, *, deadline: float, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RegistryError(
            f"{redact(url)}: response of {declared} bytes exceeds {max_bytes} bytes"
        )
    chunks, size = [], 0
    while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise RegistryError(f"{redact(url)}: response exceeds {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
    return b"".join(chunks)


def _json(url: str, body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{redact(url)}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{redact(url)}: expected a JSON object, got {type(document).__name__}")
    return document


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


def _missing(name: str, url: str) -> PackageNotFound:
    return PackageNotFound(name, redact(url))


def _unavailable(url: str, why: str) -> RegistryError:
    return RegistryError(f"registry unavailable: GET {redact(url)}: {why}")


def redact(url: str) -> str:
    """`url` without user:password, for messages (the NPM_TOKEN is never in a URL)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
