"""The commands that install and remove packages on a host: `npm install -g` / `npm uninstall
-g` under the host's prefix, `openclaw plugins install/uninstall` in every profile, and
`openclaw update` for a managed core. `reconciler.hosts.operations.install` decides what to run;
this module only runs it, and turns a failing command into a `CommandFailed`.

* `--allow-scripts=openclaw`: npm >= 11.15 asks for it on global installs (11.19 here still runs
  an uncovered postinstall, but warns; a host configured with `strict-allow-scripts` fails
  without it). Only openclaw's scripts are allowed, nothing else's.
* `prefer_offline=True` (rollbacks) adds `--prefer-offline`: the prior versions come from the
  host's npm cache, so a registry outage cannot block going back.

Every value travels as one argv element: the transport quotes, no shell parses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.desired.spec import CORE, Fleet, Host, Profile, seconds
from reconciler.errors import CommandFailed, FactParseError
from reconciler.hosts import facts
from reconciler.hosts.transport import CommandResult, Transport, describe
from reconciler.record.documents import PluginState


@dataclass(frozen=True)
class NpmInstaller:
    """`npm install -g` / `npm uninstall -g` under one prefix from the spec's registry."""

    fleet: Fleet
    transport: Transport
    prefix: str
    prefer_offline: bool

    def _common(self) -> list[str]:
        flags = ["--prefix", self.prefix, "--registry", self.fleet.openclaw.registry]
        flags += ["--no-audit", "--no-fund"]
        return flags + (["--prefer-offline"] if self.prefer_offline else [])

    def install(self, packages: Mapping[str, str]) -> None:
        if packages:
            specs = [f"{name}@{version}" for name, version in packages.items()]
            flags = ["--allow-scripts=openclaw", "--engine-strict"]  # see the module docstring
            self._run(["npm", "install", "-g", *self._common(), *flags, *specs])

    def uninstall(self, names: Sequence[str]) -> None:
        if names:
            self._run(["npm", "uninstall", "-g", *self._common(), *names])

    def _run(self, argv: list[str]) -> None:
        timeout = seconds(self.fleet.rollout.install_timeout)
        result = self.transport.run(argv, timeout=timeout, max_output=facts.REPORT_OUTPUT)
        if not result.ok:
            raise command_failed(self.transport.host, result)


@dataclass(frozen=True)
class PluginInstaller:
    """Plugins the product's way, in every profile of the host: `openclaw plugins install
    npm:<name>@<version> --pin` (with `--force` where the profile tracks another version: the
    product refuses to replace a tracked install without it) and `plugins uninstall --force`.
    The product records the install, hot-loads it into a running gateway, and stamps the
    config with the core's version (which is why a later downgrade of the core needs its
    recovery point)."""

    fleet: Fleet
    host: Host
    transport: Transport
    prefer_offline: bool

    def install(
        self,
        packages: Mapping[str, str],
        listings: Mapping[str, Sequence[PluginState]],
        *,
        force: bool = False,
    ) -> None:
        """`force`: reinstall even what is tracked at the version (a restored state tracks
        its plugins, but archives omit their code)."""
        for profile in self.host.profiles:
            tracked = {p.name: p.version for p in listings.get(profile.key(), [])}
            for name, version in packages.items():
                if tracked.get(name) == version and not force:
                    continue
                argv = ["openclaw", "plugins", "install", f"npm:{name}@{version}", "--pin"]
                self._run(profile, argv + (["--force"] if name in tracked or force else []))

    def uninstall(
        self, names: Sequence[str], listings: Mapping[str, Sequence[PluginState]]
    ) -> None:
        for profile in self.host.profiles:
            ids = [p.id for p in listings.get(profile.key(), []) if p.name in names]
            if ids:
                self._run(profile, ["openclaw", "plugins", "uninstall", *ids, "--force"])

    def _run(self, profile: Profile, argv: list[str]) -> None:
        env = facts.profile_env(profile) | {"npm_config_registry": self.fleet.openclaw.registry}
        if self.prefer_offline:
            env["npm_config_prefer_offline"] = "true"
        timeout = seconds(self.fleet.rollout.install_timeout)
        result = self.transport.run(argv, timeout=timeout, env=env, max_output=facts.REPORT_OUTPUT)
        if not result.ok:
            raise command_failed(self.transport.host, result)


def install_core(
    fleet: Fleet,
    transport: Transport,
    npm: NpmInstaller,
    version: str,
    *,
    fresh: bool,
    managed: bool = False,
) -> None:
    """The core by the spec's method (`managed`: with `openclaw update`); `openclaw update`
    needs an openclaw, so a fresh host (or the npm method) installs with npm."""
    if fresh or (fleet.openclaw.install == "npm" and not managed):
        npm.install({CORE: version})
        return
    env = {"npm_config_registry": fleet.openclaw.registry}
    if npm.prefer_offline:
        env["npm_config_prefer_offline"] = "true"
    argv = ["openclaw", "update", "--tag", version, "--json", "--yes", "--no-restart"]
    timeout = seconds(fleet.rollout.install_timeout)
    result = transport.run(argv, timeout=timeout, env=env, max_output=facts.REPORT_OUTPUT)
    check_update(transport.host, result)


def check_update(host: str, result: CommandResult) -> None:
    """`openclaw update --json` reports `status` ok/skipped/error (and a reason)."""
    try:
        report = facts.json_object(host, result, max_bytes=facts.REPORT_OUTPUT)
    except FactParseError:
        raise command_failed(host, result) from None
    if report.get("status") != "ok":
        failed = report.get("failedStep")
        words = failed.get("stderrTail") if isinstance(failed, dict) else None
        words = words.splitlines()[0] if isinstance(words, str) and words.strip() else None
        reason = (
            report.get("message") or words or report.get("reason") or facts.stderr_summary(result)
        )
        raise CommandFailed(
            host, f"`{describe(result.argv)}` ended with status {report.get('status')!r}: {reason}"
        )


def command_failed(host: str, result: CommandResult) -> CommandFailed:
    return CommandFailed(
        host,
        f"`{describe(result.argv)}` failed (exit {result.exit_code}): "
        f"{facts.stderr_summary(result)}",
    )
