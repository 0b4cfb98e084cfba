"""The daemon's settings: a YAML file (deploy/config.example.yaml documents every key), with
`RECONCILER_*` environment variables overriding it. Secrets are only ever referenced (an env
var name or a file path), never written in the file, and never logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.desired import signatures
from reconciler.desired.spec import EnvName, Model, Name
from reconciler.errors import ConfigError as ConfigError
from reconciler.record.gitstore import SshAccess

Provider = Literal["github", "gitea", "gitlab"]


class SecretRef(Model):
    env: EnvName | None = None
    file: str | None = None

    def read(self) -> bytes | None:
        if self.env:
            value = os.environ.get(self.env, "")
            return value.encode() if value else None
        if self.file:
            return Path(self.file).expanduser().read_bytes().strip() or None
        return None


class Http(Model):
    bind: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9410
    page: bool = Field(True, description="serve the fleet page at /")
    page_token: SecretRef | None = Field(
        None, description="a bearer token the page requires (env or file), as for webhooks"
    )


class SshKey(Model):
    file: str | None = None


class GitSsh(Model):
    """`gitSsh`: how to reach an SSH spec remote (`ssh://` or `user@host:path`)."""

    key_file: str = Field(description="private key offered to the remote, nothing else")
    known_hosts: str = Field(description="the remote's pinned host key; no other file is read")

    def access(self) -> SshAccess:
        return SshAccess(Path(self.key_file).expanduser(), Path(self.known_hosts).expanduser())


class SignerConfig(Model):
    """`trustedSigners`: who may sign the head of the watched branch
    (reconciler.desired.signatures)."""

    ssh_allowed_signers: str | None = None
    gpg_keyring: str | None = None
    gpg_fingerprints: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_key(self) -> SignerConfig:
        if not self.ssh_allowed_signers and not self.gpg_keyring:
            raise ValueError("name sshAllowedSigners (a file) or gpgKeyring (a file)")
        return self


class Config(Model):
    remote: str
    branch: str = "main"
    fleets: list[Name] = Field(min_length=1)
    cache: str = "~/.cache/openclaw-reconciler/daemon"
    poll_interval: Annotated[float, Field(gt=0)] = 60.0
    jitter: Annotated[float, Field(ge=0)] = 0.0
    http: Http = Field(default_factory=Http)
    webhook_secrets: dict[Provider, SecretRef] = Field(default_factory=dict)
    ssh_key: SshKey = Field(default_factory=SshKey)
    git_ssh: GitSsh | None = None
    lease: Annotated[float, Field(gt=0)] = 120.0
    trusted_signers: SignerConfig | None = None

    def secrets(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for provider, ref in self.webhook_secrets.items():
            value = ref.read()
            if value:
                out[provider] = value
        return out


_OVERRIDES: dict[str, tuple[str, ...]] = {
    "RECONCILER_REMOTE": ("remote",),
    "RECONCILER_BRANCH": ("branch",),
    "RECONCILER_FLEETS": ("fleets",),
    "RECONCILER_CACHE": ("cache",),
    "RECONCILER_POLL_INTERVAL": ("pollInterval",),
    "RECONCILER_JITTER": ("jitter",),
    "RECONCILER_HTTP_BIND": ("http", "bind"),
    "RECONCILER_HTTP_PORT": ("http", "port"),
    "RECONCILER_SSH_KEY_FILE": ("sshKey", "file"),
    "RECONCILER_GIT_SSH_KEY_FILE": ("gitSsh", "keyFile"),
    "RECONCILER_GIT_KNOWN_HOSTS": ("gitSsh", "knownHosts"),
    "RECONCILER_TRUSTED_SIGNERS": ("trustedSigners", "sshAllowedSigners"),
}


def _apply_env(doc: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    for name, path in _OVERRIDES.items():
        if name not in env:
            continue
        value: Any = env[name]
        if path == ("fleets",):
            value = [v.strip() for v in value.split(",") if v.strip()]
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return doc


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    try:
        raw = YAML(typ="safe").load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {_yaml_error(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    doc = _apply_env(raw, os.environ if env is None else env)
    try:
        config = Config.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    return config


def _yaml_error(exc: YAMLError) -> str:
    """A YAML error in one line: where, and what (ruamel's own text spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def check_secret_files(path: Path, config: Config) -> None:
    """A secret file that cannot be read stops the daemon at start, naming the key (never the
    secret), instead of failing at the first webhook. (Not part of loading: a configuration is
    also read where its secrets are not mounted, to check its shape.)"""
    for provider, ref in config.webhook_secrets.items():
        try:
            ref.read()
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"{path}: webhookSecrets.{provider}.file: cannot read {ref.file}: {why}"
            ) from None


def policy_from_config(config: SignerConfig | None) -> signatures.SignaturePolicy | None:
    """The policy of the daemon's `trustedSigners` (None when it has none)."""
    if config is None:
        return None
    return signatures.load_policy(
        ssh_allowed_signers=Path(config.ssh_allowed_signers)
        if config.ssh_allowed_signers
        else None,
        gpg_keyring=Path(config.gpg_keyring) if config.gpg_keyring else None,
        gpg_fingerprints=config.gpg_fingerprints,
    )
