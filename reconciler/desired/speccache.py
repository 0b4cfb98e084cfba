"""Specs that passed validation, kept on disk by commit.

Why: a commit never changes, and neither does the verdict of the same validator on it. The
engine memoizes loaded specs in memory, but a reconciler started once per pass (`reconcile
--once` from cron or CI) would parse and validate the whole spec on every start: for a
1,000-host fleet that was most of a steady pass's CPU (the round-trip YAML parser, kept for
its line numbers, is pure Python). An entry holds the fleet's files and its validated model;
on a hit the model is checked again by pydantic (cheap, from JSON) and the lock and the pinned
keys are re-read from the stored bytes. Nothing else is trusted from the file.

The key is (commit, fleet, validator): the validator's digest covers the source of every
module that decides validity, so a reconciler upgrade never reuses an older verdict. Only
valid specs are kept (an invalid head is rare and its problems are wanted fresh). A cache
that cannot be read or written is no cache: a miss, logged, never an error.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pydantic

from reconciler.desired import knownhosts, lock, source, spec, validate, versions, yamlsafe
from reconciler.desired.knownhosts import KnownHosts
from reconciler.desired.lock import parse_lock
from reconciler.desired.spec import Fleet
from reconciler.desired.validate import LoadedSpec, SpecFiles

log = logging.getLogger(__name__)
FORMAT = 1


@functools.cache
def validator_digest() -> str:
    """sha256 over the source of the modules whose code decides whether a spec is valid."""
    digest = hashlib.sha256(f"format {FORMAT}".encode())
    for module in (spec, validate, yamlsafe, lock, knownhosts, source, versions):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def _path(directory: Path, commit: str, fleet: str) -> Path:
    key = hashlib.sha256(f"{commit}\0{fleet}\0{validator_digest()}".encode()).hexdigest()
    return directory / f"{key[:40]}.json"


def get(directory: Path, commit: str, fleet: str) -> LoadedSpec | None:
    """The spec validated earlier for (commit, fleet), or None."""
    path = _path(directory, commit, fleet)
    try:
        doc = json.loads(path.read_bytes())
        stored = doc["files"]
        fleet_bytes = _bytes(stored["fleet"])
        if fleet_bytes is None:
            raise ValueError("no fleet file")
        files = SpecFiles(
            fleet_path=str(stored["fleet_path"]),
            fleet=fleet_bytes,
            lock_path=str(stored["lock_path"]),
            lock=_bytes(stored["lock"]),
            known_hosts_path=str(stored["known_hosts_path"]),
            known_hosts=_bytes(stored["known_hosts"]),
        )
        model = Fleet.model_validate(doc["fleet"])
        return LoadedSpec(
            fleet=model,
            lock=parse_lock(files.lock) if files.lock is not None else None,
            known_hosts=KnownHosts.parse(files.known_hosts or b""),
            files=files,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, pydantic.ValidationError) as exc:
        log.warning("spec cache entry %s unusable (%s); validating again", path.name, exc)
        return None


def put(directory: Path, commit: str, fleet: str, loaded: LoadedSpec) -> None:
    """Keep a spec that passed validation (atomically; failures are logged and ignored)."""
    files = {k: _text(v) if k in _BYTES else v for k, v in loaded.files.__dict__.items()}
    doc = {
        "format": FORMAT,
        "commit": commit,
        "fleet": loaded.fleet.model_dump(mode="json", by_alias=True),
        "files": files,
    }
    path = _path(directory, commit, fleet)
    tmp: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".spec-")
        with os.fdopen(fd, "wb") as out:
            out.write(json.dumps(doc).encode())
        Path(tmp).replace(path)
    except OSError as exc:
        log.warning("cannot keep the validated spec of %s in %s: %s", commit[:12], directory, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


_BYTES = ("fleet", "lock", "known_hosts")


def _text(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value is not None else None


def _bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(value, validate=True)
