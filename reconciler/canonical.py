"""Canonical JSON and its digest.

Everything we hash (the lock, readiness fingerprints, bookmarks) goes through one canonical
form, so that two hosts or two runs that mean the same thing produce the same bytes: sorted
keys, no insignificant whitespace, UTF-8, and a trailing newline only in files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON encoding of `value`."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_of(value: Any) -> str:
    """Hex sha256 of the canonical encoding of `value`."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def pretty_bytes(value: Any) -> bytes:
    """Deterministic, reviewable JSON for files in git: sorted, indented, newline-terminated."""
    text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")
