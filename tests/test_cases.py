"""The data-driven spec suite: every folder under tests/cases/ is a test (see its README.md).

tests/cases/invalid/<case>/ holds a spec that must be refused, with expected.yaml listing every
problem `reconciler validate` must report (JSON path, message fragment, line). The CLI is run for
real: in-process with --json for every case, from a git commit for every case, and through a
subprocess for a handful, to check the human-readable `file:line:col: path: message` lines.
tests/cases/valid/<case>/ holds a spec that must load, with facts to check on the loaded model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
from ruamel.yaml import YAML

from reconciler.cli import main
from reconciler.desired import source, speccache
from reconciler.desired.validate import MAX_SPEC_BYTES, LoadedSpec, load

CASES = Path(__file__).parent / "cases"
DEFAULT_ARGS = ["--no-lock"]
CASE_KEYS = {"description", "args", "generate", "xfail", "problems", "facts"}
PROBLEM_KEYS = {"path", "message", "line", "file"}
SPEC_FILES = ("fleet.yaml", "known_hosts", "openclaw.lock")

# Pydantic or regex leaking into a message: the operator gets the raw rule, not its meaning.
RAW_RULE = re.compile(r"should match pattern|Input should be|\^\S*\$|\[key\]")


@dataclass(frozen=True)
class Case:
    kind: str  # "invalid" or "valid"
    name: str
    dir: Path
    expected: dict[str, Any]

    @property
    def args(self) -> list[str]:
        return list(self.expected.get("args", DEFAULT_ARGS))

    @property
    def problems(self) -> list[dict[str, Any]]:
        return list(self.expected.get("problems") or [])

    @property
    def xfail(self) -> str | None:
        return self.expected.get("xfail")

    def files(self, tmp_path: Path) -> Path:
        """The spec directory to validate: the case itself, or a generated copy of it."""
        generate = self.expected.get("generate")
        if generate is None:
            return self.dir
        target = tmp_path / self.name
        shutil.copytree(self.dir, target, ignore=shutil.ignore_patterns("expected.yaml"))
        if generate == "huge":
            # Valid YAML (comments) that pushes the file past the limit by a few KiB.
            fleet = target / "fleet.yaml"
            filler = b"# " + b"x" * 1021 + b"\n"
            fleet.write_bytes(fleet.read_bytes() + filler * (MAX_SPEC_BYTES // len(filler) + 4))
            assert fleet.stat().st_size > MAX_SPEC_BYTES
        else:
            raise AssertionError(f"{self.name}: unknown generate: {generate!r}")
        return target


def _cases(kind: str) -> list[Case]:
    yaml = YAML(typ="safe")
    return [
        Case(kind, d.name, d, yaml.load((d / "expected.yaml").read_text(encoding="utf-8")))
        for d in sorted((CASES / kind).iterdir())
        if d.is_dir()
    ]


INVALID = _cases("invalid")
VALID = _cases("valid")


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in cases]


# --- running the CLI ---------------------------------------------------------------------------


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    """`reconciler validate ... --json` in-process: exit code and the parsed report."""
    capsys.readouterr()
    code = main(["validate", *argv, "--json"])
    out, err = capsys.readouterr()
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"validate {argv} printed no JSON (exit {code}): {out!r} {err!r}")
    return code, report


def commit_case(directory: Path, repo_path: Path) -> Path:
    """A fresh git repository whose HEAD commit holds the case's spec files at the top."""
    repo = pygit2.init_repository(str(repo_path), bare=True)
    builder = repo.TreeBuilder()
    for name in SPEC_FILES:
        if (directory / name).is_file():
            blob = repo.create_blob((directory / name).read_bytes())
            builder.insert(name, blob, pygit2.GIT_FILEMODE_BLOB)
    author = pygit2.Signature("Spec Author", "spec@example.com", 1767225600, 0)
    repo.create_commit("HEAD", author, author, "spec", builder.write(), [])
    return repo_path


# --- matching problems -------------------------------------------------------------------------


def render(p: dict[str, Any]) -> str:
    where = p["file"] if p["line"] is None else f"{p['file']}:{p['line']}:{p['column']}"
    return f"{where}: {p['path']}: {p['message']}"


def _matches(expected: dict[str, Any], actual: dict[str, Any], file_prefix: str) -> bool:
    return (
        actual["path"] == expected["path"]
        and expected["message"] in actual["message"]
        and actual["line"] == expected["line"]
        and actual["file"] == file_prefix + expected.get("file", "fleet.yaml")
    )


def explains(message: str) -> bool:
    """True when a message says what was expected, not only the raw value or the raw rule."""
    prose = re.sub(r"'[^']*'|\"[^\"]*\"", " ", message)
    return not RAW_RULE.search(message) and len(re.findall(r"[A-Za-z]{2,}", prose)) >= 2


def mismatches(case: Case, actual: list[dict[str, Any]], file_prefix: str) -> list[str]:
    """Every difference between the expected problems and the reported ones (empty: all good)."""
    remaining = list(actual)
    errors = []
    for exp in case.problems:
        hit = next((a for a in remaining if _matches(exp, a, file_prefix)), None)
        if hit is None:
            file = file_prefix + exp.get("file", "fleet.yaml")
            errors.append(f"missing: {file}:{exp['line']}: {exp['path']}: ...{exp['message']}...")
        else:
            remaining.remove(hit)
    errors += [f"unexpected: {render(a)}" for a in remaining]
    errors += [f"unclear message: {render(a)}" for a in actual if not explains(a["message"])]
    return errors


def refused(code: int, report: dict[str, Any]) -> list[str]:
    """What is wrong with the outcome of validating an invalid spec (empty: refused properly)."""
    if code == 2 and report["valid"] is False and report["fleets"] == [] and report["problems"]:
        return []
    return [f"not refused: exit {code} (2 expected), valid={report['valid']}"]


def settle(case: Case, errors: list[str], actual: list[dict[str, Any]]) -> None:
    """Pass, fail, or (for a case marked xfail) expect the failure strictly."""
    detail = "\n  ".join(["reported:", *map(render, actual), "differences:", *errors])
    if case.xfail:
        if errors:
            pytest.xfail(f"{case.xfail}\n  {detail}")
        pytest.fail(f"{case.name} is marked xfail ({case.xfail}) but now passes: remove the mark")
    assert not errors, f"{case.name}: {case.expected['description']}\n  {detail}"


# --- the cases themselves ------------------------------------------------------------------------


def _check_expected_file(case: Case) -> Iterator[str]:
    unknown = set(case.expected) - CASE_KEYS
    if unknown:
        yield f"unknown keys {sorted(unknown)}"
    if not case.expected.get("description"):
        yield "no description"
    if not isinstance(case.args, list) or not set(case.args) <= {"--no-lock"}:
        yield f"args must be [] or [--no-lock], got {case.args!r}"
    if case.kind == "invalid":
        if not case.problems:
            yield "an invalid case must list its problems"
        if "facts" in case.expected:
            yield "facts belong to valid cases"
        for p in case.problems:
            if set(p) - PROBLEM_KEYS or not {"path", "message", "line"} <= set(p):
                yield f"a problem needs path, message, line (and optionally file): {p}"
            elif not explains(p["message"]):
                yield f"the message fragment must say what was expected: {p['message']!r}"
    else:
        if not case.expected.get("facts"):
            yield "a valid case must list facts to check"
        if "problems" in case.expected or "xfail" in case.expected:
            yield "problems and xfail belong to invalid cases"
    if not (case.dir / "fleet.yaml").is_file():
        yield "no fleet.yaml"
    extra = {p.name for p in case.dir.iterdir()} - {*SPEC_FILES, "expected.yaml"}
    if extra:
        yield f"unexpected files {sorted(extra)}"


@pytest.mark.parametrize("case", _params(INVALID + VALID))
def test_expected_file_is_well_formed(case: Case) -> None:
    assert list(_check_expected_file(case)) == []


def test_suite_covers_enough() -> None:
    assert len(INVALID) >= 40
    assert len(VALID) >= 6
    several = [c.name for c in INVALID if len(c.problems) > 1]
    assert len(several) >= 5, "several cases must expect more than one problem in one run"
    lock_cases = [c.name for c in INVALID if "--no-lock" not in c.args]
    assert len(lock_cases) >= 3


# --- invalid: in-process, from a directory ----------------------------------------------------


@pytest.mark.parametrize("case", _params(INVALID))
def test_invalid_case(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = case.files(tmp_path)
    code, report = run_json(capsys, [str(directory), *case.args])
    prefix = directory.as_posix() + "/"
    problems = report["problems"]
    errors = refused(code, report)
    errors += [
        f"file not named as <case dir>/<spec file>: {render(p)}"
        for p in problems
        if not (p["file"].startswith(prefix) and p["file"][len(prefix) :] in SPEC_FILES)
    ]
    settle(case, errors + mismatches(case, problems, prefix), problems)


# --- invalid and valid: from a git commit -----------------------------------------------------


@pytest.mark.parametrize("case", _params(INVALID))
def test_invalid_case_from_git(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = commit_case(case.files(tmp_path), tmp_path / "repo.git")
    code, report = run_json(capsys, ["--repo", str(repo), "--ref", "HEAD", *case.args])
    assert re.fullmatch(r"[0-9a-f]{40}", report["commit"])
    errors = refused(code, report) + mismatches(case, report["problems"], "")
    settle(case, errors, report["problems"])


@pytest.mark.parametrize("case", _params(VALID))
def test_valid_case_from_git(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = commit_case(case.dir, tmp_path / "repo.git")
    code, report = run_json(capsys, ["--repo", str(repo), *case.args])
    assert (code, report["problems"]) == (0, []), f"{case.name}: {report}"
    assert report["fleets"] == [load_case(case).fleet.name]


# --- invalid: a real subprocess, human-readable output ----------------------------------------

SUBPROCESS_CASES = [
    "wrong-types",
    "shell-user-subst",
    "yaml-tab-indentation",
    "semantic-problems-together",
    "lock-stale",
]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_invalid_case_subprocess(name: str) -> None:
    case = next(c for c in INVALID if c.name == name)
    assert not case.xfail and "generate" not in case.expected
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(case.dir), *case.args],
        cwd=CASES.parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    count = len(case.problems)
    assert lines[-1] == f"{count} problem{'s' if count != 1 else ''}"
    for exp in case.problems:
        file = re.escape(f"{case.dir.as_posix()}/{exp.get('file', 'fleet.yaml')}")
        where = file if exp["line"] is None else rf"{file}:{exp['line']}:\d+"
        pattern = rf"{where}: {re.escape(exp['path'])}: .*{re.escape(exp['message'])}.*"
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines)


# --- valid ---------------------------------------------------------------------------------------


def load_case(case: Case) -> LoadedSpec:
    [files] = source.read_directory(case.dir)
    return load(files, require_lock="--no-lock" not in case.args)


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def lookup(document: dict[str, Any], expression: str) -> Any:
    """`$.hosts[0].port`, `lock.packages[1].name` or `len($.hosts)` on the loaded spec."""
    counted = re.fullmatch(r"len\((.+)\)", expression)
    path = counted.group(1) if counted else expression
    root, _, rest = path.partition(".")
    value = document[root]
    rest = "." + rest if rest else ""
    assert "".join(m.group(0) for m in _STEP.finditer(rest)) == rest, expression
    for key, index in _STEP.findall(rest):
        value = value[int(index)] if index else value[key]
    return len(value) if counted else value


@pytest.mark.parametrize("case", _params(VALID))
def test_valid_case(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, [str(case.dir), *case.args])
    assert (code, report["problems"]) == (0, []), f"{case.name}: {report}"
    assert report["valid"] is True

    spec = load_case(case)
    assert report["fleets"] == [spec.fleet.name]
    document = {
        "$": spec.fleet.model_dump(mode="json", by_alias=True),
        "lock": spec.lock.dump() if spec.lock else None,
    }
    facts = case.expected["facts"]
    wrong = {k: lookup(document, k) for k, v in facts.items() if lookup(document, k) != v}
    assert not wrong, f"{case.name}: facts differ (actual values): {wrong}"
    for host in spec.fleet.hosts:
        if host.transport == "ssh":
            assert spec.known_hosts.has(host.address, host.port), host.name


@pytest.mark.parametrize("case", _params(VALID))
def test_a_valid_case_kept_in_the_spec_cache_comes_back_equal(case: Case, tmp_path: Path) -> None:
    loaded = load_case(case)
    speccache.put(tmp_path, "c0ffee" * 6 + "c0ff", loaded.fleet.name, loaded)
    kept = speccache.get(tmp_path, "c0ffee" * 6 + "c0ff", loaded.fleet.name)
    assert kept is not None
    assert kept.fleet == loaded.fleet and kept.lock == loaded.lock and kept.files == loaded.files
    assert kept.known_hosts.text == loaded.known_hosts.text
    # Another commit, another fleet name, or a damaged entry is a miss, never a wrong spec.
    assert speccache.get(tmp_path, "0" * 40, loaded.fleet.name) is None
    assert speccache.get(tmp_path, "c0ffee" * 6 + "c0ff", loaded.fleet.name + "x") is None
    for entry in tmp_path.glob("*.json"):
        entry.write_text(entry.read_text()[:-20])
    assert speccache.get(tmp_path, "c0ffee" * 6 + "c0ff", loaded.fleet.name) is None
