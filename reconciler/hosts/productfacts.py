"""What the running product says about itself: `openclaw doctor`, `openclaw health`, its
plugin list, the gateway's HTTP probes, and a glance (the installed tree and every profile's
probes read in one process on the host).

Facts in the pyinfra sense, like `facts`: read-only observations with typed parsers that
trust no exit code the product does not make meaningful (`doctor --json` exits 0 with error
findings, `doctor --post-upgrade --json` exits 1 on them). The probes are fetched from the host
itself, since the gateway binds to loopback. The command, the parser and the bounds of each
live together here; `facts` has what they share and the host's own facts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reconciler.desired.spec import Host
from reconciler.hosts import tree
from reconciler.hosts.facts import (
    NPM_LS_S,
    NPM_NAME_RE,
    REPORT_OUTPUT,
    TREE_OUTPUT,
    VERSION_RE,
    Fact,
    decode_json,
    gather,
    installed,
    json_object,
    output_text,
    parse_error,
    profile_env,
    typed_field,
)
from reconciler.hosts.transport import CommandResult, Transport
from reconciler.record.documents import Finding, Installed, PluginState, Severity

DOCTOR_S = 120.0
PROBE_S = 15.0
HEALTH_S = 30.0
PROBE_OUTPUT = 512 * 1024
PROBE_BODY_CHARS = 64 * 1024
PROBE_PATHS = ("/healthz", "/readyz", "/startupz")

_SEVERITIES: dict[str, Severity] = {
    "info": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
}

# `get(port, path)`: GET 127.0.0.1:<port><path> -> {path, status, body} or {path, status: null,
# error}; `all(port)`: every path of `paths`; `print(x)`: one line of JSON.
_PROBE_GET = (
    "const http=require('http');const max=" + str(PROBE_BODY_CHARS) + ";"
    "const get=(port,p)=>new Promise((done)=>{"
    "const req=http.get({host:'127.0.0.1',port:Number(port),path:p,timeout:Number(ms)},(res)=>{"
    "let body='';res.setEncoding('utf8');"
    "res.on('data',(c)=>{if(body.length<max)body+=c;});"
    "res.on('end',()=>done({path:p,status:res.statusCode,body:body.slice(0,max)}));"
    "res.on('error',(e)=>done({path:p,status:null,error:String(e.code||e.message)}));});"
    "req.on('timeout',()=>req.destroy(new Error('timeout after '+ms+' ms')));"
    "req.on('error',(e)=>done({path:p,status:null,error:String(e.code||e.message)}));});"
    "const all=(port)=>Promise.all(paths.map((p)=>get(port,p)));"
    "const print=(x)=>process.stdout.write(JSON.stringify(x)+'\\n');"
)
# Fetches the paths once and prints one JSON array of their results. argv: port, timeout ms,
# paths...
PROBE_SCRIPT = (
    "const [port,ms,...paths]=process.argv.slice(1);" + _PROBE_GET + "all(port).then(print);"
)
# A glance: the probes of every port and the tree (tree.TREE_FUNCTION), in one process; with
# `wait` ms > 0, taken once every port's /readyz answers 200 or `wait` has passed, asking every
# `every` ms. argv: mods, prefix, maxDirs, timeout ms, ports (comma-separated), wait ms,
# every ms, paths... Prints {tree: {...}, probes: [[...] per port]}.
GLANCE_SCRIPT = (
    tree.TREE_FUNCTION
    + "const [mods,prefix,maxDirs,ms,ports,wait,every,...paths]=process.argv.slice(1);"
    + _PROBE_GET
    + "const ps=ports.split(','),until=Date.now()+Number(wait);"
    "const done=()=>Promise.all(ps.map((p)=>all(p)))"
    ".then((r)=>print({tree:readTree(mods,prefix,maxDirs),probes:r}));"
    "const loop=()=>Promise.all(ps.map((p)=>get(p,'/readyz'))).then((r)=>"
    "(r.every((x)=>x.status===200)||Date.now()>=until)?done():setTimeout(loop,Number(every)));"
    "Number(wait)>0?loop():done();"
)

# --- what the product reports ---------------------------------------------------------------


@dataclass(frozen=True)
class Doctor:
    """`openclaw doctor --json` or `doctor --post-upgrade --json`, as read."""

    findings: tuple[Finding, ...]
    ok: bool | None = None
    checks_run: int | None = None


@dataclass(frozen=True)
class Health:
    """`openclaw health --json`: reachable or not (a result, not an error), and its verdict."""

    reachable: bool
    ok: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class Probe:
    """One HTTP GET against the gateway: status (None when no answer) and the JSON body."""

    path: str
    status: int | None
    body: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Probes:
    """The gateway's /healthz, /readyz and /startupz at one moment."""

    healthz: Probe
    readyz: Probe
    startupz: Probe

    @property
    def running_version(self) -> str | None:
        """The version the RUNNING gateway reports (/startupz answers it on 200 and 503)."""
        version = (self.startupz.body or {}).get("version")
        return version if isinstance(version, str) and VERSION_RE.match(version) else None

    @property
    def uptime_ms(self) -> int | None:
        uptime = (self.startupz.body or self.readyz.body or {}).get("uptimeMs")
        return uptime if isinstance(uptime, int) and not isinstance(uptime, bool) else None

    def summary(self) -> str:
        return ", ".join(f"{p.path} {p.status or p.error}" for p in self)

    def __iter__(self) -> Iterator[Probe]:
        return iter((self.healthz, self.readyz, self.startupz))


# --- doctor and health --------------------------------------------------------------------------


def doctor(env: Mapping[str, str] | None = None) -> Fact[Doctor]:
    """`openclaw doctor --json` (exit code ignored: the findings decide)."""
    argv = ("openclaw", "doctor", "--json")
    return Fact("doctor", argv, parse_doctor, DOCTOR_S, REPORT_OUTPUT, dict(env or {}))


def post_upgrade(env: Mapping[str, str] | None = None) -> Fact[Doctor]:
    """`openclaw doctor --post-upgrade --json` (exits 1 on error findings; still a report)."""
    argv = ("openclaw", "doctor", "--post-upgrade", "--json")
    return Fact("post-upgrade doctor", argv, parse_doctor, DOCTOR_S, REPORT_OUTPUT, dict(env or {}))


def parse_doctor(host: str, result: CommandResult) -> Doctor:
    """Either doctor shape: `{ok, checksRun, findings}` or `{probesRun, findings}`."""
    doc = json_object(host, result, max_bytes=REPORT_OUTPUT)
    items = typed_field(host, result, doc, "findings", list)
    ok = doc.get("ok")
    checks = doc.get("checksRun")
    return Doctor(
        findings=tuple(parse_finding(host, result, item) for item in items),
        ok=ok if isinstance(ok, bool) else None,
        checks_run=checks if isinstance(checks, int) and not isinstance(checks, bool) else None,
    )


def parse_finding(host: str, result: CommandResult, item: object) -> Finding:
    """A finding as doctor (`checkId`/`severity`) or post-upgrade (`code`/`level`) writes it."""
    if not isinstance(item, dict):
        raise parse_error(host, result, f"a finding is not an object: {json.dumps(item)[:80]}")
    check_id = item.get("checkId", item.get("code"))
    severity = _SEVERITIES.get(str(item.get("severity", item.get("level"))))
    if not isinstance(check_id, str) or not check_id or severity is None:
        raise parse_error(
            host, result, f"a finding lacks checkId or a known severity: {json.dumps(item)[:120]}"
        )
    message = item.get("message")
    hint = item.get("fixHint")
    return Finding(
        check_id=check_id,
        severity=severity,
        message=message if isinstance(message, str) else "",
        fix_hint=hint if isinstance(hint, str) else None,
    )


def health(env: Mapping[str, str] | None = None) -> Fact[Health]:
    """`openclaw health --json` (needs OPENCLAW_GATEWAY_PORT, maybe OPENCLAW_GATEWAY_TOKEN)."""
    argv = ("openclaw", "health", "--json")
    return Fact("health", argv, parse_health, HEALTH_S, REPORT_OUTPUT, dict(env or {}))


def parse_health(host: str, result: CommandResult) -> Health:
    """A snapshot when one was printed; a non-zero exit without one means unreachable."""
    text = output_text(host, result, max_bytes=REPORT_OUTPUT)
    snapshot = decode_json(text)
    if not isinstance(snapshot, dict):
        if result.ok:
            raise parse_error(host, result, "exit 0 but no JSON snapshot", text)
        why = result.error_text().strip().splitlines()
        return Health(reachable=False, detail=(why[0] if why else f"exit {result.exit_code}")[:300])
    ok = typed_field(host, result, snapshot, "ok", bool)
    return Health(reachable=True, ok=ok)


# --- plugins as the product sees them -----------------------------------------------------------


@dataclass(frozen=True)
class Plugin:
    """One plugin of `openclaw plugins list --json`: what the product found and loads."""

    id: str
    version: str | None
    origin: str
    """`bundled` (ships with the core), `global` (a tracked install), ..."""
    status: str
    """`loaded`, `disabled`, `error`, ..."""
    enabled: bool
    install_spec: str | None = None
    """The npm spec of a tracked install (`@openclaw/discord@2026.9.5`)."""
    missing: tuple[str, ...] = ()
    """Dependencies the product found missing (`dependencyStatus.missing`)."""

    @property
    def npm_name(self) -> str:
        """The npm package: from the tracked install's spec, else the first-party scope."""
        spec = self.install_spec or ""
        name, at, _ = spec.rpartition("@")
        for candidate in (name if at else "", spec):
            if candidate and NPM_NAME_RE.fullmatch(candidate):
                return candidate
        return f"@openclaw/{self.id}"

    def state(self) -> PluginState:
        return PluginState(
            id=self.id,
            name=self.npm_name,
            version=self.version,
            origin=self.origin,
            status=self.status,
            enabled=self.enabled,
            missing=list(self.missing),
        )


def plugins(env: Mapping[str, str] | None = None) -> Fact[tuple[Plugin, ...]]:
    """`openclaw plugins list --json`: a cold inventory (it does not prove the running gateway
    imported a plugin; health's `plugins.loaded` does)."""
    argv = ("openclaw", "plugins", "list", "--json")
    return Fact("plugins", argv, parse_plugins, HEALTH_S, REPORT_OUTPUT, dict(env or {}))


def parse_plugins(host: str, result: CommandResult) -> tuple[Plugin, ...]:
    doc = json_object(host, result, max_bytes=REPORT_OUTPUT)
    items = typed_field(host, result, doc, "plugins", list)
    return tuple(_plugin(host, result, item) for item in items)


def _plugin(host: str, result: CommandResult, item: object) -> Plugin:
    if not isinstance(item, dict):
        raise parse_error(host, result, f"a plugin is not an object: {json.dumps(item)[:80]}")
    plugin_id = typed_field(host, result, item, "id", str)
    version = item.get("version")
    trust = item.get("trust")
    spec = trust.get("installSpec") if isinstance(trust, dict) else None
    deps = item.get("dependencyStatus")
    missing = deps.get("missing") if isinstance(deps, dict) else None
    return Plugin(
        id=plugin_id,
        version=version if isinstance(version, str) and VERSION_RE.match(version) else None,
        origin=typed_field(host, result, item, "origin", str),
        status=typed_field(host, result, item, "status", str),
        enabled=typed_field(host, result, item, "enabled", bool),
        install_spec=spec if isinstance(spec, str) else None,
        missing=tuple(str(m) for m in missing) if isinstance(missing, list) else (),
    )


def product_view(tree: Installed, listings: Mapping[str, Sequence[PluginState]]) -> Installed:
    """The host's install as the product runs it: the core (and npm's problems) from the npm
    tree, the plugins from each profile's `plugins list` (non-bundled ones, where every
    profile agrees on the version; one that profiles disagree on is left out, so it differs
    from any pin), and every `@openclaw/*` npm copy beside the core as a stray."""
    versions: dict[str, set[str | None]] = {}
    for states in listings.values():
        for plugin in states:
            versions.setdefault(plugin.name, set()).add(plugin.version)
    for states in listings.values():  # a plugin one profile lacks: profiles disagree
        for name in set(versions) - {p.name for p in states}:
            versions[name].add(None)
    agreed = {n: v.pop() for n, v in versions.items() if len(v) == 1 and None not in v}
    strays = [f"{n}@{v}" for n, v in sorted(tree.plugins.items()) if n.startswith("@openclaw/")]
    return tree.model_copy(update={"plugins": dict(sorted(agreed.items())), "strays": strays})


def tree_agrees(tree: Installed, view: Installed) -> bool:
    """Does an npm tree read now (a glance) agree with what `view` (a product view made
    earlier) took from the tree: the core, the second copies, the strays? (Plugins come
    from the product's list, which a glance does not read.)"""
    again = product_view(tree, {})
    return (again.core, again.duplicates, again.strays) == (view.core, view.duplicates, view.strays)


def plugin_states(listed: Sequence[Plugin]) -> list[PluginState]:
    """The non-bundled plugins of one profile (bundled ones ship with the core)."""
    return [p.state() for p in listed if p.origin != "bundled"]


def installed_view(transport: Transport, host: Host, prefix: str, *, timeout: float) -> Installed:
    """`product_view` read now: the tree, then every profile's plugin list (concurrently;
    none without a core, which lists them)."""
    tree_ = installed(transport, prefix, timeout=timeout)
    if tree_.core is None:
        return product_view(tree_, {})
    with ThreadPoolExecutor(len(host.profiles), thread_name_prefix="installed") as pool:
        lists = {
            p.key(): pool.submit(gather, transport, plugins(profile_env(p)), timeout=timeout)
            for p in host.profiles
        }
        return product_view(tree_, {k: plugin_states(f.result()) for k, f in lists.items()})


# --- HTTP probes --------------------------------------------------------------------------------


def probes(port: int, *, request_timeout_s: float = 5.0) -> Fact[Probes]:
    """GET /healthz, /readyz and /startupz on 127.0.0.1:`port`, from the host itself."""
    ms = str(max(1, int(request_timeout_s * 1000)))
    argv = ("node", "-e", PROBE_SCRIPT, "--", str(port), ms, *PROBE_PATHS)
    return Fact("probes", argv, parse_probes, PROBE_S, PROBE_OUTPUT)


def _ms(seconds_: float) -> str:
    return str(max(1, int(seconds_ * 1000)))


def parse_probes(host: str, result: CommandResult) -> Probes:
    text = output_text(host, result, max_bytes=PROBE_OUTPUT)
    return _probes_of(host, result, decode_json(text) if result.ok else None, text)


def _probes_of(host: str, result: CommandResult, items: object, text: str) -> Probes:
    if not isinstance(items, list) or len(items) != len(PROBE_PATHS):
        raise parse_error(
            host, result, f"no probe results (exit {result.exit_code})", text or result.stderr
        )
    by_path = {p.path: p for p in (_probe(host, result, item) for item in items)}
    if set(by_path) != set(PROBE_PATHS):
        raise parse_error(host, result, f"probe results for {sorted(by_path)}", text)
    return Probes(by_path["/healthz"], by_path["/readyz"], by_path["/startupz"])


def _probe(host: str, result: CommandResult, item: object) -> Probe:
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise parse_error(host, result, f"malformed probe result {json.dumps(item)[:80]}")
    status = item.get("status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        raise parse_error(host, result, f"probe status is not a number: {status!r}")
    body = decode_json(item["body"]) if isinstance(item.get("body"), str) else None
    error = item.get("error")
    return Probe(
        path=item["path"],
        status=status,
        body=body if isinstance(body, dict) else None,
        error=str(error) if error is not None else None,
    )


@dataclass(frozen=True)
class TreeAndProbes:
    """The installed tree and the probes of every profile, from one process (`glance`)."""

    tree: tree.HostTree
    probes: tuple[Probes, ...]
    """One per port asked, in that order."""


def glance(
    prefix: str,
    ports: Sequence[int],
    *,
    wait_s: float = 0.0,
    every_s: float = 0.02,
    request_timeout_s: float = 5.0,
) -> Fact[TreeAndProbes]:
    """`probes(port)` for each port and `host_tree(prefix)`, in ONE `node -e`: what a check
    that a recorded readiness still holds needs, for the price of one process. With `wait_s`,
    taken once every port is ready (or after `wait_s`), polling from the host every `every_s`:
    readiness is seen within ~20 ms of happening, and what a verify reads next comes with it."""
    argv = (
        "node",
        "-e",
        GLANCE_SCRIPT,
        "--",
        *tree.arguments(prefix),
        _ms(request_timeout_s),
        ",".join(str(p) for p in ports),
        str(int(wait_s * 1000)),
        _ms(every_s),
        *PROBE_PATHS,
    )
    cap = max(NPM_LS_S, PROBE_S) + wait_s
    n = len(ports)
    parse = functools.partial(parse_glance, ports=n)
    return Fact("glance", argv, parse, cap, TREE_OUTPUT + PROBE_OUTPUT * n)


def parse_glance(host: str, result: CommandResult, *, ports: int = 1) -> TreeAndProbes:
    """A glance's output, with exactly one set of probes per port asked."""
    text = output_text(host, result, max_bytes=TREE_OUTPUT + PROBE_OUTPUT * ports)
    doc = decode_json(text) if result.ok else None
    if not isinstance(doc, dict) or not isinstance(doc.get("tree"), dict):
        raise parse_error(
            host, result, f"no glance (exit {result.exit_code})", text or result.stderr
        )
    try:
        host_tree_ = tree.parse(doc["tree"])
    except tree.TreeError as exc:
        raise parse_error(host, result, str(exc), text) from None
    per_port = doc.get("probes")
    if not isinstance(per_port, list):
        raise parse_error(host, result, "no probe results in the glance", text)
    if len(per_port) != ports:
        raise parse_error(host, result, f"{len(per_port)} probe results for {ports} ports", text)
    return TreeAndProbes(host_tree_, tuple(_probes_of(host, result, i, text) for i in per_port))
