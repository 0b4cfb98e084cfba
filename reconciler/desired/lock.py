"""`openclaw.lock`: the runbook's lock, made concrete.

OpenClaw itself has no lock file; this one is ours. It records what every pin in the spec
resolved to in the registry (exact version, tarball integrity, the ranges that decide
compatibility) and a digest of the pins it was made from, so `validate` can tell when a spec
change left the lock stale. The file is deterministic JSON carrying a sha256 of its own
canonical form (without that field), so hand edits are detected too.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field

from reconciler.canonical import pretty_bytes, sha256_of
from reconciler.desired.spec import CORE, ExactVersion, Fleet, Model, Name, NpmName

LOCK_FILE = "openclaw.lock"
SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class LockedPackage(Model):
    """One pin as the registry resolved it."""

    name: NpmName
    version: ExactVersion
    integrity: Annotated[str, Field(pattern=r"^sha(256|384|512)-[A-Za-z0-9+/=]+$")]
    engines_node: str | None = Field(None, description="the release's engines.node range")
    peer_openclaw: str | None = Field(None, description="peerDependencies.openclaw")
    plugin_api: str | None = Field(None, description="openclaw.compat.pluginApi")
    min_host_version: str | None = Field(None, description="openclaw.install.minHostVersion")


class Lock(Model):
    """The whole lock file."""

    lock_version: Literal[1] = 1
    fleet: Name
    spec_digest: SHA256 = Field(description="sha256 of the pins this lock was resolved from")
    packages: list[LockedPackage] = Field(description="core first, then plugins by name")
    sha256: SHA256 = Field(description="sha256 of this document's canonical form without it")

    def package(self, name: str) -> LockedPackage | None:
        return next((p for p in self.packages if p.name == name), None)

    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in self.packages}

    def self_digest(self) -> str:
        body = self.dump()
        body.pop("sha256", None)
        return sha256_of(body)

    def to_bytes(self) -> bytes:
        return pretty_bytes(self.dump())


def spec_digest(fleet: Fleet) -> str:
    """Digest of exactly what the lock resolves: changing anything else keeps the lock fresh."""
    return sha256_of(
        {
            "registry": fleet.openclaw.registry,
            "install": fleet.openclaw.install,
            "packages": fleet.packages(),
        }
    )


def build_lock(fleet: Fleet, packages: list[LockedPackage]) -> Lock:
    """Assemble a lock with its packages in canonical order and its digest filled in."""
    ordered = sorted(packages, key=lambda p: (p.name != CORE, p.name))
    draft = {
        "lockVersion": 1,
        "fleet": fleet.name,
        "specDigest": spec_digest(fleet),
        "packages": [p.dump() for p in ordered],
    }
    return Lock.model_validate({**draft, "sha256": sha256_of(draft)})


def parse_lock(data: bytes) -> Lock:
    """Parse lock bytes (raises ValueError or pydantic.ValidationError)."""
    return Lock.model_validate(json.loads(data))
