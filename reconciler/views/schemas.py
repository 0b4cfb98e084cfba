"""JSON Schemas for every document, generated from the pydantic models.

The models are the single source of truth; schemas/*.schema.json are published copies for
editors, CI and other tools, and a test fails when the checked-in copies drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from reconciler.desired.lock import Lock
from reconciler.desired.spec import Fleet
from reconciler.record.documents import Bookmark, Freeze, Readiness, RolloutRecord
from reconciler.rollout.planner import Plan

DOCUMENTS: dict[str, type[BaseModel]] = {
    "fleet": Fleet,
    "lock": Lock,
    "readiness": Readiness,
    "bookmark": Bookmark,
    "rollout": RolloutRecord,
    "freeze": Freeze,
    "plan": Plan,
}
BASE_ID = "urn:openclaw-reconciler:schemas:"


def schema_of(name: str) -> dict[str, object]:
    schema = DOCUMENTS[name].model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}{name}.schema.json",
        **schema,
    }


def rendered() -> dict[str, str]:
    """File name -> exact file content, for every schema."""
    return {
        f"{name}.schema.json": json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n"
        for name in DOCUMENTS
    }


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in rendered().items():
        target = out / filename
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            written.append(target)
    return written


def stale(out: Path) -> list[str]:
    """Names of the schema files in `out` that differ from the generated ones."""
    return [
        f
        for f, text in rendered().items()
        if not (out / f).is_file() or (out / f).read_text() != text
    ]
