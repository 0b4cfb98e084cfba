"""`reconciler lock` against a real verdaccio serving stand-in OpenClaw releases.

Nothing is mocked: packuments, tarballs and integrity come from a registry that `npm publish`
filled, a registry that is down is a closed loopback port, a registry that hangs is a socket
that never answers, and the CLI runs as a real subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.desired import npmregistry as npm
from reconciler.desired.lock import LOCK_FILE, Lock, parse_lock
from reconciler.desired.resolve import UnresolvablePins, resolve_lock
from reconciler.desired.source import read_directory
from reconciler.desired.spec import Fleet
from reconciler.desired.validate import load
from reconciler.errors import LockError, RegistryError
from reconciler.sandbox.catalog import PluginRelease, publish_catalog
from reconciler.sandbox.verdaccio import LocalRegistry

# The session `registry` fixture (harmless if tests/conftest.py registers it as well).


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "specs" / "example"

# Plugins only these tests publish (unique names: the session registry is shared).
PEER_ONLY = "@openclaw/locktest-peer"
MINHOST_ONLY = "@openclaw/locktest-minhost"
BAD_RANGE = "@openclaw/locktest-badrange"
API_ONLY = "@openclaw/locktest-pluginapi"
EXTRA = (
    PluginRelease(PEER_ONLY, "1.0.0", ">=2026.9.6", ">=2026.4.0", None),
    PluginRelease(MINHOST_ONLY, "1.0.0", ">=2026.4.0", ">=2026.4.0", ">=2026.5.0"),
    PluginRelease(BAD_RANGE, "1.0.0", "not a range!", ">=2026.4.0", ">=2026.4.0"),
    PluginRelease(API_ONLY, "1.0.0", ">=2026.4.0", ">=2026.9.0", ">=2026.4.0"),
)


@pytest.fixture(scope="module")
def url(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session registry's URL, with this module's extra plugins published once."""
    missing = [e for e in EXTRA if e.version not in registry.packument(e.name).get("versions", {})]
    publish_catalog(registry, missing, tmp_dir=tmp_path_factory.mktemp("lock-packages"))
    return registry.url


def fleet(core: str = "2026.4.3", plugins: dict[str, str] | None = None) -> Fleet:
    """The example fleet with other pins."""
    example = load(read_directory(EXAMPLE)[0], require_lock=False).fleet
    pins = {"@openclaw/discord": core} if plugins is None else plugins
    openclaw = example.openclaw.model_copy(update={"version": core, "plugins": pins})
    return example.model_copy(update={"openclaw": openclaw})


def problems_of(exc: pytest.ExceptionInfo[LockError]) -> list[str]:
    assert isinstance(exc.value, UnresolvablePins)
    return exc.value.problems


def sha512_of_tarball(tarball_url: str) -> str:
    with urllib.request.urlopen(tarball_url, timeout=10) as response:
        digest = hashlib.sha512(response.read()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


# --- resolution ------------------------------------------------------------------------------


def test_clean_lock_records_what_npm_serves(url: str) -> None:
    lock = resolve_lock(fleet("2026.4.3"), registry=url, timeout=10)

    assert lock.versions() == {"openclaw": "2026.4.3", "@openclaw/discord": "2026.4.3"}
    assert [p.name for p in lock.packages] == ["openclaw", "@openclaw/discord"]
    for package in lock.packages:
        packument = npm.fetch_packument(url, package.name, timeout=10)
        manifest = npm.version_manifest(packument, package.version)
        assert manifest is not None
        assert package.integrity == sha512_of_tarball(manifest["dist"]["tarball"])
    core, discord = lock.packages
    assert core.engines_node == ">=20"
    assert (discord.peer_openclaw, discord.min_host_version) == (">=2026.4.3", ">=2026.4.3")
    assert discord.plugin_api == ">=2026.4.2"
    assert lock.self_digest() == lock.sha256


def test_lock_bytes_are_deterministic(url: str) -> None:
    first = resolve_lock(fleet("2026.4.3"), registry=url, timeout=10).to_bytes()
    again = resolve_lock(fleet("2026.4.3"), registry=url.rstrip("/"), timeout=10).to_bytes()

    assert first == again
    assert b"127.0.0.1" not in first and b"http" not in first


def test_missing_version_names_package_and_nearby_versions(url: str) -> None:
    pins = {"@openclaw/discord": "2026.4.9"}
    with pytest.raises(LockError) as exc:
        resolve_lock(fleet("2026.4.9", pins), registry=url, timeout=10)

    core, plugin = problems_of(exc)
    assert core.startswith("openclaw@2026.4.9: version not found (nearest published: ")
    assert "2026.4.3, 2026.4.4" in core
    assert plugin.startswith("@openclaw/discord@2026.4.9: version not found")
    assert "2026.4.2, 2026.4.3, 2026.4.4" in plugin and "latest is 2026.4.4" in plugin


def test_unpublished_plugin_is_named(url: str) -> None:
    with pytest.raises(LockError, match="@openclaw/locktest-nothere is not published"):
        resolve_lock(fleet("2026.4.3", {"@openclaw/locktest-nothere": "1.0.0"}), registry=url)


def test_peer_range_excluding_the_core_names_both_versions(url: str) -> None:
    with pytest.raises(LockError) as exc:
        resolve_lock(fleet("2026.4.3", {PEER_ONLY: "1.0.0"}), registry=url, timeout=10)

    assert problems_of(exc) == [
        f"{PEER_ONLY}@1.0.0 requires openclaw >=2026.9.6 (peerDependencies.openclaw) "
        "but the spec pins openclaw 2026.4.3"
    ]


def test_min_host_version_excluding_the_core(url: str) -> None:
    with pytest.raises(LockError) as exc:
        resolve_lock(fleet("2026.4.3", {MINHOST_ONLY: "1.0.0"}), registry=url, timeout=10)

    assert problems_of(exc) == [
        f"{MINHOST_ONLY}@1.0.0 requires openclaw >=2026.5.0 (openclaw.install.minHostVersion) "
        "but the spec pins openclaw 2026.4.3"
    ]
    # The same plugin locks once the core is new enough (prereleases count: includePrerelease).
    lock = resolve_lock(fleet("2026.7.1-beta.6", {MINHOST_ONLY: "1.0.0"}), registry=url)
    assert lock.versions()[MINHOST_ONLY] == "1.0.0"


def test_plugin_api_excluding_the_core_is_refused_when_locking(url: str) -> None:
    """The product decides install compatibility by openclaw.compat.pluginApi: so does the
    lock, before any host is touched."""
    with pytest.raises(LockError) as exc:
        resolve_lock(fleet("2026.4.3", {API_ONLY: "1.0.0"}), registry=url, timeout=10)

    assert problems_of(exc) == [
        f"{API_ONLY}@1.0.0 requires openclaw >=2026.9.0 (openclaw.compat.pluginApi) "
        "but the spec pins openclaw 2026.4.3"
    ]
    lock = resolve_lock(fleet("2026.9.6", {API_ONLY: "1.0.0"}), registry=url)
    locked = lock.package(API_ONLY)
    assert locked is not None and locked.plugin_api == ">=2026.9.0"


def test_invalid_range_in_registry_metadata(url: str) -> None:
    with pytest.raises(LockError) as exc:
        resolve_lock(fleet("2026.4.3", {BAD_RANGE: "1.0.0"}), registry=url, timeout=10)

    assert problems_of(exc) == [
        f"{BAD_RANGE}@1.0.0: peerDependencies.openclaw 'not a range!' in the registry metadata "
        "is not a valid npm range"
    ]


def test_every_problem_is_reported_at_once(url: str) -> None:
    pins = {
        "@openclaw/discord": "2026.4.9",
        "@openclaw/msteams": "2026.9.6",
        "@openclaw/locktest-nothere": "1.0.0",
        MINHOST_ONLY: "1.0.0",
        "@openclaw/matrix": "2026.4.3",
    }
    with pytest.raises(LockError) as exc:
        resolve_lock(fleet("2026.4.3", pins), registry=url, timeout=10)

    problems = problems_of(exc)
    assert [p.split(" ", 1)[0] for p in problems] == [
        "@openclaw/discord@2026.4.9:",
        "@openclaw/locktest-minhost@1.0.0",
        "@openclaw/locktest-nothere@1.0.0:",
        "@openclaw/msteams@2026.9.6",  # peerDependencies, compat.pluginApi, minHostVersion
        "@openclaw/msteams@2026.9.6",
        "@openclaw/msteams@2026.9.6",
    ]
    assert "(6 problems)" in str(exc.value)
    assert str(exc.value).count("\n") == 6  # the header, then one line per problem


# --- the registry client ---------------------------------------------------------------------


def test_fetch_packument_of_scoped_package_and_404(url: str) -> None:
    packument = npm.fetch_packument(url, "@openclaw/discord", timeout=10)
    assert packument["name"] == "@openclaw/discord"
    assert npm.version_manifest(packument, "2026.4.2") is not None
    assert npm.version_manifest(packument, "2026.4.9") is None
    with pytest.raises(npm.PackageNotFound, match="@openclaw/locktest-nothere: not found"):
        npm.fetch_packument(url, "@openclaw/locktest-nothere", timeout=10)
    npm.ping(url, timeout=10)


def test_response_size_is_bounded(url: str) -> None:
    with pytest.raises(RegistryError, match="exceeds 1024 bytes"):
        npm.fetch_packument(url, "openclaw", timeout=10, max_bytes=1024)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_registry_down_is_a_quick_registry_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPM_TOKEN", "s3cr3t-token")
    down = f"http://127.0.0.1:{closed_port()}/"
    started = time.monotonic()
    with pytest.raises(RegistryError) as exc:
        resolve_lock(fleet("2026.4.3"), registry=down, timeout=5)

    assert time.monotonic() - started < 2
    assert "registry unavailable: GET " + down in str(exc.value)
    assert "s3cr3t-token" not in str(exc.value)
    with pytest.raises(RegistryError):
        npm.ping(down, timeout=5)


@contextlib.contextmanager
def silent_socket() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


def test_hanging_registry_honours_the_timeout() -> None:
    with silent_socket() as hanging:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"timed out after 0\.5s"):
            resolve_lock(fleet("2026.4.3"), registry=hanging, timeout=0.5)
        elapsed = time.monotonic() - started

    assert 0.4 < elapsed < 2.5  # both packuments were requested in parallel


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 503 and remembers each request's Authorization header."""

    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_token_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPM_TOKEN", "s3cr3t-token")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(RegistryError) as exc:
            npm.fetch_packument(base, "@openclaw/discord", timeout=5)
    finally:
        server.shutdown()
        server.server_close()

    assert _Recorder.seen == ["Bearer s3cr3t-token"]
    assert str(exc.value) == (
        f"registry unavailable: GET {base}@openclaw%2fdiscord: HTTP 503 Service Unavailable"
    )


# --- the CLI ---------------------------------------------------------------------------------


def fleet_dir(tmp_path: Path, core: str = "2026.4.2") -> Path:
    """A copy of the example spec with another core version."""
    target = tmp_path / "fleet"
    target.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE / "known_hosts", target / "known_hosts")
    text = (EXAMPLE / "fleet.yaml").read_text().replace("version: 2026.4.2", f"version: {core}")
    (target / "fleet.yaml").write_text(text)
    return target


def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_cli_lock_then_validate_then_stale(url: str, tmp_path: Path) -> None:
    spec = fleet_dir(tmp_path)

    done = reconciler("lock", str(spec), "--registry", url)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "(3 packages" in done.stdout
    assert parse_lock((spec / LOCK_FILE).read_bytes()).versions()["openclaw"] == "2026.4.2"
    assert reconciler("validate", str(spec)).returncode == 0
    assert reconciler("lock", str(spec), "--registry", url, "--check").returncode == 0

    fleet_dir(tmp_path, core="2026.4.3")
    stale = reconciler("validate", str(spec))
    assert stale.returncode == 2
    assert "stale: openclaw 2026.4.2 in lock, 2026.4.3 in spec" in stale.stderr
    check = reconciler("lock", str(spec), "--registry", url, "--check")
    assert check.returncode == 2 and "stale" in check.stderr


def test_cli_relocks_after_a_spec_change(url: str, tmp_path: Path) -> None:
    spec = fleet_dir(tmp_path)
    assert main(["lock", str(spec), "--registry", url]) == 0
    fleet_dir(tmp_path, core="2026.4.3")

    assert main(["lock", str(spec), "--registry", url]) == 0
    assert parse_lock((spec / LOCK_FILE).read_bytes()).versions()["openclaw"] == "2026.4.3"
    assert main(["validate", str(spec)]) == 0
    assert main(["lock", str(spec), "--registry", url, "--check"]) == 0


def test_cli_lock_reports_incompatible_pins(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = fleet_dir(tmp_path, core="2026.4.2")
    text = (spec / "fleet.yaml").read_text()
    (spec / "fleet.yaml").write_text(
        text.replace('"@openclaw/matrix": 2026.4.2', '"@openclaw/msteams": 2026.9.6')
    )

    assert main(["lock", str(spec), "--registry", url]) == 2
    err = capsys.readouterr().err
    assert (
        "@openclaw/msteams@2026.9.6 requires openclaw >=2026.9.6 (peerDependencies.openclaw) "
        "but the spec pins openclaw 2026.4.2"
    ) in err
    assert not (spec / LOCK_FILE).exists()


def test_cli_lock_registry_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = fleet_dir(tmp_path)
    down = f"http://127.0.0.1:{closed_port()}/"

    assert main(["lock", str(spec), "--registry", down, "--timeout", "2"]) != 0
    assert "registry unavailable" in capsys.readouterr().err


def test_checked_in_example_lock_matches_the_standard_catalog(url: str) -> None:
    """specs/example/openclaw.lock: `reconciler lock specs/example --registry <test registry>`.

    Names, versions and ranges must be what the standard catalog resolves to. The integrity
    values are those of the stand-in tarballs when the lock was made; they change with every
    edit of the stand-in, so only their form is checked here (regenerate the lock as above).
    """
    assert reconciler("validate", str(EXAMPLE)).returncode == 0
    checked_in = parse_lock((EXAMPLE / LOCK_FILE).read_bytes())
    spec = load(read_directory(EXAMPLE)[0], require_lock=False).fleet
    fresh = resolve_lock(spec, registry=url, timeout=10)

    def without_integrity(lock: Lock) -> list[dict[str, object]]:
        return [p.model_dump(exclude={"integrity"}) for p in lock.packages]

    assert without_integrity(checked_in) == without_integrity(fresh)
    assert checked_in.spec_digest == fresh.spec_digest
    assert all(p.integrity.startswith("sha512-") for p in checked_in.packages)
    assert b"example" not in (EXAMPLE / LOCK_FILE).read_bytes()
