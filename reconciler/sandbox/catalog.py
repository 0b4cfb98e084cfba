"""The releases the tests, bench and demo upgrade between: the stand-in `openclaw` and
`@openclaw/*` plugins (templates in `standin/`) rendered in any version with any metadata and
published to a LocalRegistry, and the standard catalog most tests use.

npm 11.19 notes (measured here): `npm publish` of a version lower than the current `latest`,
or of any prerelease (which includes correction releases such as `2026.5.3-1`), fails unless
`--tag` is given, so every publish here passes an explicit tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nodesemver

from reconciler.sandbox.tools import run_tool
from reconciler.sandbox.verdaccio import NPM_TIMEOUT_S, LocalRegistry

STANDIN_DIR = Path(__file__).resolve().parent / "standin"
BUILT_AT = "2026-01-01T00:00:00.000Z"
SCRATCH_TAG = "standin-scratch"  # for versions below `latest`; removed after publishing
PUBLISH_WORKERS = 6  # npm publish is CPU-bound (~0.45 s of node each); 6 measured best


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
    run_tool(
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
