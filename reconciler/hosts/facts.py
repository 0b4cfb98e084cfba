"""Facts: read-only observations of one host, each a command plus a pure parser of its output.

Like pyinfra, facts are kept apart from operations: a fact never changes the host, so it can be
gathered at any time, in parallel, and re-gathered by an operation to verify its own effect.
Every fact is a `Fact` value (argv, environment, timeout cap, output bound, parser); `gather`
runs it through a `Transport` and parses the result. The parsers are pure functions of a
`CommandResult`, so they are tested on real captured output, and they raise `FactParseError`
(naming the host, the command, what was wrong and a short excerpt) on malformed, truncated,
binary or gigantic output instead of guessing.

Exit codes are not trusted where the product does not make them meaningful: `doctor --json`
exits 0 with error findings, `doctor --post-upgrade --json` exits 1 on them, `npm ls` exits 1
with ELSPROBLEMS for an invalid peer; each still prints the report we read.

The gateway's HTTP probes are fetched from the host itself (the gateway binds to loopback) with
a `node -e` one-liner rather than curl: node is on every OpenClaw host because the product runs
on it, curl is not (minimal Linux images), curl's `-w`/`--fail` behaviour varies between
versions, and one node process fetches all three endpoints (status code AND body) in one round
trip instead of three.
"""

from __future__ import annotations

import json
import posixpath
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from reconciler.desired.spec import CORE, NPM_NAME, Host, Profile
from reconciler.desired.versions import parse_node_version, parse_openclaw_banner
from reconciler.errors import CommandFailed, FactParseError
from reconciler.hosts import tree
from reconciler.hosts.transport import CommandResult, Transport, describe
from reconciler.record.documents import Installed

T = TypeVar("T")

EXCERPT = 160
"""Characters of offending output quoted in a FactParseError."""

# Caps on the spec's ssh.commandTimeout, per kind of command (seconds). A real `doctor --json`
# takes ~8 s, `npm ls` on a real install ~1-2 s, probes are loopback HTTP.
QUICK_S = 30.0
NPM_LS_S = 90.0

# Output bounds (bytes, per stream): far above any real output, far below memory trouble.
SMALL_OUTPUT = 64 * 1024
REPORT_OUTPUT = 4 * 1024 * 1024
TREE_OUTPUT = 16 * 1024 * 1024

NPM_NAME_RE = re.compile(NPM_NAME)
VERSION_RE = re.compile(r"^[0-9A-Za-z.+-]{1,64}\Z")  # \Z: `$` would let "1.2.3\n" through

# df on the nearest existing ancestor of $1 (a prefix may not exist before the first install).
DF_SCRIPT = 'p=$1; while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done; exec df -Pk -- "$p"'


# --- the Fact value and gathering ---------------------------------------------------------------


@dataclass(frozen=True)
class Fact(Generic[T]):
    """One read-only observation: what to run, how long it may take, and how to read it."""

    name: str
    argv: tuple[str, ...]
    parse: Callable[[str, CommandResult], T]
    cap_s: float
    max_output: int
    env: Mapping[str, str] = field(default_factory=dict)


def gather(transport: Transport, fact: Fact[T], *, timeout: float) -> T:
    """Run `fact` on the transport's host (timeout: the spec's, capped by the fact) and parse."""
    result = transport.run(
        fact.argv, timeout=min(timeout, fact.cap_s), env=fact.env, max_output=fact.max_output
    )
    return fact.parse(transport.host, result)


def profile_env(profile: Profile) -> dict[str, str]:
    """The environment that selects a profile: OPENCLAW_PROFILE (named ones) and its port."""
    env = {"OPENCLAW_GATEWAY_PORT": str(profile.port)}
    if profile.name is not None:
        env["OPENCLAW_PROFILE"] = profile.name
    return env


# --- observation results ----------------------------------------------------------------------


@dataclass(frozen=True)
class DiskFree:
    """Free space on the filesystem holding a path (`df -Pk`)."""

    path: str
    available_kb: int

    @property
    def free_mb(self) -> int:
        return self.available_kb // 1024

    @classmethod
    def of(cls, seen: tree.HostTree, path: str) -> DiskFree | None:
        """The free space a tree read saw (None: its Node could not tell); `path` when it did
        not name the filesystem's."""
        if seen.available_kb is None:
            return None
        return cls(path=seen.disk_path or path, available_kb=seen.available_kb)


# --- shared parsing helpers ---------------------------------------------------------------------


def parse_error(
    host: str, result: CommandResult, what: str, text: str | bytes = b""
) -> FactParseError:
    shown = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
    excerpt = shown.strip()[:EXCERPT]
    tail = f"; output starts: {excerpt!r}" if excerpt else ""
    return FactParseError(host, f"`{describe(result.argv)}`: {what}{tail}")


def output_text(host: str, result: CommandResult, *, max_bytes: int = TREE_OUTPUT) -> str:
    """stdout as text; FactParseError when it was truncated, is too big, or is not UTF-8 text."""
    data = result.stdout
    if result.truncated or len(data) > max_bytes:
        raise parse_error(
            host, result, f"output too large (over {max_bytes} bytes)", data[:EXCERPT]
        )
    if b"\0" in data:
        raise parse_error(host, result, "binary output (NUL bytes)", data[:EXCERPT])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise parse_error(
            host, result, f"output is not UTF-8 ({exc.reason})", data[:EXCERPT]
        ) from None


def json_object(host: str, result: CommandResult, *, max_bytes: int) -> dict[str, Any]:
    """The one JSON object a command printed (noise before it, e.g. warnings, is skipped)."""
    text = output_text(host, result, max_bytes=max_bytes)
    document = decode_json(text)
    if document is None:
        raise parse_error(host, result, "expected one JSON object, got something else", text)
    if not isinstance(document, dict):
        raise parse_error(
            host, result, f"expected a JSON object, got {type(document).__name__}", text
        )
    return document


def decode_json(text: str) -> Any:
    """The whole text as JSON, else the JSON value starting at the first line that opens one."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^[ \t]*[\[{]", text, re.MULTILINE):
        start = match.end() - 1
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        return value if not text[end:].strip() else None
    return None


def typed_field(
    host: str, result: CommandResult, data: Mapping[str, Any], key: str, kind: type
) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        shown = json.dumps(value)[:60]
        raise parse_error(host, result, f"`{key}` should be a JSON {kind.__name__}, got {shown}")
    return value


# --- node, openclaw, npm prefix -----------------------------------------------------------------


def node_version() -> Fact[str]:
    """`node --version` -> `22.22.3`."""
    return Fact("node version", ("node", "--version"), parse_node, QUICK_S, SMALL_OUTPUT)


def version_parser(
    parse: Callable[[str], str | None], what: str
) -> Callable[[str, CommandResult], str]:
    """A parser of a `--version` command's output: `parse` finds the version in its text."""

    def parse_result(host: str, result: CommandResult) -> str:
        text = output_text(host, result, max_bytes=SMALL_OUTPUT)
        version = parse(text) if result.ok else None
        if version is None:
            raise parse_error(host, result, f"no {what} (exit {result.exit_code})", text)
        return version

    return parse_result


parse_node = version_parser(parse_node_version, "node version")


def openclaw_version(env: Mapping[str, str] | None = None) -> Fact[str]:
    """`openclaw --version` -> `2026.9.6` (lenient: `OpenClaw 2026.9.6 (eb377ac)` or older)."""
    argv = ("openclaw", "--version")
    return Fact("openclaw version", argv, parse_openclaw, QUICK_S, SMALL_OUTPUT, dict(env or {}))


parse_openclaw = version_parser(parse_openclaw_banner, "OpenClaw version")


def npm_global_prefix() -> Fact[str]:
    """`npm prefix -g`: where `npm i -g` installs when the spec names no prefix."""
    return Fact("npm prefix", ("npm", "prefix", "-g"), parse_prefix, QUICK_S, SMALL_OUTPUT)


def parse_prefix(host: str, result: CommandResult) -> str:
    text = output_text(host, result, max_bytes=SMALL_OUTPUT).strip()
    if not result.ok or not text.startswith("/") or "\n" in text:
        raise parse_error(host, result, f"no absolute prefix (exit {result.exit_code})", text)
    return text


def user_id() -> Fact[int]:
    """`id -u`: the uid in launchd's `gui/<uid>/<label>` domain and systemd's runtime dir."""
    return Fact("uid", ("id", "-u"), parse_uid, QUICK_S, SMALL_OUTPUT)


def parse_uid(host: str, result: CommandResult) -> int:
    text = output_text(host, result, max_bytes=SMALL_OUTPUT).strip()
    if not result.ok or not text.isdigit():
        raise parse_error(host, result, f"not a uid (exit {result.exit_code})", text)
    return int(text)


def home_dir() -> Fact[str]:
    """The host's HOME as commands see it (to expand `~/` in spec paths)."""
    return Fact("home", ("printenv", "HOME"), parse_prefix, QUICK_S, SMALL_OUTPUT)


_PREFIXES: weakref.WeakKeyDictionary[Transport, dict[str | None, str]] = weakref.WeakKeyDictionary()
"""Resolved prefixes per transport (one host's connection): HOME and npm's global prefix do not
change under a running reconciler, and asking costs a command (`npm prefix -g`: ~0.3 s)."""
_HOME = "\0home"  # HOME's key among them (no prefix is spelled so)


def resolve_prefix(transport: Transport, host: Host, *, timeout: float) -> str:
    """The host's npm prefix as an absolute path: the spec's (with `~/` expanded) or npm's."""
    known = _PREFIXES.setdefault(transport, {})
    if host.npm_prefix not in known:
        known[host.npm_prefix] = _ask_prefix(transport, host, timeout=timeout)
    return known[host.npm_prefix]


def resolve_home(transport: Transport, *, timeout: float) -> str:
    """The host's HOME (asked once per connection, like the prefix)."""
    known = _PREFIXES.setdefault(transport, {})
    if _HOME not in known:
        known[_HOME] = gather(transport, home_dir(), timeout=timeout)
    return known[_HOME]


def _ask_prefix(transport: Transport, host: Host, *, timeout: float) -> str:
    if host.npm_prefix is None:
        return gather(transport, npm_global_prefix(), timeout=timeout)
    if host.npm_prefix == "~" or host.npm_prefix.startswith("~/"):
        home = resolve_home(transport, timeout=timeout)
        return posixpath.normpath(posixpath.join(home, host.npm_prefix[2:]))
    return posixpath.normpath(host.npm_prefix)


def core_package_json(prefix: str) -> str:
    """Where a global npm install keeps openclaw's package.json under `prefix`."""
    return posixpath.join(prefix, "lib", "node_modules", CORE, "package.json")


def installed_core_version(transport: Transport, prefix: str) -> str | None:
    """openclaw's version from its installed package.json (None when not installed)."""
    path = core_package_json(prefix)
    try:
        data = transport.read_file(path, max_bytes=SMALL_OUTPUT)
    except FileNotFoundError:
        return None
    result = CommandResult(("cat", path), 0, data, b"", 0.0, truncated=False)
    version = json_object(transport.host, result, max_bytes=SMALL_OUTPUT).get("version")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise parse_error(transport.host, result, "package.json has no valid `version`", data)
    return version


# --- the installed npm tree ---------------------------------------------------------------------


def npm_tree(prefix: str) -> Fact[Installed]:
    """Top-level packages, invalid peers and second copies at depth 1 (`--long` for paths)."""
    argv = ("npm", "ls", "-g", "--json", "--long", "--depth=1", "--prefix", prefix)
    return Fact("npm tree", argv, parse_npm_ls, NPM_LS_S, TREE_OUTPUT)


def openclaw_copies(prefix: str) -> Fact[Installed]:
    """Every copy of openclaw at ANY depth: npm ls filtered to it, so the output stays small."""
    argv = ("npm", "ls", "-g", "--json", "--long", "--all", "--prefix", prefix, CORE)
    return Fact("openclaw copies", argv, parse_npm_ls, NPM_LS_S, TREE_OUTPUT)


def nested_openclaw(prefix: str) -> Fact[Installed]:
    """Every NESTED copy of openclaw, found on disk: `npm ls --all openclaw` gives the same
    answer but loads the whole tree a second time (~0.4 s of CPU per observation); `find` over
    the prefix's node_modules takes milliseconds. Output: `path:  "version": "X",` lines."""
    modules = posixpath.join(prefix, "lib", "node_modules")
    argv = (
        "find", modules, "-mindepth", "3", "-path", "*/node_modules/openclaw/package.json",
        "-exec", "grep", "-H", "-m1", '"version"', "{}", "+",
    )  # fmt: skip
    return Fact("nested openclaw", argv, _parser_of_copies(modules), QUICK_S, TREE_OUTPUT)


_COPY_LINE = re.compile(r'^(?P<path>/.+)/package\.json:\s*"version"\s*:\s*"(?P<version>[^"]+)"')


def _parser_of_copies(modules: str) -> Callable[[str, CommandResult], Installed]:
    lib = posixpath.dirname(modules)

    def parse(host: str, result: CommandResult) -> Installed:
        found = []
        for line in output_text(host, result, max_bytes=TREE_OUTPUT).splitlines():
            match = _COPY_LINE.match(line.strip())
            if match is None:
                if line.strip():
                    raise parse_error(host, result, f"unexpected line from find: {line[:120]!r}")
                continue
            if not VERSION_RE.match(match["version"]):
                raise parse_error(
                    host, result, f"nested openclaw without a valid version: {line[:120]!r}"
                )
            found.append(f"{posixpath.relpath(match['path'], lib)}@{match['version']}")
        return Installed(core=None, duplicates=sorted(found))

    return parse


def host_tree(prefix: str) -> Fact[tree.HostTree]:
    """The installed tree (core, plugins, npm's problems, every nested openclaw), the Node
    version and the free space under `prefix`, from ONE `node -e` read of the package.json
    files (see reconciler/hosts/tree.py for why not `npm ls`)."""
    return Fact("installed tree", tree.argv(prefix), parse_host_tree, NPM_LS_S, TREE_OUTPUT)


def parse_host_tree(host: str, result: CommandResult) -> tree.HostTree:
    text = output_text(host, result, max_bytes=TREE_OUTPUT)
    try:
        return tree.parse_result(result, text)
    except tree.TreeError as exc:
        raise parse_error(host, result, str(exc), text or result.stderr) from None


def installed(transport: Transport, prefix: str, *, timeout: float) -> Installed:
    """The installed tree as `npm ls` would report it (core, plugins, problems, every nested
    copy of openclaw), read from disk in one command."""
    return gather(transport, host_tree(prefix), timeout=timeout).installed


def installed_by_npm(transport: Transport, prefix: str, *, timeout: float) -> Installed:
    """The same tree from npm itself: `npm ls` at depth 1 merged with the on-disk search for
    nested copies. The reference the fast reader is checked against."""
    with ThreadPoolExecutor(2, thread_name_prefix=f"npm-ls-{transport.host}") as pool:
        top = pool.submit(gather, transport, npm_tree(prefix), timeout=timeout)
        deep = pool.submit(gather, transport, nested_openclaw(prefix), timeout=timeout)
        return merge_trees(top.result(), deep.result())


def merge_trees(top: Installed, deep: Installed) -> Installed:
    """`top`'s core and plugins, with duplicates and problems from both listings."""
    return Installed(
        core=top.core,
        plugins=top.plugins,
        duplicates=sorted({*top.duplicates, *deep.duplicates}),
        problems=list(dict.fromkeys([*top.problems, *deep.problems])),
    )


def parse_npm_ls(host: str, result: CommandResult) -> Installed:
    """`npm ls -g --json --long` -> Installed. Exit 1 with ELSPROBLEMS is a result, not a failure;
    an absent `<prefix>/lib` (ENOENT) is an empty tree."""
    doc = json_object(host, result, max_bytes=TREE_OUTPUT)
    deps = doc.get("dependencies", {})
    if not isinstance(deps, dict):
        raise parse_error(host, result, "`dependencies` is not an object", json.dumps(deps)[:200])
    error = doc.get("error")
    if isinstance(error, dict) and not _tolerated(error, deps):
        summary = str(error.get("summary", "")).strip()[:300]
        raise CommandFailed(host, f"`{describe(result.argv)}`: npm {error.get('code')}: {summary}")
    if not result.ok and not isinstance(error, dict):
        raise parse_error(host, result, f"npm ls exited {result.exit_code} without an error report")
    root = doc.get("path") if isinstance(doc.get("path"), str) else None
    tree = _Tree(host, result, root)
    return Installed(
        core=tree.version_of(deps.get(CORE), CORE),
        plugins={
            name: tree.version_of(node, name) or "missing"
            for name, node in sorted(deps.items())
            if name != CORE
        },
        duplicates=tree.duplicates(deps),
        problems=tree.problems(doc, deps),
    )


def _tolerated(error: Mapping[str, Any], deps: Mapping[str, Any]) -> bool:
    code = error.get("code")
    return code == "ELSPROBLEMS" or (code == "ENOENT" and not deps)


@dataclass
class _Tree:
    """Walks one `npm ls --json --long` document."""

    host: str
    result: CommandResult
    root: str | None

    def version_of(self, node: object, name: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, dict):
            raise parse_error(self.host, self.result, f"entry for {name} is not an object")
        version = node.get("version")
        if version is None and node.get("missing"):
            return None
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise parse_error(self.host, self.result, f"{name} has no valid version: {version!r}")
        return version

    def walk(self, deps: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (name, node) in the tree, parents first; bounded by the (bounded) output."""
        stack = [iter(deps.items())]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            name, node = entry
            if not isinstance(node, dict):
                raise parse_error(self.host, self.result, f"entry for {name} is not an object")
            yield name, node
            children = node.get("dependencies")
            if isinstance(children, dict) and children:
                stack.append(iter(children.items()))

    def duplicates(self, deps: Mapping[str, Any]) -> list[str]:
        """Every copy of openclaw other than the top-level one, as `relative/path@version`."""
        top = deps.get(CORE)
        top_path = top.get("path") if isinstance(top, dict) else None
        found = set()
        for name, node in self.walk(deps):
            if name != CORE or node is top or node.get("missing"):
                continue
            path = node.get("path")
            if not isinstance(path, str):
                raise parse_error(
                    self.host, self.result, "an openclaw entry has no `path` (no --long?)"
                )
            if path != top_path:
                found.add(f"{self._relative(path)}@{self.version_of(node, CORE)}")
        return sorted(found)

    def problems(self, doc: Mapping[str, Any], deps: Mapping[str, Any]) -> list[str]:
        """npm's own `problems` (root and nested), paths made relative to the prefix's lib."""
        raw: list[object] = list(doc.get("problems") or [])
        for _, node in self.walk(deps):
            raw.extend(node.get("problems") or [])
        texts = [self._relative_text(str(p)) for p in raw]
        return list(dict.fromkeys(texts))

    def _relative(self, path: str) -> str:
        if self.root and (path == self.root or path.startswith(self.root + "/")):
            return posixpath.relpath(path, self.root)
        return path

    def _relative_text(self, text: str) -> str:
        return text.replace(self.root + "/", "") if self.root else text


# --- disk ---------------------------------------------------------------------------------------


def disk_free(path: str) -> Fact[DiskFree]:
    """`df -Pk` on `path` (or its nearest existing ancestor)."""
    argv = ("sh", "-c", DF_SCRIPT, "sh", path)
    return Fact("disk free", argv, parse_df, QUICK_S, SMALL_OUTPUT)


_DF_LINE = re.compile(r"^(?P<fs>.+?)\s+(\d+)\s+(\d+)\s+(?P<avail>\d+)\s+(\d+)%\s+(?P<mount>/.*)$")


def parse_df(host: str, result: CommandResult) -> DiskFree:
    """POSIX `df -P` output: a header and one line per filesystem; we asked for one."""
    text = output_text(host, result, max_bytes=SMALL_OUTPUT)
    lines = [line for line in text.splitlines() if line.strip()]
    match = _DF_LINE.match(lines[-1]) if result.ok and len(lines) == 2 else None
    if match is None:
        raise parse_error(
            host, result, f"not `df -Pk` output (exit {result.exit_code})", text or result.stderr
        )
    return DiskFree(path=match["mount"], available_kb=int(match["avail"]))


# --- the registry, from the host's side ---------------------------------------------------------


def registry_ping(registry: str) -> Fact[bool]:
    """`npm ping --registry R`: can this host reach the registry it installs from?"""
    # One attempt with a bounded wait: npm's default retries take ~30 s to give up.
    argv = ("npm", "ping", "--registry", registry, "--fetch-retries=0", "--fetch-timeout=10000")
    return Fact("registry ping", argv, parse_ping, QUICK_S, SMALL_OUTPUT)


def parse_ping(host: str, result: CommandResult) -> bool:
    """Exit 0 means the registry answered; anything else is "not reachable", not an error."""
    return result.ok


@dataclass(frozen=True)
class ReleaseRanges:
    """The ranges of one published release that decide where it may be installed."""

    engines_node: str | None = None
    peer_openclaw: str | None = None
    plugin_api: str | None = None
    min_host_version: str | None = None
    integrity: str | None = None
    """`dist.integrity` as the registry serves it (what npm checks the tarball against)."""


def release_ranges(registry: str, name: str, version: str) -> Fact[ReleaseRanges]:
    """`npm view name@version --json` from the host (the whole manifest: asking for single
    fields makes npm print a bare value whenever only one of them is set, which is ambiguous)."""
    argv = ("npm", "view", f"{name}@{version}", "--json", "--registry", registry)
    return Fact("release manifest", argv, parse_release, QUICK_S, REPORT_OUTPUT)


def parse_release(host: str, result: CommandResult) -> ReleaseRanges:
    doc = json_object(host, result, max_bytes=REPORT_OUTPUT)
    error = doc.get("error")
    if isinstance(error, dict) or not result.ok:
        why = error.get("summary") if isinstance(error, dict) else _stderr_line(result)
        raise CommandFailed(host, f"`{describe(result.argv)}` failed: {why}")
    return ReleaseRanges(
        engines_node=_nested_str(doc, "engines", "node"),
        peer_openclaw=_nested_str(doc, "peerDependencies", CORE),
        plugin_api=_nested_str(doc, CORE, "compat", "pluginApi"),
        min_host_version=_nested_str(doc, CORE, "install", "minHostVersion"),
        integrity=_nested_str(doc, "dist", "integrity"),
    )


def _nested_str(doc: Mapping[str, Any], *path: str) -> str | None:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def _stderr_line(result: CommandResult) -> str:
    lines = [line for line in result.error_text().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return ((errors or lines or [f"exit {result.exit_code}"])[0]).strip()[:300]


def stderr_summary(result: CommandResult, lines: int = 6) -> str:
    """The last few meaningful stderr lines, for error messages."""
    kept = [line.strip() for line in result.error_text().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:800] or f"exit {result.exit_code}"
