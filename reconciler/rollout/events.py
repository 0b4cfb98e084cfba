"""What the reconciler says happened, for whoever listens: a failure, a success, drift, a
held gate.

The rollout emits them (`Driver.event`); `reconciler.serve.notify` delivers them to webhooks,
Slack and commit statuses. They live here, beside what emits them, so the rollout depends on
nothing of the daemon's.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field

from reconciler.desired.spec import Model

EventKind = Literal["failure", "success", "drift", "gate"]


class Event(Model):
    """What a broadcast carries."""

    kind: EventKind
    fleet: str
    message: str
    host: str | None = None
    phase: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    finding: str | None = Field(None, description="the first failing doctor finding")
    spec_commit: str | None = None
    status_commit: str | None = None
    at: str


class Notifier(Protocol):
    def notify(self, event: Event) -> None: ...
