"""Recovery points: the product's own verified backup, taken before a host changes, and the
restore built on it.

Why a bookmark of versions is not a way back: every config write stamps the writing release
into `openclaw.json` (`meta.lastTouchedVersion`), and newer releases migrate the state
databases. An older release then refuses to start the gateway, or even to open the state, so
reinstalling the older package leaves the host down. The product's answer
(`docs/install/updating/rollback-and-recovery.md`) is a recovery point: `openclaw backup create
--verify`, per profile, before anything changes; to go back, `openclaw backup restore` into a
fresh directory (it never restores in place) and swap the state in with the gateway stopped.

Decisions:

* Workspaces are included (`backup create` without `--no-include-workspace`): the default
  workspace lives inside the state directory, and a restore swaps the whole state directory, so
  an archive without it would leave a restored host with no workspace.
* `backup restore` runs with `OPENCLAW_STATE_DIR` pointing at a path that does not exist: the
  release just reinstalled may be older than the live state (whose newer schema it refuses to
  open, restore included), and the restore must not read or touch the live state anyway.
* The replaced state is moved aside, never deleted, and its path is recorded.

Layout on the host, under HOME and outside every state directory (no backup includes another):
`~/.local/state/openclaw-reconciler/{recovery-points,restores,replaced}/`.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.desired.lock import Lock
from reconciler.desired.spec import CORE, Fleet, Host, Profile, seconds
from reconciler.errors import CommandFailed, FactParseError, HostError, PermanentError
from reconciler.hosts import facts, operations
from reconciler.hosts.transport import CommandResult, Transport, describe
from reconciler.record.documents import Installed, RecoveryAsset, RecoveryPoint

ROOT = ".local/state/openclaw-reconciler"
ARCHIVE = re.compile(r"^(\d+)-([a-z0-9][a-z0-9-]{0,62})@([0-9A-Za-z.+-]{1,64})\.tar\.gz$")
"""`<seq>-<profile>@<release>.tar.gz`: the bookmark that took it, and the release to go back to."""
DIGEST = re.compile(r"^[0-9a-f]{64}$")
KIND = re.compile(r"^[a-z]{1,32}$")
SHA256_SCRIPT = 'sha256sum -- "$1" 2>/dev/null || shasum -a 256 -- "$1"; wc -c < "$1"'
SWAP_SCRIPT = (
    'set -e; src=$1; staged=$2; aside=$3; mkdir -p -- "$(dirname -- "$aside")"; '
    'if [ -e "$src" ] || [ -L "$src" ]; then mv -- "$src" "$aside"; fi; '
    'mkdir -p -- "$(dirname -- "$src")"; mv -- "$staged" "$src"'
)
"""Move one asset's live copy aside (if any), then the restored copy into its place."""
SIZE_SCRIPT = 'for p in "$@"; do [ -e "$p" ] && du -sk -- "$p"; done; exit 0'


class InsufficientBackupDisk(HostError, PermanentError):
    """Less free space where recovery points are kept than the backup needs."""


class RecoveryPointUnusable(HostError, PermanentError):
    """A recorded recovery point is gone from the host, changed, or names paths it must not."""


class RestoreFailed(HostError, PermanentError):
    """A restore stopped part way; the message says where every piece is."""


@dataclass(frozen=True)
class Dirs:
    points: str
    restores: str
    replaced: str


def dirs(home: str) -> Dirs:
    root = posixpath.join(home, ROOT)
    return Dirs(*(posixpath.join(root, d) for d in ("recovery-points", "restores", "replaced")))


# --- taking them --------------------------------------------------------------------------------


def needed_bytes(host: Host, transport: Transport, *, timeout: float) -> int:
    """What the backups of every profile need: the sizes of what `backup create --dry-run`
    says it would archive (an upper bound: the archive is compressed)."""
    paths: list[str] = []
    for profile in host.profiles:
        plan = _product_json(
            transport,
            ["openclaw", "backup", "create", "--dry-run", "--json"],
            env=facts.profile_env(profile),
            timeout=timeout,
        )
        paths += [str(a["sourcePath"]) for a in _list(plan, "assets", transport.host)]
    if not paths:
        return 0
    result = transport.run(["sh", "-c", SIZE_SCRIPT, "sh", *paths], timeout=timeout)
    return 1024 * sum(int(line.split()[0]) for line in result.text().splitlines() if line.strip())


def preflight(host: Host, transport: Transport, *, timeout: float) -> int:
    """Refuse (InsufficientBackupDisk) unless the recovery points' disk has room for this
    host's backups; return the bytes needed."""
    home = facts.resolve_home(transport, timeout=timeout)
    need = needed_bytes(host, transport, timeout=timeout)
    free = facts.gather(transport, facts.disk_free(dirs(home).points), timeout=timeout).free_mb
    if free * 1024 * 1024 < need:
        raise InsufficientBackupDisk(
            transport.host,
            f"{free} MB free for recovery points under {dirs(home).points}, "
            f"the backup needs {need / 1024 / 1024:.1f} MB",
        )
    return need


def take(
    fleet: Fleet, host: Host, transport: Transport, *, seq: int, installed: Installed
) -> list[RecoveryPoint]:
    """One verified backup per profile, named for the bookmark `seq` and the installed release;
    then prune (`prune`). A re-run of the same bookmark (after a crash before it was recorded)
    takes it again."""
    quick = seconds(fleet.ssh.command_timeout)
    home = facts.resolve_home(transport, timeout=quick)
    where = dirs(home)
    _check(transport, ["mkdir", "-p", "-m", "700", where.points], quick)
    points = []
    for profile in host.profiles:
        archive = posixpath.join(where.points, archive_name(seq, profile.key(), installed))
        _check(transport, ["rm", "-f", "--", archive], quick)
        points.append(_take_one(fleet, host, transport, profile, archive, seq, installed))
    prune(transport, where.points, fleet.rollout.keep_recovery_points, timeout=quick)
    return points


def _take_one(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    profile: Profile,
    archive: str,
    seq: int,
    installed: Installed,
) -> RecoveryPoint:
    made = _product_json(
        transport,
        ["openclaw", "backup", "create", "--verify", "--json", "--output", archive],
        env=facts.profile_env(profile),
        timeout=seconds(fleet.rollout.install_timeout),
    )
    if made.get("verified") is not True or made.get("archivePath") != archive:
        raise CommandFailed(
            transport.host, f"backup of profile {profile.key()} not verified at {archive}: {made}"
        )
    root = str(made.get("archiveRoot", ""))
    quick = seconds(fleet.ssh.command_timeout)
    manifest = _manifest(transport, archive, root, quick)
    digest, size = digest_of(transport, archive, timeout=quick)
    return RecoveryPoint(
        host=host.name,
        profile=profile.key(),
        seq=seq,
        archive=archive,
        sha256=digest,
        size_bytes=size,
        created_at=str(made.get("createdAt", "")),
        archive_root=root,
        runtime_version=str(manifest.get("runtimeVersion", "")),
        node_version=str(manifest.get("nodeVersion", "")),
        include_workspace=bool(made.get("includeWorkspace", True)),
        installed=installed,
        assets=[
            RecoveryAsset(
                kind=str(a["kind"]),
                source_path=str(a["sourcePath"]),
                archive_path=str(a["archivePath"]),
            )
            for a in _list(made, "assets", transport.host)
        ],
    )


def _manifest(transport: Transport, archive: str, root: str, timeout: float) -> dict[str, Any]:
    result = transport.run(
        ["tar", "-xzOf", archive, f"{root}/manifest.json"],
        timeout=timeout,
        max_output=facts.REPORT_OUTPUT,
    )
    return facts.json_object(transport.host, result, max_bytes=facts.REPORT_OUTPUT)


def digest_of(transport: Transport, path: str, *, timeout: float) -> tuple[str, int]:
    """sha256 and size of a file on the host (sha256sum on Linux, shasum on macOS)."""
    result = transport.run(["sh", "-c", SHA256_SCRIPT, "sh", path], timeout=timeout)
    lines = result.text().split()
    if not result.ok or len(lines) < 2 or not DIGEST.fullmatch(lines[0]) or not lines[-1].isdigit():
        raise FactParseError(transport.host, f"no sha256 and size for {path}: {lines[:3]}")
    return lines[0], int(lines[-1])


def archive_name(seq: int, profile: str, installed: Installed) -> str:
    return f"{seq}-{profile}@{installed.core or 'none'}.tar.gz"


def prune(transport: Transport, directory: str, keep: int, *, timeout: float) -> list[str]:
    """Per profile, keep the newest point of each release, for the `keep` newest releases: a
    point is the way back to its release, and a newer one of the same release is the better
    way (failed attempts at an upgrade must not push the way back out). Return what went."""
    listed = transport.run(["ls", "-1", "--", directory], timeout=timeout)
    found = [m for n in listed.text().splitlines() if (m := ARCHIVE.fullmatch(n))]
    kept: dict[str, list[str]] = {}  # profile -> releases kept, newest first
    old = []
    for match in sorted(found, key=lambda m: -int(m.group(1))):
        releases = kept.setdefault(match.group(2), [])
        if match.group(3) in releases or len(releases) >= keep:
            old.append(posixpath.join(directory, match.group(0)))
        else:
            releases.append(match.group(3))
    if old:
        _check(transport, ["rm", "-f", "--", *old], timeout)
    return old


# --- restoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """What a restore did: the points it used, and where the state it replaced now lives."""

    points: tuple[RecoveryPoint, ...]
    replaced: tuple[str, ...]

    def summary(self) -> str:
        runtime = self.points[0].runtime_version if self.points else "?"
        taken = ", ".join(sorted({p.created_at for p in self.points}))
        aside = ", ".join(self.replaced) or "nothing"
        return (
            f"state of openclaw {runtime} restored from its recovery point ({taken}); "
            f"the state it replaced is kept at {aside}"
        )


def usable(point: RecoveryPoint, host: Host, home: str) -> str | None:
    """Why a recovery point read back from the status branch (which anyone who can push may
    write) must not be restored, or None: its archive must be ours, its assets under HOME."""
    where = dirs(home)
    expected = posixpath.join(where.points, archive_name(point.seq, point.profile, point.installed))
    if point.host != host.name or point.archive != expected:
        return f"archive {point.archive} is not {expected}"
    if point.profile not in {p.key() for p in host.profiles}:
        return f"no profile {point.profile!r} on {host.name}"
    for asset in point.assets:
        if not KIND.fullmatch(asset.kind):
            return f"asset kind {asset.kind!r} is not a plain word"
        src = asset.source_path
        if posixpath.normpath(src) != src or not src.startswith(home + "/") or ROOT in src:
            return f"asset path {src!r} is not a normalised path under {home}"
        inside = asset.archive_path
        if posixpath.normpath(inside) != inside or inside.startswith(("/", "..")):
            return f"archive path {asset.archive_path!r} leaves the staging directory"
    return None


def check_points(
    host: Host, transport: Transport, points: Sequence[RecoveryPoint], *, timeout: float
) -> None:
    """Refuse (RecoveryPointUnusable) unless each point is safe and its archive on the host is
    exactly the one recorded."""
    home = facts.resolve_home(transport, timeout=timeout)
    for point in points:
        why = usable(point, host, home)
        if why is None:
            try:
                digest, size = digest_of(transport, point.archive, timeout=timeout)
            except FactParseError:
                why = f"archive {point.archive} is gone"
            else:
                if (digest, size) != (point.sha256, point.size_bytes):
                    why = f"archive {point.archive} changed since it was recorded ({digest[:12]})"
        if why is not None:
            name = f"recovery point {point.seq}/{point.profile}"
            raise RecoveryPointUnusable(transport.host, f"{name}: {why}")


def restore_state(
    fleet: Fleet, host: Host, transport: Transport, points: Sequence[RecoveryPoint]
) -> Restored:
    """With the gateways stopped and the point's core installed: the product's restore into a
    fresh directory per profile, then the swap (live state aside, restored state in)."""
    quick = seconds(fleet.ssh.command_timeout)
    where = dirs(facts.resolve_home(transport, timeout=quick))
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    replaced: list[str] = []
    staged: list[str] = []
    try:
        for point in points:
            staging = posixpath.join(where.restores, f"{point.seq}-{point.profile}-{stamp}")
            _check(transport, ["mkdir", "-p", "-m", "700", where.restores], quick)
            _product_json(
                transport,
                ["openclaw", "backup", "restore", point.archive, "--target", staging, "--json"],
                env={"OPENCLAW_STATE_DIR": posixpath.join(where.restores, ".no-live-state")},
                timeout=seconds(fleet.rollout.install_timeout),
            )
            staged.append(staging)
            aside = posixpath.join(where.replaced, f"{point.seq}-{point.profile}-{stamp}")
            for i, asset in enumerate(point.assets):
                target = posixpath.join(aside, f"{i}-{asset.kind}")
                source = posixpath.join(staging, asset.archive_path)
                swap = ["sh", "-c", SWAP_SCRIPT, "sh", asset.source_path, source, target]
                _check(transport, swap, quick)
                replaced.append(target)
    except HostError as err:
        raise RestoreFailed(
            transport.host,
            f"restore stopped: {err}; restored copies staged at {', '.join(staged) or 'nothing'}; "
            f"live state moved aside to {', '.join(replaced) or 'nothing'} (swapped so far); "
            f"archives: {', '.join(p.archive for p in points)}",
        ) from err
    return Restored(tuple(points), tuple(replaced))


# --- helpers ------------------------------------------------------------------------------------


def _product_json(
    transport: Transport, argv: list[str], *, env: Mapping[str, str], timeout: float
) -> dict[str, Any]:
    """The JSON result of a product command; the product's own words when it refuses."""
    result = transport.run(argv, timeout=timeout, env=env, max_output=facts.REPORT_OUTPUT)
    try:
        report = facts.json_object(transport.host, result, max_bytes=facts.REPORT_OUTPUT)
    except FactParseError:
        report = {}
    if not result.ok or report.get("ok") is False or not report:
        error = report.get("error")
        words = error.get("message") if isinstance(error, dict) else None
        raise CommandFailed(
            transport.host,
            f"`{describe(result.argv)}` failed (exit {result.exit_code}): "
            f"{words or facts.stderr_summary(result)}",
        )
    return report


def _list(report: Mapping[str, Any], key: str, host: str) -> list[dict[str, Any]]:
    items = report.get(key)
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and "sourcePath" in i for i in items
    ):
        shown = json.dumps(report)[:200]
        raise FactParseError(host, f"backup report has no list of {key}: {shown}")
    return items


def _check(transport: Transport, argv: list[str], timeout: float) -> CommandResult:
    result = transport.run(argv, timeout=timeout)
    if not result.ok:
        raise CommandFailed(
            transport.host,
            f"`{describe(result.argv)}` failed (exit {result.exit_code}): "
            f"{facts.stderr_summary(result)}",
        )
    return result


def restore(
    fleet: Fleet,
    host: Host,
    transport: Transport,
    points: Sequence[RecoveryPoint],
    pins: Mapping[str, str],
    *,
    lock: Lock | None = None,
    prefer_offline: bool = True,
    releases: operations.ReleaseFacts | None = None,
) -> Restored:
    """Put the host back on a recovery point, gateways left stopped for the caller to start and
    verify: check the archives and the install's preflight (the lock's integrity, engines,
    disk: `operations.install_preflight`), stop, reinstall the core, restore into fresh
    directories and swap, reinstall the plugins (archives omit their code). `pins`: core and
    plugins to end on; `prefer_offline`: from the hosts' npm cache first (a rollback must not
    wait on the registry)."""
    quick = seconds(fleet.ssh.command_timeout)
    wanted = operations.wanted_versions(pins)
    check_points(host, transport, points, timeout=quick)
    prefix = facts.resolve_prefix(transport, host, timeout=quick)
    tree = facts.installed(transport, prefix, timeout=quick)
    todo = {n: v for n, v in wanted.items() if n != CORE or tree.core != v}
    operations.install_preflight(
        fleet, host, transport, prefix, todo, core=wanted.get(CORE, tree.core), lock=lock,
        prefer_offline=prefer_offline, releases=releases,
    )  # fmt: skip
    operations.stop_host(fleet, host, transport)
    npm = operations.NpmInstaller(fleet, transport, prefix, prefer_offline)
    if CORE in wanted and tree.core != wanted[CORE]:
        npm.install({CORE: wanted[CORE]})
    restored = restore_state(fleet, host, transport, points)
    plugins = {n: v for n, v in wanted.items() if n != CORE}
    try:
        installer = operations.PluginInstaller(fleet, host, transport, prefer_offline)
        installer.install(plugins, {}, force=True)
    except HostError as err:
        raise RestoreFailed(
            transport.host, f"state restored ({restored.summary()}), plugins not: {err}"
        ) from err
    return restored
