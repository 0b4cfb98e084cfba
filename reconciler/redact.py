"""Showing URLs without the secrets they carry.

A git remote may carry a token in its userinfo (`https://x-access-token:TOKEN@host/org/repo`),
and a Slack or webhook URL is itself the secret (the token is its path). Such a URL is needed to
connect, but must never be printed: not at startup, not in an error, a metric, a status record
or a log line. Every place that shows a remote goes through `url`, and every message that may
quote one (libgit2's and urllib's errors do) through `text`.
"""

from __future__ import annotations

import re
import urllib.parse

HIDDEN = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@'\"]+@")


def url(value: str) -> str:
    """The URL with its userinfo (user, password or token) replaced by `***`."""
    return _USERINFO.sub(rf"\1{HIDDEN}@", value)


def text(message: str, *secrets: str) -> str:
    """`message` with every URL's userinfo hidden, and each of `secrets` (a URL that is a secret
    as a whole, say) replaced by `***`."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        message = message.replace(secret, HIDDEN)
    return url(message)


def origin(value: str) -> str:
    """Only the scheme and host of a URL whose path is a secret (a Slack incoming webhook):
    `https://hooks.example.com/...`; `(not a URL)` when it has neither."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
    except ValueError:
        return "(not a URL)"
    if not parts.scheme or not parts.hostname:
        return "(not a URL)"
    return f"{parts.scheme}://{parts.hostname}/..."
