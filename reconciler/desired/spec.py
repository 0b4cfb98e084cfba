"""The fleet spec: desired state as frozen pydantic models.

These models are the single source of truth for `fleet.yaml`: the JSON Schema in schemas/ is
generated from them, and every string that can reach a command line is constrained here by a
pattern, so a value with shell metacharacters never gets past loading. Keys are camelCase in
YAML (like Kubernetes and Flux) and snake_case in Python.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from reconciler.desired.versions import EXACT_SEMVER, OPENCLAW_VERSION

API_VERSION: Literal["reconciler.openclaw.ai/v1"] = "reconciler.openclaw.ai/v1"
CORE = "openclaw"
"""The core's npm package: `openclaw.version` pins it, every other pin is a plugin."""

# Strings that reach a shell or a command line: no whitespace, quotes, `$`, `;`, `|`, `&`,
# backticks, globs, redirections or newlines. A single value never starts with `-`, so it can
# never be read as an option (`service: --host=evil`); only the arguments after the program in
# an argv the spec writes out in full (restartCommand, LB commands) may be options.
SAFE = r"^[A-Za-z0-9._:/@+=,%~][A-Za-z0-9._:/@+=,%~-]*$"
ARG = r"^[A-Za-z0-9._:/@+=,%~-]+$"
NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$"
NPM_NAME = r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
# A normalised absolute path (or one under ~): no `.` or `..` segment, no `//`, no trailing `/`.
_C, _N = "[A-Za-z0-9._@+=,%~-]", "[A-Za-z0-9_@+=,%~-]"  # a path character; one but a dot
_SEGMENT = rf"({_N}{_C}*|\.{_N}{_C}*|\.\.{_C}+)"  # any name but `.` and `..`
ABS_PATH = rf"^(/|~/?|~?(/{_SEGMENT})+)$"
URL = r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/%@+=-]*)?$"
DURATION = r"^[0-9]{1,12}(ms|s|m|h)$"
CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
USER = r"^[a-z_][a-z0-9_.-]{0,31}$"
ZONE = r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$"

TEMPLATE = r"^[A-Za-z0-9._:/@+=,%~{}-]+$"

SafeStr = Annotated[str, Field(pattern=SAFE, max_length=256)]
Name = Annotated[str, Field(pattern=NAME, max_length=63)]
OpenClawVersion = Annotated[str, Field(pattern=OPENCLAW_VERSION)]
ExactVersion = Annotated[str, Field(pattern=EXACT_SEMVER, max_length=64)]
NpmName = Annotated[str, Field(pattern=NPM_NAME, max_length=214)]
EnvName = Annotated[str, Field(pattern=ENV_NAME, max_length=128)]
AbsPath = Annotated[str, Field(pattern=ABS_PATH, max_length=1024)]
Url = Annotated[str, Field(pattern=URL, max_length=2048)]
MAX_DURATION_S = 7 * 86400


def _at_most_a_week(value: str | int) -> str | int:
    if seconds(value) > MAX_DURATION_S:
        raise ValueError(f"expected a duration of at most 7 days (168h), got {value!r}")
    return value


def _not_an_option(argv: list[str]) -> list[str]:
    if argv and argv[0].startswith("-"):
        raise ValueError(f"expected a program to run first, not an option: {argv[0]!r}")
    return argv


Duration = Annotated[
    Annotated[str, Field(pattern=DURATION)] | Annotated[int, Field(ge=0, le=MAX_DURATION_S)],
    AfterValidator(_at_most_a_week),
    Field(description="seconds, or a string like 30s, 5m, 1h; at most 7 days"),
]
Percent = Annotated[int, Field(ge=0, le=100)]
Weight = Annotated[int, Field(ge=0, le=100, description="LB weight (0-100)")]
Argv = Annotated[
    list[Annotated[str, Field(pattern=ARG, max_length=256)]],
    Field(min_length=1, max_length=64),
    AfterValidator(_not_an_option),
]
ArgvTemplate = Annotated[
    list[Annotated[str, Field(pattern=TEMPLATE, max_length=256)]],
    Field(min_length=1, max_length=64),
    AfterValidator(_not_an_option),
]

Role = Literal["canary", "stable", "witness"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Event = Literal["failure", "success", "drift", "gate"]

_FAILURE_ONLY: list[Event] = ["failure"]
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(value: str | int) -> float:
    """A spec duration (`90`, `30s`, `5m`, `1h`, `250ms`) in seconds."""
    if isinstance(value, int):
        return float(value)
    match = re.fullmatch(r"([0-9]+)(ms|s|m|h)", value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 30s, 5m, 1h)")
    return int(match.group(1)) * _UNITS[match.group(2)]


class Model(BaseModel):
    """Base of every document: frozen, camelCase aliases, unknown keys refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )

    def dump(self) -> dict[str, object]:
        """The JSON form, as written to files (aliases, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _names_as_property_names(schema: dict[str, Any]) -> None:
    """Publish key rules as `propertyNames`, so a bad plugin name is an error of its own
    (pydantic emits `patternProperties`, which silently lets other names through)."""
    ((pattern, value),) = schema.pop("patternProperties").items()
    schema["propertyNames"] = {"pattern": pattern, "maxLength": 214}
    schema["additionalProperties"] = value


class OpenClaw(Model):
    """What to install: the core at an exact version and plugins pinned exactly."""

    version: OpenClawVersion = Field(description="exact OpenClaw core version, e.g. 2026.4.3")
    plugins: dict[NpmName, ExactVersion] = Field(
        default_factory=dict,
        description="plugin npm name -> exact version",
        json_schema_extra=_names_as_property_names,
    )
    install: Literal["npm", "openclaw-update"] = Field(
        "npm", description="`npm i -g` (the runbook) or the product's own `openclaw update`"
    )
    registry: Url = Field(description="npm registry the hosts install from")


class Window(Model):
    """A maintenance window in which a rollout may start or advance (Argo CD sync windows)."""

    kind: Literal["allow", "deny"] = "allow"
    days: list[Day] = Field(default_factory=lambda: list(get_args(Day)), min_length=1)
    start: Annotated[str, Field(pattern=CLOCK)] = Field(description="HH:MM local time")
    duration: Duration = Field(description="how long the window stays open")
    timezone: Annotated[str, Field(pattern=ZONE)] = "UTC"


class Analysis(Model):
    """Canary analysis over each soak, from the load balancer's counters."""

    max_5xx_ratio: Annotated[float, Field(ge=0, le=1, alias="max5xxRatio")] = 0.05
    min_requests: Annotated[int, Field(ge=0)] = Field(
        0, description="requests a soak window needs to judge (fewer, or none: inconclusive)"
    )
    inconclusive: Literal["pass", "hold", "fail"] = Field(
        "pass",
        description="what a soak that could not judge does: pass (recorded as inconclusive, "
        "never as passed; small fleets often see no traffic in a window, and a hold would stop "
        "every such rollout), hold (soak on until enough requests came), fail (red, restored)",
    )


class Rollout(Model):
    """How a new desired state reaches the hosts."""

    strategy: Literal["rolling", "all-at-once"] = "rolling"
    order: list[Name] | None = Field(None, description="explicit host order (overrides roles)")
    roles: list[Role] = Field(default_factory=lambda: list(get_args(Role)), min_length=1)
    steps: list[Percent] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        description="weight steps in percent of each profile's desired weight; must end at 100",
    )
    soak: Duration = Field("60s", description="pause after each weight step")
    drain_timeout: Duration = "5m"
    probe_timeout: Duration = "2m"
    install_timeout: Duration = "10m"
    doctor_threshold: Literal["warning", "error"] = Field(
        "error", description="a doctor finding at or above this severity makes a host red"
    )
    min_free_disk_mb: Annotated[int, Field(ge=0)] = 1024
    max_unavailable: Annotated[int, Field(ge=1, le=1000)] = Field(
        1,
        description="hosts out of service at once, counting those already out whatever took "
        "them out (a rolling rollout holds before draining another); all-at-once ignores it",
    )
    keep_recovery_points: Annotated[int, Field(ge=1, le=100)] = Field(
        3,
        description="releases a host keeps a recovery point (verified backup) of, the newest "
        "point of each; older ones are pruned",
    )
    self_heal: bool = Field(False, description="re-converge hosts that drift while Complete")
    analysis: Analysis = Field(default_factory=Analysis)


class LoadBalancer(Model):
    """Where traffic weights live: HAProxy's runtime API, a weights file, or commands."""

    driver: Literal["haproxy", "file", "command"]
    address: SafeStr | None = Field(
        None, description="haproxy: unix:///path or tcp://host:port; file: path of the JSON file"
    )
    backend: SafeStr | None = Field(None, description="haproxy backend holding the servers")
    commands: dict[Literal["get", "set", "stats"], ArgvTemplate] | None = Field(
        None, description="command driver: argv per operation ({server} and {weight} filled in)"
    )
    pass_env: list[EnvName] = Field(
        default_factory=list,
        description="command driver: environment variables its commands receive, besides "
        "PATH, HOME and LANG (nothing else of the reconciler's environment reaches them)",
    )
    timeout: Duration = "10s"


class Notification(Model):
    """A failure broadcast target."""

    type: Literal["webhook", "slack"]
    url: Url | None = None
    url_env: EnvName | None = Field(None, description="read the URL from this env var")
    secret_env: EnvName | None = Field(None, description="HMAC secret from this env var")
    secret_file: AbsPath | None = Field(None, description="HMAC secret from this file")
    events: list[Event] = Field(default_factory=lambda: _FAILURE_ONLY.copy())


Forge = Literal["github", "gitea", "gitlab"]
_REPO_SEGMENT = r"[A-Za-z0-9_.-]+"


def repository_problem(forge: Forge, repository: str) -> str | None:
    """Why `repository` cannot name a repository on `forge`, in words; None when it can."""
    if forge == "gitlab":
        if re.fullmatch(rf"[0-9]+|{_REPO_SEGMENT}(/{_REPO_SEGMENT})+", repository):
            return None
        return f"expected a GitLab project's path (group/project) or its number, got {repository!r}"
    if re.fullmatch(rf"{_REPO_SEGMENT}/{_REPO_SEGMENT}", repository):
        return None
    return f"expected OWNER/NAME on {forge}, got {repository!r}"


class CommitStatus(Model):
    """A rollout's outcome as a commit status on the spec commit it applied
    (reconciler.forge.client)."""

    forge: Forge = Field(description="github, gitea (also Forgejo) or gitlab")
    api: Url = Field(
        description="the API root: https://api.github.com (GitHub Enterprise: "
        "https://HOST/api/v3), https://HOST/api/v1 (Gitea, Forgejo), https://HOST/api/v4 (GitLab)"
    )
    repository: SafeStr = Field(
        description="OWNER/NAME; on GitLab the project's path (group/project) or its number"
    )
    token_env: EnvName | None = Field(None, description="the API token from this env var")
    token_file: AbsPath | None = Field(None, description="the API token from this file")
    context: SafeStr | None = Field(
        None, description="the status's name (GitLab: name); default openclaw-reconciler/<fleet>"
    )
    target_url: Url | None = Field(None, description="where the status links to")
    timeout: Duration = "10s"

    @model_validator(mode="after")
    def _one_token_and_a_repository(self) -> CommitStatus:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("set exactly one of tokenEnv or tokenFile")
        problem = repository_problem(self.forge, self.repository)
        if problem is not None:
            raise ValueError(f"repository: {problem}")
        return self


class Profile(Model):
    """One OpenClaw gateway on a host: the unit of traffic and of doctor."""

    name: Name | None = Field(None, description="profile name; omitted for the default profile")
    port: Annotated[int, Field(ge=1, le=65535)] = 18789
    service: SafeStr | None = Field(
        None, description="launchd label or systemd unit; derived from the profile when omitted"
    )
    lb_server: SafeStr | None = Field(None, description="LB server name; defaults to host name")
    weight: Weight = Field(100, description="desired LB weight when fully ramped")

    def key(self) -> str:
        return self.name or "default"


class Host(Model):
    """One machine: the unit of install (one global npm tree)."""

    name: Name
    address: Annotated[str, Field(pattern=HOSTNAME, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(pattern=USER)]
    role: Role = "stable"
    transport: Literal["ssh", "local"] = Field(
        "ssh", description="ssh, or local: run on the reconciler's own machine (the sandbox)"
    )
    home: AbsPath | None = Field(None, description="HOME for the local transport")
    service_manager: Literal["launchd", "systemd", "command"] = "launchd"
    restart_command: Argv | None = Field(None, description="argv when serviceManager is command")
    stop_command: Argv | None = Field(
        None,
        description="argv that stops the gateways when serviceManager is command (a restore "
        "from a recovery point swaps the state with the gateway stopped)",
    )
    npm_prefix: AbsPath | None = Field(None, description="npm global prefix (`npm -g --prefix`)")
    path: list[AbsPath] = Field(default_factory=list, description="dirs prepended to PATH")
    profiles: list[Profile] = Field(default_factory=lambda: [Profile()], min_length=1)


def server_name(host: Host, profile: Profile) -> str:
    """The LB server of a profile: explicit, else the host name (suffixed for named profiles)."""
    if profile.lb_server:
        return profile.lb_server
    return host.name if profile.name is None else f"{host.name}-{profile.name}"


class Ssh(Model):
    """How the reconciler reaches hosts. Host keys are pinned in a reviewed file."""

    known_hosts: SafeStr = Field("known_hosts", description="path relative to the spec file")
    key_file: AbsPath | None = None
    key_env: EnvName | None = Field(None, description="private key path from this env var")
    connect_timeout: Duration = "10s"
    command_timeout: Duration = "2m"


class Fleet(Model):
    """One fleet: `fleet.yaml`."""

    api_version: Literal["reconciler.openclaw.ai/v1"] = API_VERSION
    kind: Literal["Fleet"] = "Fleet"
    name: Name
    openclaw: OpenClaw
    rollout: Rollout = Field(default_factory=Rollout)
    windows: list[Window] = Field(default_factory=list)
    load_balancer: LoadBalancer
    notifications: list[Notification] = Field(default_factory=list)
    commit_status: CommitStatus | None = Field(
        None, description="post each rollout's outcome as a commit status on its spec commit"
    )
    ssh: Ssh = Field(default_factory=Ssh)
    hosts: list[Host] = Field(min_length=1)

    def host(self, name: str) -> Host:
        return self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    def profiles(self) -> Iterator[tuple[Host, Profile]]:
        for host in self.hosts:
            for profile in host.profiles:
                yield host, profile

    def packages(self) -> dict[str, str]:
        """Every pinned package, core first: npm name -> exact version."""
        return {CORE: self.openclaw.version, **self.openclaw.plugins}


class Pin(Model):
    """One package at one exact version; install order is list order (core first)."""

    name: str
    version: str


def pins(packages: Mapping[str, str]) -> list[Pin]:
    return [Pin(name=n, version=v) for n, v in packages.items()]
