"""The status branch is input: anyone who can push to the spec repository can write it.

A forged bookmark names skill links that are no skill links: the user's
`~/.ssh/authorized_keys` made a symlink to a file of the attacker's, and a "skill" whose target
is outside the product's state. The next restore reads that bookmark; it makes only the link
that stays inside the product's state, refuses the rest, and says so in its status record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from reconciler.sandbox.verdaccio import LocalRegistry
from tests.faults.conftest import STATUS_REF, Harness, harness, other

FAILPOINTS = "RECONCILER_FAILPOINTS"


@pytest.fixture
def h(tmp_path: Path, registry: LocalRegistry) -> Iterator[Harness]:
    with harness(tmp_path / "trust", registry, extra_rollout={"probeTimeout": "5s"}) as h:
        yield h


def forge_bookmark(h: Harness, host: str, links: dict[str, str]) -> None:
    """Rewrite the host's newest bookmark on the remote's status branch (a push by anyone)."""
    repo = h.status_repo()
    head = repo.revparse_single(STATUS_REF)
    assert isinstance(head, pygit2.Commit)
    folder = head.tree / "fleets/sandbox/bookmarks"
    assert isinstance(folder, pygit2.Tree)
    name = max(e.name or "" for e in folder if f"-{host}-" in (e.name or ""))
    path = f"fleets/sandbox/bookmarks/{name}"
    blob = head.tree / path
    assert isinstance(blob, pygit2.Blob)
    doc = json.loads(blob.data)
    doc["skillLinks"] = links
    index = pygit2.Index()
    index.read_tree(head.tree)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    who = pygit2.Signature("Mallory", "mallory@example.com")
    repo.create_commit(STATUS_REF, who, who, "tidy", index.write_tree(repo), [head.id])


def test_a_forged_bookmark_cannot_link_outside_the_products_state(h: Harness) -> None:
    mac1 = h.world.hosts[0]
    home = mac1.home
    (home / ".ssh").mkdir(exist_ok=True)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA-the-users-own-key\n")
    attacker = h.world.root / "attacker_keys"
    attacker.write_text("ssh-ed25519 AAAA-mallory\n")
    (home / ".openclaw" / "skills").mkdir(parents=True, exist_ok=True)
    (home / ".openclaw" / "skill-src").mkdir(parents=True, exist_ok=True)
    target = other("2026.4.3")
    h.world.set_faults(mac1, doctor_red=[target])
    bump = h.bump(target, message=f"openclaw {target} (mac-1 goes red)")
    killed = h.reconcile(env={FAILPOINTS: "mac-1/install:before"})
    assert killed.returncode == -9, killed.stderr
    forge_bookmark(
        h,
        "mac-1",
        {
            str(keys): str(attacker),
            f"{home}/.openclaw/skills/escape": "/etc/passwd",
            f"{home}/.openclaw/skills/../../.profile": f"{home}/.openclaw/skill-src",
            f"{home}/.openclaw/skills/ok": f"{home}/.openclaw/skill-src",
        },
    )

    done = h.reconcile()

    assert done.returncode == 2, done.stderr  # mac-1 red after its upgrade, restored
    assert not keys.is_symlink() and keys.read_text().endswith("own-key\n")
    assert not (home / ".openclaw" / "skills" / "escape").exists()
    assert not (home / ".profile").is_symlink()
    assert os.readlink(home / ".openclaw" / "skills" / "ok") == f"{home}/.openclaw/skill-src"
    restored = [s for s in h.subjects(bump, "mac-1") if "restored to openclaw" in s]
    assert restored and "refused skill links from the bookmark" in restored[-1], restored
    assert str(keys) in restored[-1] and "/etc/passwd" in restored[-1]
    h.no_secrets()
