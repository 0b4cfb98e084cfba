"""The published JSON Schemas (schemas/*.schema.json): current, checked, and right about the cases.

The schemas are generated from the pydantic models (`reconciler schema`); `reconciler schema
--check` is what CI runs so the checked-in copies never drift. Editors and other tools validate
fleet.yaml against schemas/fleet.schema.json alone, so every valid case must pass it as-is and
every spec with a shell metacharacter must already fail it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from reconciler.cli import main
from reconciler.desired.validate import json_path, schema_validator
from reconciler.views import schemas
from tests.test_cases import INVALID, VALID, Case

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@pytest.fixture(scope="module")
def published() -> Path:
    """The checked-in schemas/ directory (written with `reconciler schema` when missing)."""
    if not all((SCHEMAS / name).is_file() for name in schemas.rendered()):
        assert main(["schema", "--out", str(SCHEMAS)]) == 0
    return SCHEMAS


def validator(directory: Path, name: str) -> Any:
    schema = json.loads((directory / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema_validator(schema)


def spec_of(case: Case) -> Any:
    return YAML(typ="safe").load((case.dir / "fleet.yaml").read_bytes())


# --- reconciler schema --check ---------------------------------------------------------------


def test_checked_in_schemas_are_current(
    published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "--check", "--out", str(published)]) == 0
    assert capsys.readouterr().err == ""


def test_every_document_has_a_schema(published: Path) -> None:
    assert {p.name for p in published.glob("*.schema.json")} == set(schemas.rendered())
    for name in schemas.DOCUMENTS:
        assert validator(published, name).schema["$id"] == f"{schemas.BASE_ID}{name}.schema.json"


def test_check_names_the_schema_that_differs(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schemas"
    shutil.copytree(published, out)
    assert main(["schema", "--out", str(out)]) == 0  # in step with the models, even mid-change
    altered = out / "fleet.schema.json"
    schema = json.loads(altered.read_text(encoding="utf-8"))
    schema["$defs"]["Host"]["properties"]["user"]["pattern"] = ".*"  # a hand edit loosening it
    altered.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    capsys.readouterr()

    assert main(["schema", "--check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{altered}: differs from the models" in err
    assert "lock.schema.json" not in err, "only the altered file is named"

    # `reconciler schema` puts it back, and only it.
    assert main(["schema", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {altered}"
    assert main(["schema", "--check", "--out", str(out)]) == 0


def test_check_names_a_missing_schema(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schemas"
    shutil.copytree(published, out)
    assert main(["schema", "--out", str(out)]) == 0
    (out / "lock.schema.json").unlink()
    capsys.readouterr()
    assert main(["schema", "--check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "lock.schema.json") in err
    assert "fleet.schema.json" not in err


# --- the cases against the published schema --------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in VALID])
def test_valid_case_passes_published_schema(published: Path, case: Case) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(published, "fleet").iter_errors(spec_of(case))
    ]
    assert errors == []
    lock = case.dir / "openclaw.lock"
    if lock.is_file():
        assert list(validator(published, "lock").iter_errors(json.loads(lock.read_bytes()))) == []


SHELL_CASES = [c for c in INVALID if c.name.startswith("shell-") and not c.xfail]


def test_there_are_shell_cases() -> None:
    assert len(SHELL_CASES) >= 15


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in SHELL_CASES])
def test_shell_case_fails_published_schema(published: Path, case: Case) -> None:
    """Tools that only have the schema must refuse shell metacharacters too, at the same path."""
    errors = list(validator(published, "fleet").iter_errors(spec_of(case)))
    assert errors, f"{case.name}: the published schema accepts it"
    reported = [json_path(e.absolute_path) for e in errors]
    for problem in case.problems:
        # The schema may stop at an `X | None` field where the CLI names the item inside it.
        assert any(
            problem["path"] == r or problem["path"].startswith((f"{r}.", f"{r}[")) for r in reported
        ), (
            problem["path"],
            reported,
        )
