"""Load and validate a fleet spec, reporting every problem with its location.

Validation runs in layers, each only when the one before it passed, so that an operator sees
the real problems and not their echoes: YAML syntax (ruamel.yaml, which keeps line and column
of every node) -> JSON Schema (the published schemas/fleet.schema.json, all errors at once) ->
pydantic (the models) -> semantic rules across fields (unique names, weights, known_hosts, the
lock). Every problem names the file, line, column, JSON path and what was expected.
"""

from __future__ import annotations

import functools
import itertools
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import pydantic
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.desired import spec as s
from reconciler.desired import yamlsafe
from reconciler.desired.knownhosts import KnownHosts
from reconciler.desired.lock import Lock, parse_lock, spec_digest
from reconciler.desired.versions import EXACT_SEMVER, OPENCLAW_VERSION
from reconciler.errors import Problem, SpecError

MAX_SPEC_BYTES = yamlsafe.MAX_BYTES
MAX_PROBLEMS = 100

# What a pattern means, in the words an operator would use.
_EXPECTED = {
    s.SAFE: "a plain value without spaces, quotes or shell metacharacters ($ ; | & ` < > * ?), "
    "not starting with '-'",
    s.ARG: "a plain value without spaces, quotes or shell metacharacters ($ ; | & ` < > * ?)",
    s.TEMPLATE: "a plain argument without spaces, quotes or shell metacharacters",
    s.NAME: "a lowercase name (a-z, 0-9, '-'; at most 63 characters)",
    s.HOSTNAME: "a host name or IP address",
    s.NPM_NAME: "a valid npm package name such as @openclaw/discord",
    s.ENV_NAME: "an environment variable name (A-Z, 0-9, _)",
    s.ABS_PATH: "an absolute path (or ~/...) without spaces or shell metacharacters, "
    "normalised (no '.' or '..' segment, no '//', no trailing '/')",
    s.URL: "an http(s) URL without spaces or shell metacharacters",
    s.DURATION: "a duration such as 30s, 5m or 1h (at most 7 days)",
    s.CLOCK: "a time of day HH:MM",
    s.USER: "a POSIX user name (lowercase, no spaces)",
    s.ZONE: "an IANA time zone such as Europe/Berlin",
    OPENCLAW_VERSION: "an exact OpenClaw version such as 2026.4.3, 2026.5.3-1 or 2026.7.1-beta.6",
    EXACT_SEMVER: "an exact version such as 2026.4.3 (no ranges, no tags)",
}


@dataclass(frozen=True)
class SpecFiles:
    """The raw bytes of one fleet's files, read from a directory or a git tree."""

    fleet_path: str
    fleet: bytes
    lock_path: str
    lock: bytes | None
    known_hosts_path: str
    known_hosts: bytes | None
    too_large: tuple[tuple[str, int], ...] = ()
    """(path, size) of each file left unread because it is over MAX_SPEC_BYTES (its field is
    then empty): a source checks the size before it reads, so nothing parses such a file."""


@dataclass(frozen=True)
class LoadedSpec:
    """A fleet that passed every check, with its lock and pinned host keys."""

    fleet: s.Fleet
    lock: Lock | None
    known_hosts: KnownHosts
    files: SpecFiles


def load(files: SpecFiles, *, require_lock: bool = True) -> LoadedSpec:
    """Validate one fleet's files; raise SpecError carrying the problems found (the first
    MAX_PROBLEMS of them, then how many more)."""
    raw, problems = _parse_yaml(files)
    if raw is None:
        raise refused(problems)
    problems = list(_schema_problems(files.fleet_path, raw))
    if problems:
        raise refused(problems)
    try:
        fleet = s.Fleet.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise refused(list(_pydantic_problems(files.fleet_path, raw, exc))) from None
    locate = functools.partial(_problem, files.fleet_path, raw)
    problems = list(semantic_problems(fleet, locate))
    known_hosts = _known_hosts(files, fleet, locate, problems)
    lock = _lock(files, fleet, require_lock, problems)
    if problems:
        raise refused(problems)
    return LoadedSpec(fleet=fleet, lock=lock, known_hosts=known_hosts, files=files)


def refused(problems: list[Problem]) -> SpecError:
    """The error for `problems`, bounded: a bad spec may hold thousands of the same mistake,
    and each reader (terminal, status branch, broadcast) needs the first ones and a count."""
    if len(problems) <= MAX_PROBLEMS:
        return SpecError(problems)
    rest = len(problems) - MAX_PROBLEMS
    last = problems[MAX_PROBLEMS - 1]
    more = Problem(
        last.file,
        "$",
        f"{rest} more problems not shown (only the first {MAX_PROBLEMS} are reported)",
    )
    return SpecError([*problems[:MAX_PROBLEMS], more])


# --- YAML -----------------------------------------------------------------------------------


def _parse_yaml(files: SpecFiles) -> tuple[Any, list[Problem]]:
    if files.too_large:
        return None, [_too_large(path, size) for path, size in files.too_large]
    try:
        raw = yamlsafe.load(files.fleet)
    except UnicodeDecodeError as exc:
        line = files.fleet.count(b"\n", 0, exc.start) + 1
        return None, [
            Problem(files.fleet_path, "$", f"not UTF-8 text ({exc.reason})", line=line, column=None)
        ]
    except yamlsafe.OutOfBounds as exc:
        return None, [_bounds_problem(files.fleet_path, exc)]
    except MarkedYAMLError as exc:
        return None, [_yaml_problem(files.fleet_path, exc)]
    except yamlsafe.TooLarge as exc:
        return None, [Problem(files.fleet_path, "$", str(exc))]
    except YAMLError as exc:
        return None, [Problem(files.fleet_path, "$", f"YAML error: {exc}")]
    if not isinstance(raw, Mapping):
        kind = "an empty file" if raw is None else _kind(raw)
        first, column = _first_content_line(files.fleet)
        message = f"expected a mapping at the top, got {kind}"
        return None, [Problem(files.fleet_path, "$", message, line=first, column=column)]
    return raw, []


def _too_large(path: str, size: int) -> Problem:
    return Problem(path, "$", f"file too large ({size} bytes; at most {MAX_SPEC_BYTES} expected)")


def _bounds_problem(file: str, exc: yamlsafe.OutOfBounds) -> Problem:
    mark = exc.problem_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Problem(file, "$", str(exc.problem), line=line, column=column)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def _first_content_line(data: bytes) -> tuple[int | None, int | None]:
    for number, line in enumerate(data.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith((b"#", b"---")):
            return number, 1
    return None, None


def _yaml_problem(file: str, exc: MarkedYAMLError) -> Problem:
    """An unclosed quote or flow collection is located where it opened (the user's mistake is
    there), and where the parser noticed it is said too; anything else where it was noticed."""
    began, noticed = exc.context_mark, exc.problem_mark
    opened = began is not None and any(
        word in str(exc.context or "")
        for word in ("quoted scalar", "flow sequence", "flow mapping")
    )
    mark = began if opened else (noticed or began)
    what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
    if opened and noticed and (began.line, began.column) != (noticed.line, noticed.column):
        what += f" (noticed at line {noticed.line + 1}, column {noticed.column + 1})"
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    return Problem(file, "$", f"YAML syntax error: {what}", line=line, column=column)


# --- JSON Schema -----------------------------------------------------------------------------


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    """JSON Schema patterns are ECMA-262: `$` is the end of the string. Python's `$` also
    matches before a final newline, which would let `user: "openclaw\n"` through."""
    if isinstance(instance, str) and not re.search(_ecma(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _ecma(pattern: str) -> str:
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def schema_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for one of our published schemas, with ECMA-262 pattern semantics."""
    base = jsonschema.validators.validator_for(schema)
    cls = jsonschema.validators.extend(base, {"pattern": _ecma_pattern})
    return cls(schema)


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    return schema_validator(s.Fleet.model_json_schema(by_alias=True))


def _schema_problems(file: str, raw: Any) -> Iterator[Problem]:
    problems = [p for e in _validator().iter_errors(raw) for p in _explain(file, raw, e)]
    yield from sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _explain(file: str, raw: Any, error: jsonschema.ValidationError) -> Iterator[Problem]:
    path = tuple(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        path = (*path, error.instance)  # a bad key: point at the key, not at its mapping
    if error.validator in ("anyOf", "oneOf") and error.context:
        yield from _explain(file, raw, _best_branch(error))
        return
    if error.validator == "propertyNames" and error.context:
        for sub_error in error.context:
            key = sub_error.instance
            yield _problem(file, raw, (*path, key), f"key {_message(sub_error)}")
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = sorted(error.schema.get("properties", {}))
        for key in error.instance:
            if key not in known:
                expected = f"one of: {', '.join(known)}" if known else "no keys"
                yield _problem(
                    file, raw, (*path, key), f"unknown key {key!r} (expected {expected})"
                )
        return
    yield _problem(file, raw, path, _message(error))


def _best_branch(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For `X | None` fields, the error of the non-null branch is the one that helps."""
    context = [e for e in error.context or () if e.schema.get("type") != "null"]
    same_type = [e for e in context if e.validator != "type"]
    best = jsonschema.exceptions.best_match(same_type or context or error.context or [])
    return best if best is not None else error


def _message(error: jsonschema.ValidationError) -> str:
    instance = error.instance
    if error.validator == "pattern":
        expected = _EXPECTED.get(str(error.validator_value), f"a match for {error.validator_value}")
        return f"{_show(instance)} is not valid: expected {expected}"
    if error.validator == "type":
        hint = ""
        if error.validator_value == "string" and isinstance(instance, int | float):
            hint = " (quote it: YAML read it as a number)"
        got = "an empty value" if instance is None else _show(instance)
        return f"expected {error.validator_value}, got {got}{hint}"
    if error.validator == "enum":
        options = ", ".join(map(str, error.validator_value))
        return f"{_show(instance)} is not one of: {options}"
    if error.validator in ("minimum", "maximum", "minItems", "maxItems", "maxLength"):
        bound = "at least" if error.validator.startswith("min") else "at most"
        unit = " items" if "Items" in str(error.validator) else ""
        unit = " characters" if error.validator == "maxLength" else unit
        return f"expected {bound} {error.validator_value}{unit}, got {_show(instance)}"
    if error.validator == "required":
        return str(error.message).replace("is a required property", "is required")
    return str(error.message)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- pydantic (a second net; the schema is generated from the same models) ------------------


def _pydantic_problems(file: str, raw: Any, exc: pydantic.ValidationError) -> Iterator[Problem]:
    for err in exc.errors():
        message = str(err["msg"])
        pattern = (err.get("ctx") or {}).get("pattern")
        if err["type"] == "string_pattern_mismatch" and pattern in _EXPECTED:
            message = f"{_show(err['input'])} is not valid: expected {_EXPECTED[pattern]}"
        if err["type"] == "value_error":  # our own validators' words, without pydantic's prefix
            message = str((err.get("ctx") or {}).get("error", message))
        loc = tuple(p for p in err["loc"] if p != "[key]")
        yield _problem(file, raw, loc, message)


# --- semantic rules --------------------------------------------------------------------------

Locate = Any  # (path, message) -> Problem


def semantic_problems(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    """Rules that span fields; each yields a located problem and never stops early."""
    yield from _unique_hosts(fleet, locate)
    yield from _profiles(fleet, locate)
    yield from _weights(fleet, locate)
    yield from _rollout(fleet, locate)
    yield from _load_balancer(fleet, locate)
    yield from _notifications(fleet, locate)
    yield from _windows(fleet, locate)
    if "openclaw" in fleet.openclaw.plugins:
        yield locate(
            ("openclaw", "plugins", "openclaw"), "the core is openclaw.version, not a plugin"
        )


def _duplicates(
    items: Iterable[tuple[str, tuple[Any, ...]]],
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    seen: set[str] = set()
    for key, path in items:
        if key in seen:
            yield key, path
        seen.add(key)


def _unique_hosts(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    names = ((h.name, ("hosts", i, "name")) for i, h in enumerate(fleet.hosts))
    for name, path in _duplicates(names):
        yield locate(path, f"duplicate host name {name!r} (host names must be unique)")
    endpoints = (
        (f"{h.address}:{h.port}", ("hosts", i, "address"))
        for i, h in enumerate(fleet.hosts)
        if h.transport == "ssh"
    )
    for endpoint, path in _duplicates(endpoints):
        yield locate(path, f"two hosts share the SSH endpoint {endpoint}")
    for i, host in enumerate(fleet.hosts):
        if host.service_manager == "command" and not host.restart_command:
            yield locate(("hosts", i), "serviceManager 'command' needs restartCommand")
        if host.service_manager == "command" and not host.stop_command:
            yield locate(
                ("hosts", i),
                "serviceManager 'command' needs stopCommand (a restore swaps the state "
                "with the gateway stopped)",
            )


def _profiles(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    servers = []
    for i, host in enumerate(fleet.hosts):
        base = ("hosts", i, "profiles")
        names = ((p.key(), (*base, j)) for j, p in enumerate(host.profiles))
        for name, path in _duplicates(names):
            yield locate(path, f"duplicate profile {name!r} on host {host.name}")
        ports = ((str(p.port), (*base, j, "port")) for j, p in enumerate(host.profiles))
        for port, path in _duplicates(ports):
            yield locate(path, f"two profiles on host {host.name} use gateway port {port}")
        servers += [(s.server_name(host, p), (*base, j)) for j, p in enumerate(host.profiles)]
    for server, path in _duplicates(servers):
        yield locate(path, f"LB server {server!r} is used by two profiles (set lbServer)")


def _weights(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    if all(p.weight == 0 for _, p in fleet.profiles()):
        yield locate(("hosts",), "every profile has weight 0: the fleet would serve no traffic")


def _rollout(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    r = fleet.rollout
    steps = r.steps
    if any(b <= a for a, b in itertools.pairwise(steps)):
        yield locate(("rollout", "steps"), f"weight steps must increase strictly, got {steps}")
    if steps[-1] != 100:
        yield locate(("rollout", "steps"), f"the last weight step must be 100, got {steps[-1]}")
    names = [h.name for h in fleet.hosts]
    if r.order is not None:
        for j, name in enumerate(r.order):
            if name not in names:
                yield locate(
                    ("rollout", "order", j), f"unknown host {name!r} (hosts: {', '.join(names)})"
                )
        for name, path in _duplicates((n, ("rollout", "order", j)) for j, n in enumerate(r.order)):
            yield locate(path, f"host {name!r} listed twice in rollout.order")
        missing = [n for n in names if n not in r.order]
        if missing:
            yield locate(("rollout", "order"), f"rollout.order leaves out {', '.join(missing)}")
    else:
        for i, host in enumerate(fleet.hosts):
            if host.role not in r.roles:
                yield locate(
                    ("hosts", i, "role"), f"role {host.role!r} is not in rollout.roles {r.roles}"
                )


def _load_balancer(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    lb = fleet.load_balancer
    need = {"haproxy": ("address", "backend"), "file": ("address",), "command": ("commands",)}
    for field in need[lb.driver]:
        if getattr(lb, field) is None:
            yield locate(("loadBalancer",), f"driver {lb.driver!r} needs loadBalancer.{field}")
    if lb.driver == "haproxy" and lb.address and not re.match(r"^(unix://|tcp://)", lb.address):
        yield locate(
            ("loadBalancer", "address"), "expected unix:///path/to/socket or tcp://host:port"
        )
    if lb.driver == "command" and lb.commands is not None:
        for op in ("get", "set"):
            if op not in lb.commands:
                yield locate(("loadBalancer", "commands"), f"command driver needs commands.{op}")


def _notifications(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    for i, n in enumerate(fleet.notifications):
        if (n.url is None) == (n.url_env is None):
            yield locate(("notifications", i), "set exactly one of url or urlEnv")
        if n.secret_env and n.secret_file:
            yield locate(("notifications", i), "set at most one of secretEnv or secretFile")


def _windows(fleet: s.Fleet, locate: Locate) -> Iterator[Problem]:
    for i, w in enumerate(fleet.windows):
        try:
            zoneinfo.ZoneInfo(w.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            yield locate(("windows", i, "timezone"), f"unknown time zone {w.timezone!r}")
        if s.seconds(w.duration) <= 0 or s.seconds(w.duration) > 7 * 86400:
            yield locate(
                ("windows", i, "duration"), "a window lasts more than 0 and at most 7 days"
            )


def _known_hosts(
    files: SpecFiles, fleet: s.Fleet, locate: Locate, problems: list[Problem]
) -> KnownHosts:
    if files.known_hosts is None:
        if all(h.transport == "local" for h in fleet.hosts):
            return KnownHosts.parse(b"")
        problems.append(
            locate(
                ("ssh", "knownHosts"), f"{files.known_hosts_path} not found: pin every host's key"
            )
        )
        return KnownHosts.parse(b"")
    known = KnownHosts.parse(files.known_hosts)
    where = files.known_hosts_path
    for line, marker in known.unsupported:
        problems.append(
            Problem(
                where,
                "$",
                f"{marker} is not supported: pin each host's own key (only @revoked is read)",
                line=line,
            )
        )
    for i, host in enumerate(fleet.hosts):
        if host.transport != "ssh":
            continue
        entry = known.entry_name(host.address, host.port)
        if not known.has(host.address, host.port):
            problems.append(locate(("hosts", i, "address"), f"no key for {entry} in {where}"))
        elif known.revoked_for(host.address, host.port):
            problems.append(
                locate(
                    ("hosts", i, "address"), f"the key pinned for {entry} is @revoked in {where}"
                )
            )
    return known


def _lock(files: SpecFiles, fleet: s.Fleet, require: bool, problems: list[Problem]) -> Lock | None:
    where = files.lock_path
    if files.lock is None:
        if require:
            problems.append(Problem(where, "$", "missing: run `reconciler lock` and commit it"))
        return None
    try:
        lock = parse_lock(files.lock)
    except (ValueError, pydantic.ValidationError) as exc:
        problems.append(Problem(where, "$", f"unreadable lock: {_first_line(exc)}"))
        return None
    if lock.self_digest() != lock.sha256:
        problems.append(Problem(where, "$.sha256", "does not match the content: edited by hand?"))
    if lock.spec_digest != spec_digest(fleet) or lock.fleet != fleet.name:
        stale = _stale_pins(fleet, lock)
        problems.append(Problem(where, "$.specDigest", f"stale: {stale}; run `reconciler lock`"))
    return lock


def _stale_pins(fleet: s.Fleet, lock: Lock) -> str:
    locked = lock.versions()
    diffs = [
        f"{name} {locked.get(name, 'unlocked')} in lock, {version} in spec"
        for name, version in fleet.packages().items()
        if locked.get(name) != version
    ]
    diffs += [f"{name} locked but not in spec" for name in locked if name not in fleet.packages()]
    return "; ".join(diffs) or "registry, install method or fleet name changed"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- locations -------------------------------------------------------------------------------


def _problem(file: str, raw: Any, path: Sequence[Any], message: str) -> Problem:
    line, column = position(raw, path)
    return Problem(file, json_path(path), message, line=line, column=column)


def json_path(path: Sequence[Any]) -> str:
    """('hosts', 0, 'name') -> '$.hosts[0].name'."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def position(raw: Any, path: Sequence[Any]) -> tuple[int | None, int | None]:
    """1-based line and column of the deepest node of `path` present in the YAML."""
    node, found = raw, (None, None)
    for part in path:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        try:
            if isinstance(node, Mapping) and part in node:
                scalar = _is_scalar(node[part]) and node[part] is not None
                line, col = lc.value(part) if scalar else lc.key(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                line, col = lc.item(part)
            else:
                break
        except (KeyError, TypeError, AttributeError):
            break
        found = (line + 1, col + 1)
        node = node[part]
    if found == (None, None) and getattr(raw, "lc", None) is not None:
        found = (raw.lc.line + 1, raw.lc.col + 1)
    return found


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list)
