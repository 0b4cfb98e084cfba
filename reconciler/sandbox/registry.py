"""A real npm registry on loopback, and the releases the tests, bench and demo upgrade between.

Upgrading a fleet means `npm i -g openclaw@V` on every host; the only honest way to test that
is against a real registry with real tarballs, peer ranges and `engines` fields. This module
installs verdaccio (pinned: Node 20 here, and verdaccio >= 6.10 needs Node 22), runs it fully
offline on a free loopback port, and publishes the stand-in `openclaw` and `@openclaw/*`
plugins (templates in `standin/`) in any version with any metadata.

npm 11.19 notes (measured here): `npm publish` of a version lower than the current `latest`,
or of any prerelease (which includes correction releases such as `2026.5.3-1`), fails unless
`--tag` is given, so every publish here passes an explicit tag; `npm i -g` still runs the
stand-in's postinstall without `--allow-scripts=openclaw` but warns, so installs pass it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nodesemver

from reconciler.sandbox.processes import stop_group

VERDACCIO_VERSION = "6.8.0"
TOOLS_DIR_ENV = "RECONCILER_TOOLS_DIR"
STANDIN_DIR = Path(__file__).resolve().parent / "standin"
INSTALL_TIMEOUT_S = 300.0
NPM_TIMEOUT_S = 120.0
LOOPBACK = "127.0.0.1"
BUILT_AT = "2026-01-01T00:00:00.000Z"
SCRATCH_TAG = "standin-scratch"  # for versions below `latest`; removed after publishing
PUBLISH_WORKERS = 6  # npm publish is CPU-bound (~0.45 s of node each); 6 measured best


class SandboxError(RuntimeError):
    """A sandbox part (verdaccio, npm) failed; the message carries the tool's own words."""


# --- verdaccio installation ------------------------------------------------------------------


def default_tools_dir() -> Path:
    """`$RECONCILER_TOOLS_DIR`, else `~/.cache/openclaw-reconciler/tools`."""
    configured = os.environ.get(TOOLS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "openclaw-reconciler" / "tools"


def ensure_verdaccio(tools_dir: Path | None = None) -> Path:
    """Path of the verdaccio executable, installing it first if needed.

    Idempotent and safe across processes: installs run under an exclusive file lock, into a
    temporary directory that is renamed into place only once complete.
    """
    tools = tools_dir if tools_dir is not None else default_tools_dir()
    home = tools / f"verdaccio-{VERDACCIO_VERSION}"
    executable = home / "node_modules" / ".bin" / "verdaccio"
    if executable.exists():
        return executable
    tools.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(tools / f"verdaccio-{VERDACCIO_VERSION}.lock"):
        if not executable.exists():
            _install_verdaccio(tools, home)
    return executable


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_verdaccio(tools: Path, home: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".verdaccio-", dir=tools))
    try:
        manifest = {
            "name": "reconciler-tools-verdaccio",
            "private": True,
            "dependencies": {"verdaccio": VERDACCIO_VERSION},
            # The registry serves only `latest` tags; verdaccio 6.8 asks for node-fetch@cjs.
            "overrides": {"node-fetch": "2.7.0"},
        }
        (staging / "package.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=staging,
            timeout=INSTALL_TIMEOUT_S,
            what="installing verdaccio",
        )
        if home.exists():
            shutil.rmtree(home)
        staging.chmod(0o755)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout; raise SandboxError with its stderr when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{what}: `{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise SandboxError(f"{what}: `{' '.join(argv)}` exited {done.returncode}:\n{tail}")
    return done


# --- the registry process --------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


_CONFIG = """\
storage: {storage}
uplinks: {{}}
packages:
  '@*/*':
    access: $all
    publish: $all
    unpublish: $all
  '**':
    access: $all
    publish: $all
    unpublish: $all
web:
  enable: false
max_body_size: 100mb
log: {{type: stdout, format: pretty, level: warn}}
"""


class LocalRegistry:
    """A verdaccio process serving `directory/storage` on 127.0.0.1, offline (no uplinks).

    Start with `LocalRegistry.start(directory)`; stop with `stop()` or use it as a context
    manager. The process runs in its own process group and is stopped by that group's id.
    """

    def __init__(self, directory: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.process = process

    @classmethod
    def start(
        cls,
        directory: Path,
        port: int = 0,
        *,
        verdaccio: Path | None = None,
        timeout: float = 30.0,
    ) -> LocalRegistry:
        """Write the config, start verdaccio on `port` (0: a free one) and wait for /-/ping."""
        executable = verdaccio if verdaccio is not None else ensure_verdaccio()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.yaml"
        storage = json.dumps(str(directory / "storage"))
        config.write_text(_CONFIG.format(storage=storage), encoding="utf-8")
        attempts = 3 if port == 0 else 1  # a free port may be taken before verdaccio binds it
        for _ in range(attempts):
            chosen = port or free_port()
            registry = cls(directory, chosen, _spawn(executable, config, chosen, directory))
            if registry._wait_until_up(timeout):
                registry._write_npmrc()
                return registry
            registry.stop()
        log = (directory / "verdaccio.log").read_text(encoding="utf-8", errors="replace")
        raise SandboxError(f"verdaccio did not answer /-/ping on port {chosen}:\n{log[-2000:]}")

    @property
    def url(self) -> str:
        """Like `http://127.0.0.1:4873/` (with the trailing slash npm wants)."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def npmrc(self) -> Path:
        """The private userconfig: registry URL and the token that publishing requires."""
        return self.directory / ".npmrc"

    def npm_env(self) -> dict[str, str]:
        """npm configuration pointing at this registry, to merge over a base environment.

        Only `npm_config_*` variables: merge with `{**os.environ, **registry.npm_env()}` for a
        local subprocess, or pass them alone to a remote host's environment.
        """
        return {
            "npm_config_userconfig": str(self.npmrc),
            "npm_config_cache": str(self.directory / "npm-cache"),
            "npm_config_registry": self.url,
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
        }

    def packument(self, name: str) -> dict[str, Any]:
        """The registry's metadata document for package `name` ({} when it is not published)."""
        url = self.url + urllib.parse.quote(name, safe="@")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
                document: dict[str, Any] = json.load(response)
                return document
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise SandboxError(f"GET {url}: HTTP {exc.code}") from exc

    def dist_tags(self, name: str) -> dict[str, str]:
        tags: dict[str, str] = self.packument(name).get("dist-tags", {})
        return tags

    def remove_dist_tag(self, name: str, tag: str) -> None:
        """Delete dist-tag `tag` of `name` (no error when it does not exist)."""
        url = f"{self.url}-/package/{urllib.parse.quote(name, safe='@')}/dist-tags/{tag}"
        request = urllib.request.Request(  # noqa: S310 (loopback)
            url, method="DELETE", headers={"authorization": "Bearer x"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise SandboxError(f"DELETE {url}: HTTP {exc.code}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the verdaccio process group (SIGTERM, then SIGKILL) and reap it."""
        stop_group(self.process, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _answers_ping(self.url):
                return True
            time.sleep(0.05)
        return False

    def _write_npmrc(self) -> None:
        host = f"//{LOOPBACK}:{self.port}/"
        self.npmrc.write_text(f"registry={self.url}\n{host}:_authToken=x\n", encoding="utf-8")


def _spawn(executable: Path, config: Path, port: int, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "verdaccio.log").open("ab") as log:
        return subprocess.Popen(
            [str(executable), "-c", str(config), "-l", f"{LOOPBACK}:{port}"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _answers_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "-/ping", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# --- publishing the stand-in -----------------------------------------------------------------


def render_openclaw(version: str, dest: Path, *, engines_node: str = ">=20") -> Path:
    """Copy the stand-in `openclaw` template into `dest` as release `version`."""
    _copy_template("openclaw", dest)
    manifest = _read_json(dest / "package.json")
    manifest["version"] = version
    manifest["engines"] = {"node": engines_node}
    _write_json(dest / "package.json", manifest)
    _write_json(dest / "dist" / "build-info.json", _build_info(version))
    _normalize_modes(dest)
    return dest


def render_plugin(
    name: str,
    version: str,
    dest: Path,
    *,
    peer_openclaw: str | None,
    plugin_api: str | None,
    min_host_version: str | None,
    peer_optional: bool = True,
) -> Path:
    """Copy the plugin template into `dest` as `name@version` with the given ranges.

    A range given as None is left out of package.json, to model plugins that omit it.
    `peer_optional` marks the openclaw peer optional (peerDependenciesMeta), as real plugins do.
    """
    _copy_template("plugin", dest)
    manifest = _read_json(dest / "package.json")
    manifest.update(name=name, version=version)
    if peer_openclaw is None:
        del manifest["peerDependencies"], manifest["peerDependenciesMeta"]
    else:
        manifest["peerDependencies"] = {"openclaw": peer_openclaw}
        if not peer_optional:
            del manifest["peerDependenciesMeta"]
    meta = manifest["openclaw"]
    _set_or_drop(meta["compat"], "pluginApi", plugin_api)
    _set_or_drop(meta["install"], "minHostVersion", min_host_version)
    _write_json(dest / "package.json", manifest)
    plugin_manifest = _read_json(dest / "openclaw.plugin.json")
    plugin_manifest["id"] = name.rsplit("/", 1)[-1]
    _write_json(dest / "openclaw.plugin.json", plugin_manifest)
    _normalize_modes(dest)
    return dest


def publish_openclaw(
    registry: LocalRegistry,
    version: str,
    *,
    engines_node: str = ">=20",
    tmp_dir: Path,
    tag: str | None = None,
) -> None:
    """Publish stand-in `openclaw@version` (tag: see `choose_dist_tag` when None)."""
    package = render_openclaw(
        version, _fresh_dir(tmp_dir, "openclaw", version), engines_node=engines_node
    )
    _publish(registry, package, "openclaw", tag or choose_dist_tag(registry, "openclaw", version))


def publish_plugin(
    registry: LocalRegistry,
    name: str,
    version: str,
    *,
    peer_openclaw: str | None,
    plugin_api: str | None,
    min_host_version: str | None,
    tmp_dir: Path,
    tag: str | None = None,
    peer_optional: bool = True,
) -> None:
    """Publish a stand-in plugin `name@version` with the given compatibility ranges."""
    package = render_plugin(
        name,
        version,
        _fresh_dir(tmp_dir, name, version),
        peer_openclaw=peer_openclaw,
        plugin_api=plugin_api,
        min_host_version=min_host_version,
        peer_optional=peer_optional,
    )
    _publish(registry, package, name, tag or choose_dist_tag(registry, name, version))


def choose_dist_tag(registry: LocalRegistry, name: str, version: str) -> str:
    """The tag to publish `name@version` under, so that `latest` follows the highest release.

    `beta`/`rc`/... for prereleases; `latest` unless a higher release holds it; else
    SCRATCH_TAG, which is removed again right after publishing. npm 11 refuses an implicit
    `latest` for prereleases and for versions below the current latest. Correction releases
    (`2026.5.3-1`) are prereleases to semver but real releases, so they can become latest.
    """
    if _prerelease_channel(version):
        return _prerelease_channel(version)
    latest = registry.dist_tags(name).get("latest")
    if latest is None or nodesemver.gt(version, latest, False):
        return "latest"
    return SCRATCH_TAG


def plan_dist_tags(registry: LocalRegistry, entries: Sequence[CatalogEntry]) -> dict[str, str]:
    """Tags for publishing `entries` all at once, by `name@version` (see `choose_dist_tag`)."""
    highest: dict[str, str] = {}
    for entry in entries:
        if _prerelease_channel(entry.version):
            continue
        current = highest.get(entry.name) or registry.dist_tags(entry.name).get("latest")
        if current is None or nodesemver.gt(entry.version, current, False):
            highest[entry.name] = entry.version
    return {
        entry.spec: _prerelease_channel(entry.version)
        or ("latest" if highest.get(entry.name) == entry.version else SCRATCH_TAG)
        for entry in entries
    }


def _prerelease_channel(version: str) -> str:
    """`beta` for `2026.7.1-beta.6`; empty for releases and correction releases."""
    prerelease = version.partition("-")[2]
    return "" if not prerelease or prerelease.isdigit() else prerelease.split(".")[0]


def _publish(registry: LocalRegistry, package_dir: Path, name: str, tag: str) -> None:
    npm_publish(registry, package_dir, tag)
    if tag == SCRATCH_TAG:
        registry.remove_dist_tag(name, SCRATCH_TAG)


def npm_publish(registry: LocalRegistry, package_dir: Path, tag: str) -> None:
    """`npm publish <dir> --tag <tag>` to `registry`."""
    _run(
        ["npm", "publish", str(package_dir), "--tag", tag, "--registry", registry.url],
        env={**os.environ, **registry.npm_env()},
        timeout=NPM_TIMEOUT_S,
        what=f"publishing {package_dir.name}",
    )


def _copy_template(which: str, dest: Path) -> None:
    shutil.copytree(
        STANDIN_DIR / which,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc"),
    )


def _normalize_modes(root: Path) -> None:
    """Fixed file modes, so a tarball's integrity does not depend on the checkout's umask."""
    for path in [root, *root.rglob("*")]:
        executable = path.is_dir() or path.parent.name == "bin"
        path.chmod(0o755 if executable else 0o644)


def _fresh_dir(tmp_dir: Path, name: str, version: str) -> Path:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    safe = name.replace("@", "").replace("/", "-")
    return Path(tempfile.mkdtemp(prefix=f"{safe}-{version}-", dir=tmp_dir)) / "package"


def _build_info(version: str) -> dict[str, str]:
    # Deterministic, so a release's tarball (and its integrity) is the same on every run.
    commit = hashlib.sha256(f"openclaw-standin {version}".encode()).hexdigest()[:7]
    return {
        "version": version,
        "commit": commit,
        "builtAt": BUILT_AT,
        "buildId": f"standin-{version}",
    }


def _set_or_drop(table: dict[str, Any], key: str, value: str | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _read_json(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# --- the standard catalog --------------------------------------------------------------------


@dataclass(frozen=True)
class CoreRelease:
    """A release of `openclaw` in the catalog."""

    version: str
    engines_node: str = ">=20"

    @property
    def name(self) -> str:
        return "openclaw"

    @property
    def spec(self) -> str:
        return f"openclaw@{self.version}"


@dataclass(frozen=True)
class PluginRelease:
    """A release of an `@openclaw/*` plugin in the catalog."""

    name: str
    version: str
    peer_openclaw: str | None
    plugin_api: str | None
    min_host_version: str | None
    peer_optional: bool = True

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


CatalogEntry = CoreRelease | PluginRelease

NODE_24_ONLY = ">=24.16 <25 || >=26.1"  # engines.node of the real 2026.9.6


def _plugin_line(name: str, versions: Iterable[str], api: str) -> list[PluginRelease]:
    return [
        PluginRelease(name, v, peer_openclaw=f">={v}", plugin_api=api, min_host_version=f">={v}")
        for v in versions
    ]


# The releases every test can rely on. Plugins declare an optional openclaw peer like the real
# ones, except @openclaw/msteams: npm 11 never nests an optional peer that is installed after the
# core (it leaves the tree `invalid`, `npm ls` exits 1 with ELSPROBLEMS), nor one whose only
# matching release fails `engines` (2026.9.6 on Node 20). A required peer is what produces the
# nested second copy of openclaw next to a 2026.4.x core (`npm ls` exits 0) that the
# reconciler must detect; discord/matrix 2026.4.4 next to a 2026.4.3 core give the other shape.
STANDARD_CATALOG: tuple[CatalogEntry, ...] = (
    CoreRelease("2026.4.2"),
    CoreRelease("2026.4.3"),
    CoreRelease("2026.4.4"),
    CoreRelease("2026.5.3-1"),
    CoreRelease("2026.7.1-beta.6"),
    CoreRelease("2026.9.6", engines_node=NODE_24_ONLY),
    *_plugin_line("@openclaw/discord", ("2026.4.2", "2026.4.3", "2026.4.4"), ">=2026.4.2"),
    *_plugin_line("@openclaw/matrix", ("2026.4.2", "2026.4.3", "2026.4.4"), ">=2026.4.2"),
    PluginRelease(
        "@openclaw/msteams",
        "2026.9.6",
        peer_openclaw=">=2026.9.6",
        plugin_api=">=2026.9.6",
        min_host_version=">=2026.9.6",
        peer_optional=False,
    ),
)


def publish_entry(
    registry: LocalRegistry, entry: CatalogEntry, *, tmp_dir: Path, tag: str | None = None
) -> None:
    """Publish one catalog entry."""
    if isinstance(entry, CoreRelease):
        publish_openclaw(
            registry, entry.version, engines_node=entry.engines_node, tmp_dir=tmp_dir, tag=tag
        )
    else:
        publish_plugin(
            registry,
            entry.name,
            entry.version,
            peer_openclaw=entry.peer_openclaw,
            plugin_api=entry.plugin_api,
            min_host_version=entry.min_host_version,
            tmp_dir=tmp_dir,
            tag=tag,
            peer_optional=entry.peer_optional,
        )


def publish_catalog(
    registry: LocalRegistry,
    entries: Iterable[CatalogEntry],
    *,
    tmp_dir: Path,
    workers: int = PUBLISH_WORKERS,
) -> None:
    """Publish `entries` in parallel (one `npm publish` each, tags planned up front)."""
    batch = list(entries)
    tags = plan_dist_tags(registry, batch)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(publish_entry, registry, entry, tmp_dir=tmp_dir, tag=tags[entry.spec])
            for entry in batch
        ]
        for future in futures:
            future.result()


def publish_standard_catalog(
    registry: LocalRegistry, *, tmp_dir: Path | None = None
) -> tuple[CatalogEntry, ...]:
    """Publish STANDARD_CATALOG to `registry` and return it."""
    publish_catalog(
        registry,
        STANDARD_CATALOG,
        tmp_dir=tmp_dir if tmp_dir is not None else registry.directory / "packages",
    )
    return STANDARD_CATALOG


# --- installing from the registry ------------------------------------------------------------


def npm_install_global(
    registry: LocalRegistry,
    prefix: Path,
    specs: Sequence[str],
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = NPM_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """`npm install -g --prefix <prefix> <specs>` from `registry`; raises SandboxError on failure.

    Passes `--allow-scripts=openclaw` (npm 11.19 runs uncovered install scripts of global
    installs anyway, with a warning). `env` is the base environment (default: os.environ).
    """
    argv = [
        "npm",
        "install",
        "-g",
        "--prefix",
        str(prefix),
        "--allow-scripts=openclaw",
        *extra_args,
        *specs,
    ]
    base = dict(os.environ if env is None else env)
    return _run(
        argv,
        env={**base, **registry.npm_env()},
        timeout=timeout,
        what=f"installing {' '.join(specs)} into {prefix}",
    )


def npm_ls_global(
    registry: LocalRegistry, prefix: Path, *, depth: int = 1, timeout: float = NPM_TIMEOUT_S
) -> tuple[int, dict[str, Any]]:
    """`npm ls -g --prefix <prefix> --depth=<depth> --json`: (exit code, parsed tree).

    Exit code 1 with `error.code == "ELSPROBLEMS"` is a result here, not a failure.
    """
    argv = ["npm", "ls", "-g", "--prefix", str(prefix), f"--depth={depth}", "--json"]
    try:
        done = subprocess.run(
            argv,
            env={**os.environ, **registry.npm_env()},
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"`{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    tree: dict[str, Any] = json.loads(done.stdout or "{}")
    return done.returncode, tree


def standin_bin(prefix: Path) -> Path:
    """Where `npm i -g --prefix <prefix> openclaw` puts the `openclaw` command."""
    return prefix / "bin" / "openclaw"
