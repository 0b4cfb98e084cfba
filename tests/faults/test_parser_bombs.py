"""Specs built to exhaust the validator, and values built to slip past it: each refused with a
location, by `validate`, from git and by the engine, and never by a traceback.

The data-driven half lives in tests/cases/invalid (yaml-alias-*, yaml-deep-*, yaml-merge-key-bomb,
yaml-alias-cycle, yaml-number-too-long, duration-*, argv-*, path*, window-*). Here: what a case
folder cannot say. Boundaries (one node or level within the bound passes, one more is refused),
inputs too big to commit, the size cap applied before anything parses (directory, git tree, lock
and known_hosts alike), the cap on reported problems, merge keys at scale, the engine's record
of an invalid head, and every duration, option-like value and unnormalised path field.
Timing goals are in bench/validate_worst.py, not here.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pygit2
import pytest

from reconciler.desired import source, yamlsafe
from reconciler.desired.spec import Fleet
from reconciler.desired.validate import MAX_PROBLEMS, MAX_SPEC_BYTES, SpecFiles, load
from reconciler.errors import SpecError
from reconciler.record.gitstore import GitStore
from reconciler.record.status import read_status
from reconciler.rollout.engine import Engine
from reconciler.rollout.events import Event

ROOT = Path(__file__).resolve().parents[2]
KNOWN_HOSTS = (ROOT / "tests/cases/invalid/shell-service-and/known_hosts").read_bytes()
HEAD = b"""apiVersion: reconciler.openclaw.ai/v1
kind: Fleet
name: lab
openclaw:
  version: 2026.4.3
  registry: https://npm.example.net/
loadBalancer:
  driver: file
  address: /var/lib/reconciler/weights.json
"""
ONE_HOST = b"hosts:\n  - {name: gw-1, address: 10.0.0.1, user: openclaw}\n"


def files(fleet: bytes, **extra: Any) -> SpecFiles:
    fields: dict[str, Any] = {
        "fleet_path": "fleet.yaml",
        "fleet": fleet,
        "lock_path": "openclaw.lock",
        "lock": None,
        "known_hosts_path": "known_hosts",
        "known_hosts": KNOWN_HOSTS,
    }
    return SpecFiles(**{**fields, **extra})


def problems(fleet: bytes) -> list[str]:
    with pytest.raises(SpecError) as refused:
        load(files(fleet), require_lock=False)
    return [p.render() for p in refused.value.problems]


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to parse YAML fails the test: the size cap must act before parsing."""

    def parse(data: bytes) -> Any:
        raise AssertionError(f"parsed {len(data)} bytes")

    monkeypatch.setattr(yamlsafe, "_load", parse)


# --- bounds on the composed document ------------------------------------------------------------


def flow_list(items: int) -> bytes:
    return b"x: [" + b",".join([b"a"] * items) + b"]\n"


def test_the_node_bound_admits_its_limit_and_refuses_one_more() -> None:
    inside = yamlsafe.MAX_NODES - 3  # the top mapping, the key and the list hold three
    assert len(yamlsafe.load(flow_list(inside))["x"]) == inside
    with pytest.raises(yamlsafe.OutOfBounds, match="more than 20000 values"):
        yamlsafe.load(flow_list(inside + 1))


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_the_depth_bound_admits_its_limit_and_refuses_one_more() -> None:
    assert yamlsafe.load(nested(yamlsafe.MAX_DEPTH)) is not None
    with pytest.raises(yamlsafe.OutOfBounds, match="nested too deep") as deep:
        yamlsafe.load(nested(yamlsafe.MAX_DEPTH + 1))
    mark = deep.value.problem_mark
    assert mark is not None and (mark.line, mark.column) == (0, yamlsafe.MAX_DEPTH)


@pytest.mark.parametrize("levels", [300, 1000, 100_000])
def test_deep_nesting_is_a_located_problem_not_a_recursion_error(levels: int) -> None:
    [problem] = problems(HEAD + b"hosts: " + nested(levels) + b"\n")
    assert problem.startswith("fleet.yaml:10:39: $: nested too deep")


def test_depth_counts_through_aliases() -> None:
    # Each anchor is one level deeper than the last, though none is nested as written.
    chain = b"".join(b"x%d: &d%d [*d%d]\n" % (i, i, i - 1) for i in range(1, 40))
    with pytest.raises(yamlsafe.OutOfBounds, match="nested too deep"):
        yamlsafe.load(b"x0: &d0 [1]\n" + chain)


def test_an_alias_repeated_within_bounds_is_counted_at_its_expanded_size() -> None:
    base = b"b: &b [" + b",".join([b"1"] * 99) + b"]\n"  # 100 values with its list
    within = base + b"c: [" + b",".join([b"*b"] * 150) + b"]\n"  # 15,000 values expanded
    assert len(yamlsafe.load(within)["c"]) == 150
    with pytest.raises(yamlsafe.OutOfBounds, match="with aliases expanded"):
        yamlsafe.load(base + b"c: [" + b",".join([b"*b"] * 250) + b"]\n")


@pytest.mark.parametrize("breaks", [b"\n", b"\r", b"\r\n", "\u2028".encode()])
def test_a_file_of_too_many_lines_is_refused_before_parsing(breaks: bytes) -> None:
    text = b"#" + breaks * yamlsafe.MAX_LINES + b"a: 1\n"
    assert len(text) <= MAX_SPEC_BYTES
    [problem] = problems(text)
    assert problem == "fleet.yaml: $: too many lines (50002; at most 50000 expected)"


def test_the_same_bytes_are_parsed_once_for_source_and_validate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = yamlsafe._load

    def counting(data: bytes) -> Any:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(yamlsafe, "_load", counting)
    fleet = HEAD + b"ssh: {knownHosts: pinned}\n" + ONE_HOST + b"# parsed once\n"
    first = yamlsafe.load(fleet)
    assert yamlsafe.load(bytes(fleet)) is first and len(calls) == 1
    bomb = b"x: " + nested(400)
    for _ in range(2):
        with pytest.raises(yamlsafe.OutOfBounds):
            yamlsafe.load(bomb)
    assert len(calls) == 2  # the refusal is remembered too
    yamlsafe.load(fleet + b"# another document\n")
    assert len(calls) == 3


# --- merge keys keep working ----------------------------------------------------------------------


def test_merge_keys_in_an_ordinary_spec_of_three_hundred_hosts_load() -> None:
    base = b"  - &base {name: gw-0, address: 10.0.0.1, user: openclaw, transport: local}\n"
    hosts = b"".join(
        b"  - <<: *base\n    name: gw-%d\n    address: 10.0.%d.%d\n" % (i, i // 200, i % 200 + 1)
        for i in range(1, 300)
    )
    spec = load(files(HEAD + b"hosts:\n" + base + hosts), require_lock=False)
    assert len(spec.fleet.hosts) == 300
    assert {(h.user, h.transport) for h in spec.fleet.hosts} == {("openclaw", "local")}
    assert spec.fleet.hosts[299].address == "10.0.1.100"


# --- the number of problems reported --------------------------------------------------------------


def test_at_most_a_hundred_problems_are_reported_then_a_count() -> None:
    hosts = b"".join(
        b"  - {name: gw-%d, address: 10.0.0.%d, user: Bad%d}\n" % (i, i, i) for i in range(1, 251)
    )
    reported = problems(HEAD + b"hosts:\n" + hosts)
    assert len(reported) == MAX_PROBLEMS + 1
    assert all("$.hosts[" in p and ".user" in p for p in reported[:MAX_PROBLEMS])
    assert reported[0].startswith("fleet.yaml:11:")  # in file order: the first ones come first
    assert reported[-1] == (
        "fleet.yaml: $: 150 more problems not shown (only the first 100 are reported)"
    )


def test_exactly_a_hundred_problems_are_all_reported_without_a_count() -> None:
    hosts = b"".join(
        b"  - {name: gw-%d, address: 10.0.0.%d, user: Bad}\n" % (i, i) for i in range(1, 101)
    )
    reported = problems(HEAD + b"hosts:\n" + hosts)
    assert len(reported) == MAX_PROBLEMS and not any("not shown" in p for p in reported)


# --- the size cap, before anything is parsed ------------------------------------------------------


def oversized() -> bytes:
    return HEAD + ONE_HOST + b"#" * (MAX_SPEC_BYTES + 10)


@pytest.mark.usefixtures("no_parse")
def test_an_oversized_fleet_file_in_a_directory_is_never_read_whole(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_bytes(oversized())
    (tmp_path / "known_hosts").write_bytes(KNOWN_HOSTS)
    [spec] = source.read_directory(tmp_path)
    size = len(oversized())
    assert spec.fleet == b"" and spec.too_large == ((f"{tmp_path}/fleet.yaml", size),)
    with pytest.raises(SpecError) as refused:
        load(spec)
    [problem] = refused.value.problems
    assert problem.message == f"file too large ({size} bytes; at most {MAX_SPEC_BYTES} expected)"


def commit(repo_path: Path, blobs: dict[str, bytes]) -> pygit2.Repository:
    repo = pygit2.init_repository(str(repo_path), bare=True, initial_head="main")
    builder = repo.TreeBuilder()
    for name, data in blobs.items():
        builder.insert(name, repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
    who = pygit2.Signature("Operator", "operator@example.com", 1_790_000_000, 0)
    repo.create_commit("HEAD", who, who, "spec", builder.write(), [])
    return repo


@pytest.mark.usefixtures("no_parse")
def test_an_oversized_blob_in_a_git_tree_is_measured_not_read(tmp_path: Path) -> None:
    repo = commit(tmp_path / "repo.git", {"fleet.yaml": oversized(), "known_hosts": KNOWN_HOSTS})
    _, [spec] = source.read_commit(repo, "HEAD")
    assert spec.fleet == b"" and spec.too_large == (("fleet.yaml", len(oversized())),)
    with pytest.raises(SpecError, match="file too large"):
        load(spec)


def test_an_oversized_lock_or_known_hosts_is_refused_by_name(tmp_path: Path) -> None:
    big = b"#" * (MAX_SPEC_BYTES + 1)
    blobs = {"fleet.yaml": HEAD + ONE_HOST, "known_hosts": big, "openclaw.lock": big}
    _, [spec] = source.read_commit(commit(tmp_path / "repo.git", blobs), "HEAD")
    assert spec.known_hosts == b"" and spec.lock == b""
    with pytest.raises(SpecError) as refused:
        load(spec)
    assert sorted(p.render() for p in refused.value.problems) == [
        f"known_hosts: $: file too large ({len(big)} bytes; at most {MAX_SPEC_BYTES} expected)",
        f"openclaw.lock: $: file too large ({len(big)} bytes; at most {MAX_SPEC_BYTES} expected)",
    ]


def test_a_fleet_file_of_exactly_the_cap_is_read_and_validated(tmp_path: Path) -> None:
    fleet = HEAD + ONE_HOST
    fleet += b"#" * (MAX_SPEC_BYTES - len(fleet) - 1) + b"\n"
    assert len(fleet) == MAX_SPEC_BYTES
    (tmp_path / "fleet.yaml").write_bytes(fleet)
    (tmp_path / "known_hosts").write_bytes(KNOWN_HOSTS)
    [spec] = source.read_directory(tmp_path)
    assert spec.too_large == () and load(spec, require_lock=False).fleet.name == "lab"


# --- the CLI and the engine -----------------------------------------------------------------------


def test_validate_refuses_depth_300_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_bytes(HEAD + b"hosts: " + nested(300) + b"\n")
    (tmp_path / "known_hosts").write_bytes(KNOWN_HOSTS)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(tmp_path), "--no-lock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{tmp_path}/fleet.yaml:10:39: $: nested too deep" in proc.stderr


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)


def never(*args: object) -> Any:
    raise AssertionError("an invalid head must reach no host and no load balancer")


@pytest.mark.parametrize(
    "fleet",
    [HEAD + b"hosts: " + nested(300) + b"\n", oversized(), HEAD + b"x: &x [*x]\n" + ONE_HOST],
    ids=["depth-300", "oversized", "alias-cycle"],
)
def test_the_engine_records_an_invalid_head_and_broadcasts_it(tmp_path: Path, fleet: bytes) -> None:
    remote = commit(tmp_path / "spec.git", {"fleet.yaml": fleet, "known_hosts": KNOWN_HOSTS})
    head = str(remote.head.target)
    store = GitStore(str(tmp_path / "spec.git"), tmp_path / "cache")
    recorder = Recorder()
    engine = Engine(store, "lab", never, never, recorder, "test-instance")
    try:
        result = engine.reconcile()
        assert result.phase == "Invalid", result.message
        record = read_status(store, "lab").rollout
        assert record is not None and record.invalid is not None
        assert record.invalid.commit == head
        [problem] = record.invalid.problems
        assert problem.startswith("fleet.yaml") and "Traceback" not in problem
        [event] = recorder.events
        assert (event.kind, event.spec_commit) == ("failure", head)
        assert problem in event.message
    finally:
        store.close()


# --- bounds on single values ----------------------------------------------------------------------

VALID: dict[str, Any] = {
    "name": "lab",
    "openclaw": {"version": "2026.4.3", "registry": "https://npm.example.net/"},
    "loadBalancer": {"driver": "haproxy", "address": "unix:///run/lb.sock", "backend": "oc"},
    "hosts": [{"name": "gw-1", "address": "10.0.0.1", "user": "openclaw"}],
}


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    node: Any = doc
    for part in path[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = [{}] if part in ("windows", "profiles") else {}
        node = node[part]
    node[path[-1]] = value
    return doc


DURATIONS = [
    ("rollout", "soak"),
    ("rollout", "drainTimeout"),
    ("rollout", "probeTimeout"),
    ("rollout", "installTimeout"),
    ("loadBalancer", "timeout"),
    ("ssh", "connectTimeout"),
    ("ssh", "commandTimeout"),
    ("windows", 0, "duration"),
]


@pytest.mark.parametrize("path", DURATIONS, ids=lambda p: ".".join(map(str, p)))
def test_every_duration_is_at_most_seven_days(path: tuple[Any, ...]) -> None:
    extra = {"start": "09:00"} if path[0] == "windows" else {}
    for good in ("168h", 604800, "10080m"):
        doc = with_value(path, good)
        if extra:
            doc["windows"][0].update(extra)
        Fleet.model_validate(doc)
    for bad in ("169h", 604801, "99999999999h", "604800001ms"):
        doc = with_value(path, bad)
        if extra:
            doc["windows"][0].update(extra)
        with pytest.raises(pydantic.ValidationError):
            Fleet.model_validate(doc)


OPTION_FIELDS = [
    ("hosts", 0, "profiles", 0, "service"),
    ("hosts", 0, "profiles", 0, "lbServer"),
    ("loadBalancer", "backend"),
    ("loadBalancer", "address"),
    ("ssh", "knownHosts"),
]


@pytest.mark.parametrize("path", OPTION_FIELDS, ids=lambda p: str(p[-1]))
def test_no_single_value_may_start_with_a_dash(path: tuple[Any, ...]) -> None:
    for bad in ("--host=evil", "-x"):
        with pytest.raises(pydantic.ValidationError, match="pattern"):
            Fleet.model_validate(with_value(path, bad))
    Fleet.model_validate(with_value(path, "a-b--c"))  # a dash inside is fine


BAD_PATHS = ["/../../../etc", "/a/./b", "/a//b", "/a/b/", "~/..", "~root/x", "/a/..", "//etc"]
GOOD_PATHS = ["/", "~", "~/.npm-global/bin", "/opt/homebrew/bin", "/a/..b/...", "/.hidden"]


@pytest.mark.parametrize("field", ["home", "npmPrefix", "path"])
def test_paths_must_be_normalised_absolute_paths(field: str) -> None:
    for bad in BAD_PATHS:
        with pytest.raises(pydantic.ValidationError, match="pattern"):
            Fleet.model_validate(with_value(("hosts", 0, field), [bad] if field == "path" else bad))
    for good in GOOD_PATHS:
        value = [good] if field == "path" else good
        Fleet.model_validate(with_value(("hosts", 0, field), value))
