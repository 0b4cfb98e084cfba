"""`reconciler init`: start a spec repository, as `flux bootstrap` and `terraform init` do.

Trust is the point. Every host's SSH key is scanned before anything is written, and each
fingerprint is printed for the operator to check against the host out of band: a known_hosts
that nobody checked is trust on first use with extra steps. A host that does not answer is
named and nothing is written. The files are rendered into a staging directory beside DIR,
validated there exactly as `reconciler validate` would, and moved into place with one rename,
so DIR is either complete or untouched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pygit2

from reconciler import __version__
from reconciler.desired import npmregistry as registry
from reconciler.desired import source
from reconciler.desired.spec import HOSTNAME, NAME, URL, USER
from reconciler.desired.validate import load
from reconciler.desired.versions import OPENCLAW_VERSION
from reconciler.errors import InitError, SpecError

KEY_TYPES = "ed25519,ecdsa,rsa"


@dataclass(frozen=True)
class CiFile:
    """One forge's CI file: where it goes, its template, and the forge's token variable."""

    path: str
    template: str
    token: str
    title: str


CI_FILES = {
    "github": CiFile(
        ".github/workflows/reconciler-plan.yml", "github.yml.j2", "GITHUB_TOKEN", "GitHub"
    ),
    "gitea": CiFile(".gitea/workflows/reconciler-plan.yml", "gitea.yml.j2", "GITEA_TOKEN", "Gitea"),
    "forgejo": CiFile(
        ".forgejo/workflows/reconciler-plan.yml", "gitea.yml.j2", "FORGEJO_TOKEN", "Forgejo"
    ),
    "gitlab": CiFile(".gitlab-ci.yml", "gitlab-ci.yml.j2", "RECONCILER_GITLAB_TOKEN", "GitLab"),
}
_HOST = re.compile(r"^([^=]+)=([^@]+)@(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$")


@dataclass(frozen=True)
class HostArg:
    """One `--host name=user@address[:port]`."""

    name: str
    user: str
    address: str
    port: int = 22
    role: str = "stable"

    @classmethod
    def parse(cls, text: str) -> HostArg:
        match = _HOST.match(text)
        if match is None:
            raise InitError(f"--host {text!r}: expected name=user@address[:port]")
        name, user, address, port = match.groups()
        address = address.strip("[]")
        for what, value, pattern in (("name", name, NAME), ("user", user, USER)):
            if not re.match(pattern, value):
                raise InitError(f"--host {text!r}: {what} {value!r} does not match {pattern}")
        if not re.match(HOSTNAME, address):
            raise InitError(f"--host {text!r}: {address!r} is not a host name or IP address")
        if port is not None and not 1 <= int(port) <= 65535:
            raise InitError(f"--host {text!r}: port {port} is not in 1-65535")
        return cls(name, user, address, int(port or 22))


@dataclass(frozen=True)
class LbArg:
    """`--lb haproxy:unix:///path:backend`, `haproxy:tcp://host:port:backend` or `file:/path`."""

    driver: str
    address: str
    backend: str | None = None

    @classmethod
    def parse(cls, text: str) -> LbArg:
        driver, _, rest = text.partition(":")
        if driver == "file" and rest.startswith("/"):
            return cls("file", rest)
        if driver == "haproxy":
            address, _, backend = rest.rpartition(":")
            if re.match(r"^(unix:///\S+|tcp://[^/\s]+:\d+)$", address) and re.match(NAME, backend):
                return cls("haproxy", address, backend)
        raise InitError(
            f"--lb {text!r}: expected haproxy:unix:///path/admin.sock:BACKEND, "
            "haproxy:tcp://host:port:BACKEND or file:/path/weights.json"
        )


DEFAULT_LB = LbArg("haproxy", "unix:///run/haproxy/admin.sock", "openclaw")


@dataclass(frozen=True)
class ScannedKey:
    """One host key as `ssh-keyscan` saw it."""

    host: str
    line: str
    """The known_hosts line: `[address]:port type base64` (the port only when not 22)."""
    key_type: str
    fingerprint: str
    """`SHA256:...`, as `ssh-keygen -lf` prints it."""


def fingerprint(blob_b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(blob_b64, validate=True)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def scan(host: HostArg, timeout_s: float) -> list[ScannedKey]:
    """The host's keys, by `ssh-keyscan`; InitError naming the host when it gives none."""
    argv = ["ssh-keyscan", "-T", str(max(1, round(timeout_s))), "-p", str(host.port)]
    argv += ["-t", KEY_TYPES, "--", host.address]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 10)
    except subprocess.TimeoutExpired:
        raise InitError(f"{host.name}: ssh-keyscan did not finish in {timeout_s + 10:g}s") from None
    except FileNotFoundError:
        raise InitError("ssh-keyscan not found: install the OpenSSH client") from None
    keys = [_scanned(host, line) for line in done.stdout.splitlines() if _is_key(line)]
    if not keys:
        why = done.stderr.strip().splitlines()[-1:] or ["no answer"]
        raise InitError(
            f"{host.name} ({host.address} port {host.port}): no SSH host key; "
            f"unreachable or not an SSH server ({why[0]})"
        )
    return keys


def _is_key(line: str) -> bool:
    return not line.startswith("#") and len(line.split()) == 3


def _scanned(host: HostArg, line: str) -> ScannedKey:
    _, key_type, blob = line.split()
    try:
        return ScannedKey(host.name, line.strip(), key_type, fingerprint(blob))
    except (binascii.Error, ValueError):
        raise InitError(f"{host.name}: ssh-keyscan printed a malformed key line") from None


def scan_all(hosts: Sequence[HostArg], timeout_s: float) -> dict[str, list[ScannedKey]]:
    """Every host scanned in parallel; the first host (by order given) that fails is named."""
    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        futures = [(h, pool.submit(scan, h, timeout_s)) for h in hosts]
    return {h.name: future.result() for h, future in futures}


def latest_release(registry_url: str, timeout_s: float) -> str:
    """The registry's `latest` dist-tag of the core."""
    packument = registry.fetch_packument(registry_url, "openclaw", timeout=timeout_s)
    latest = (packument.get("dist-tags") or {}).get("latest")
    if not isinstance(latest, str) or not re.match(OPENCLAW_VERSION, latest):
        raise InitError(f"{registry.redact(registry_url)}: no usable `latest` release of openclaw")
    return latest


@dataclass(frozen=True)
class Request:
    """Everything `init` was asked for, checked."""

    fleet: str
    hosts: tuple[HostArg, ...]
    registry: str
    version: str
    lb: LbArg = DEFAULT_LB
    service_manager: str = "launchd"
    key_file: str | None = None
    ci: tuple[str, ...] = tuple(CI_FILES)

    def __post_init__(self) -> None:
        if not re.match(NAME, self.fleet):
            raise InitError(f"--fleet {self.fleet!r}: does not match {NAME}")
        if not re.match(URL, self.registry):
            raise InitError(f"--registry {self.registry!r}: expected an http(s):// URL")
        if not re.match(OPENCLAW_VERSION, self.version):
            raise InitError(f"--openclaw {self.version!r}: not an OpenClaw release (2026.9.6)")
        names = [h.name for h in self.hosts]
        if not names or len(set(names)) != len(names):
            raise InitError("--host: give each host once, with a name of its own")


def with_roles(hosts: Sequence[HostArg]) -> tuple[HostArg, ...]:
    """The first host is the canary when there are several; the rest are stable."""
    if len(hosts) < 2:
        return tuple(hosts)
    first = HostArg(hosts[0].name, hosts[0].user, hosts[0].address, hosts[0].port, "canary")
    return (first, *hosts[1:])


def render(request: Request, keys: Mapping[str, list[ScannedKey]]) -> dict[str, str]:
    """The repository's files, path -> text."""
    env = jinja2.Environment(  # noqa: S701 - YAML and Markdown; every value quoted by `q`
        loader=jinja2.PackageLoader("reconciler", "templates/init"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["q"] = json.dumps  # a JSON string is a YAML double-quoted scalar
    ci = [CI_FILES[name] for name in request.ci]
    values = {
        "fleet": request.fleet, "version": request.version, "registry": request.registry,
        "lb": request.lb, "hosts": request.hosts, "service_manager": request.service_manager,
        "key_file": request.key_file, "ci_files": [c.path for c in ci],
    }  # fmt: skip
    files = {
        "fleet.yaml": env.get_template("fleet.yaml.j2").render(values),
        "known_hosts": _known_hosts(request, keys),
        ".gitignore": env.get_template("gitignore.j2").render(values),
        "README.md": env.get_template("README.md.j2").render(values),
    }
    for c in ci:
        extra = {"version": __version__, "token": c.token, "forge_title": c.title}
        files[c.path] = env.get_template(f"ci/{c.template}").render(values | extra)
    return files


def _known_hosts(request: Request, keys: Mapping[str, list[ScannedKey]]) -> str:
    lines = ["# Scanned by `reconciler init`. Check each fingerprint against its host."]
    for host in request.hosts:
        lines += [f"# {host.name}"] + [k.line for k in keys[host.name]]
    return "\n".join(lines) + "\n"


def write(target: Path, files: Mapping[str, str]) -> None:
    """Stage, validate and move `files` into `target` (absent or empty) as a new git
    repository; nothing is left behind when any of it fails."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InitError(f"{target}: exists and is not empty; init starts a new repository")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.init-{secrets.token_hex(4)}"
    staging.mkdir()  # beside the target, so the final rename cannot cross a file system
    try:
        for path, text in files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_text(text)
        _validate(staging)
        pygit2.init_repository(str(staging), initial_head="main")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _validate(staging: Path) -> None:
    (files,) = source.read_directory(staging)
    try:
        load(files, require_lock=False)
    except SpecError as exc:
        listing = "; ".join(p.render() for p in exc.problems)
        raise InitError(f"the fleet init would write is not valid: {listing}") from None
