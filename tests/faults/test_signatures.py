"""Commit-signature verification of the watched branch (issue 8), on real parts.

Keys are made by ssh-keygen (and gpg) in the test's directory, commits are signed for real,
by `git commit -S` (the way an operator signs) or by `ssh-keygen -Y sign -n git` over the
commit pygit2 builds (the way the World's operator pushes), and checked by the real ssh-keygen
and gpg. Nothing is mocked.

- `verify()`: a trusted signature (principal and fingerprint), unsigned, a key not in the
  file (its fingerprint named), a signature moved over from another commit, a signature for
  another namespace, plain public-key lines; malformed signers files (file:line: what was
  expected); ssh-keygen missing or too slow is an error, never a pass; GPG likewise.
- the engine (a 2-host local World): an unsigned head and a head signed by an untrusted key
  are recorded as invalid with the reason, applied nowhere (hosts, weights untouched),
  broadcast once; the next pass writes nothing; a trusted-signed commit then rolls out.
- the CLI: `reconcile --once --trusted-signers FILE` refuses an unsigned head (exit 2, the
  reason, one broadcast from a fresh process); a malformed file stops it before anything.
- the daemon: `trustedSigners` and RECONCILER_TRUSTED_SIGNERS; a bad file stops `run`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.desired.signatures import (
    Refused,
    SignaturePolicy,
    SignatureTimeout,
    SignatureToolError,
    SignersFileError,
    Verified,
    load_policy,
)
from reconciler.record.gitstore import GitStore
from reconciler.rollout.engine import Engine, PassResult
from reconciler.sandbox.verdaccio import LocalRegistry
from reconciler.sandbox.world import OPERATOR, PLUGINS, World
from reconciler.serve.config import ConfigError, load_config, policy_from_config
from reconciler.serve.daemon import engine_for, run_until_settled
from tests.faults.conftest import ROOT, STATUS_REF, installed, trailers
from tests.fixtures.webhook import Receiver, start_receiver

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
PRINCIPAL = "operator@example.com"
TIMEOUT = 60


# --- keys and signed commits ---------------------------------------------------------------------


def keygen(path: Path, comment: str) -> Path:
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=TIMEOUT)
    return path


def public(key: Path) -> str:
    return Path(f"{key}.pub").read_text().strip()


def ssh_fingerprint(key: Path) -> str:
    """The key's fingerprint as ssh-keygen itself prints it (not our own computation)."""
    done = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done.stdout.split()[1]


def allowed_signers(path: Path, *keys: Path) -> Path:
    key_type_and_key = [" ".join(public(k).split()[:2]) for k in keys]
    lines = ["# who may sign the spec branch", *(f"{PRINCIPAL} {k}" for k in key_type_and_key)]
    path.write_text("\n".join(lines) + "\n")
    return path


def ssh_sign(data: bytes, key: Path, namespace: str = "git") -> str:
    done = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", namespace, "-f", str(key)],
        input=data,
        capture_output=True,
        check=True,
        timeout=TIMEOUT,
    )
    return done.stdout.decode()


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=Operator",
            "-c",
            f"user.email={PRINCIPAL}",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **GIT_ENV, **(env or {})},
    )
    return done.stdout.strip()


def git_commit(repo: Path, name: str, *sign: str, env: Mapping[str, str] | None = None) -> str:
    """A commit made by the git CLI: unsigned, or signed with `-c ... commit -S`."""
    (repo / name).write_text(f"{name}\n")
    git(repo, "add", name)
    git(repo, *sign, "commit", "-q", *(["-S"] if sign else []), "-m", f"add {name}", env=env)
    return git(repo, "rev-parse", "HEAD")


def ssh_signing(key: Path) -> tuple[str, ...]:
    return ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}")


def with_signature_of(repo: pygit2.Repository, donor: str, message: str) -> str:
    """A new commit (other tree, other message) carrying the signature of `donor`: the
    signature is genuine, but over another commit's data."""
    signature, _ = repo.get(donor).gpg_signature
    assert signature, f"{donor} is not signed"
    index = pygit2.Index()
    index.add(
        pygit2.IndexEntry("planted", repo.create_blob(b"planted\n"), pygit2.enums.FileMode.BLOB)
    )
    tree = index.write_tree(repo)
    content = repo.create_commit_string(OPERATOR, OPERATOR, message, tree, [pygit2.Oid(hex=donor)])
    return str(repo.create_commit_with_signature(content, signature.decode()))


@dataclass
class Keys:
    trusted: Path
    stranger: Path
    signers: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    trusted = keygen(tmp_path / "operator", "operator-laptop")
    stranger = keygen(tmp_path / "stranger", "stranger")
    return Keys(trusted, stranger, allowed_signers(tmp_path / "allowed_signers", trusted))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "spec"
    subprocess.run(
        ["git", "init", "-q", "-b", "main", str(path)],
        check=True,
        timeout=TIMEOUT,
        env={**os.environ, **GIT_ENV},
    )
    return path


# --- verify(): SSH -------------------------------------------------------------------------------


def test_a_commit_signed_by_a_trusted_key_is_verified(keys: Keys, repo: Path) -> None:
    commit = git_commit(repo, "fleet.yaml", *ssh_signing(keys.trusted))
    verdict = load_policy(ssh_allowed_signers=keys.signers).verify(pygit2.Repository(repo), commit)
    assert verdict == Verified(commit, "ssh", PRINCIPAL, ssh_fingerprint(keys.trusted))
    assert verdict.problem is None


def test_an_unsigned_commit_is_refused(keys: Keys, repo: Path) -> None:
    commit = git_commit(repo, "fleet.yaml")
    verdict = load_policy(ssh_allowed_signers=keys.signers).verify(pygit2.Repository(repo), commit)
    assert verdict == Refused(commit, "unsigned")
    assert verdict.problem == f"commit {commit[:12]} is not signed by a trusted key: unsigned"


def test_a_commit_signed_by_a_key_not_in_the_file_names_that_key(keys: Keys, repo: Path) -> None:
    commit = git_commit(repo, "fleet.yaml", *ssh_signing(keys.stranger))
    verdict = load_policy(ssh_allowed_signers=keys.signers).verify(pygit2.Repository(repo), commit)
    assert isinstance(verdict, Refused)
    assert verdict.reason == f"signed by an untrusted key {ssh_fingerprint(keys.stranger)}"
    # The same commit passes once that key is trusted: the refusal was about trust alone.
    both = allowed_signers(keys.signers.parent / "both", keys.trusted, keys.stranger)
    assert load_policy(ssh_allowed_signers=both).verify(pygit2.Repository(repo), commit).trusted


def test_a_signature_moved_over_from_another_commit_is_a_bad_signature(
    keys: Keys, repo: Path
) -> None:
    donor = git_commit(repo, "fleet.yaml", *ssh_signing(keys.trusted))
    r = pygit2.Repository(repo)
    forged = with_signature_of(r, donor, "openclaw 2026.4.4 (not what was signed)")
    assert r.get(forged).gpg_signature[0] == r.get(donor).gpg_signature[0]
    policy = load_policy(ssh_allowed_signers=keys.signers)
    assert policy.verify(r, donor).trusted
    verdict = policy.verify(r, forged)
    assert isinstance(verdict, Refused)
    assert verdict.reason.startswith("bad signature ("), verdict.reason
    assert "incorrect signature" in verdict.reason, verdict.reason


def test_a_signature_made_for_another_namespace_is_refused(keys: Keys, repo: Path) -> None:
    git_commit(repo, "fleet.yaml")
    r = pygit2.Repository(repo)
    index = pygit2.Index()
    index.read_tree(r.head.peel(pygit2.Commit).tree)
    tree = index.write_tree(r)
    content = r.create_commit_string(OPERATOR, OPERATOR, "signed as a file", tree, [r.head.target])
    signature = ssh_sign(content.encode(), keys.trusted, namespace="file")
    commit = str(r.create_commit_with_signature(content, signature))
    verdict = load_policy(ssh_allowed_signers=keys.signers).verify(r, commit)
    assert isinstance(verdict, Refused)
    assert verdict.reason.startswith("bad signature (") and "namespace" in verdict.reason


def test_plain_public_key_lines_and_options_are_accepted(keys: Keys, repo: Path) -> None:
    commit = git_commit(repo, "fleet.yaml", *ssh_signing(keys.trusted))
    plain = keys.signers.parent / "plain"
    plain.write_text(f"\n{public(keys.stranger)}\n{public(keys.trusted)}\n")
    verdict = load_policy(ssh_allowed_signers=plain).verify(pygit2.Repository(repo), commit)
    assert verdict == Verified(commit, "ssh", "operator-laptop", ssh_fingerprint(keys.trusted))

    # An allowed_signers option is honoured by ssh-keygen: a key for `file` only cannot sign git.
    limited = keys.signers.parent / "limited"
    trusted = " ".join(public(keys.trusted).split()[:2])
    limited.write_text(f'{PRINCIPAL} namespaces="file" {trusted}\n')
    verdict = load_policy(ssh_allowed_signers=limited).verify(pygit2.Repository(repo), commit)
    assert isinstance(verdict, Refused)
    assert f"{limited}:1: key is not permitted" in verdict.reason, verdict.reason
    limited.write_text(f'{PRINCIPAL} namespaces="file,git" {trusted}\n')
    assert load_policy(ssh_allowed_signers=limited).verify(pygit2.Repository(repo), commit).trusted


def ed25519(keys: Keys) -> str:
    return public(keys.trusted).split()[1]


MALFORMED: dict[str, tuple[str, str]] = {
    # case -> (file text, what the error says after `file:line:`)
    "empty": ("# nobody yet\n\n", "no trusted key in the file"),
    "no key": ("# ops\nops@example.com\n", "2: no SSH public key on the line"),
    "garbage": ("ops@example.com trust me\n", "1: no SSH public key on the line"),
    "bad base64": ("ops@example.com ssh-ed25519 not!base64\n", "1: the key is not valid base64"),
    "type mismatch": ("\nops@example.com ssh-rsa {key}\n", "2: the key is a 'ssh-ed25519' key"),
    "unknown option": ('ops@example.com trust="all" ssh-ed25519 {key}\n', "1: unknown option"),
    "open quote": ('ops@example.com namespaces="git ssh-ed25519 {key}\n', "1: unterminated quote"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_signers_file_is_a_config_error_with_file_and_line(
    keys: Keys, case: str
) -> None:
    text, expected = MALFORMED[case]
    path = keys.signers.parent / "signers"
    path.write_text(text.replace("{key}", ed25519(keys)))
    with pytest.raises(SignersFileError) as caught:
        load_policy(ssh_allowed_signers=path)
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    assert expected in message, message
    assert isinstance(caught.value, ConfigError)


def test_a_missing_or_unreadable_signers_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SignersFileError, match="cannot read the trusted signers: No such file"):
        load_policy(ssh_allowed_signers=tmp_path / "nowhere")
    with pytest.raises(SignersFileError, match="not UTF-8"):
        (tmp_path / "binary").write_bytes(b"# ok\n\xff\xfe\n")
        load_policy(ssh_allowed_signers=tmp_path / "binary")


def test_ssh_keygen_missing_or_too_slow_is_an_error_never_a_pass(
    keys: Keys, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = git_commit(repo, "fleet.yaml", *ssh_signing(keys.trusted))
    r = pygit2.Repository(repo)
    policy = load_policy(ssh_allowed_signers=keys.signers)
    with pytest.raises(SignatureTimeout, match="ran past"):
        replace(policy, timeout_s=1e-6).verify(r, commit)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SignatureToolError, match="ssh-keygen not found on PATH"):
        policy.verify(r, commit)
    with pytest.raises(SignersFileError, match=r"ssh-keygen .* is not on PATH"):
        load_policy(ssh_allowed_signers=keys.signers)


# --- verify(): GPG -------------------------------------------------------------------------------


def gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--batch", "--no-tty", "--homedir", str(home), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done.stdout


def gpg_key(home: Path, uid: str) -> str:
    gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
    listing = gpg(home, "--with-colons", "--list-keys", uid)
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


@pytest.fixture
def gnupg(tmp_path: Path) -> Iterator[Path]:
    """A GnuPG home for signing; its agent (started by the signing) is stopped at the end."""
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    try:
        yield home
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_gpg_signatures(gnupg: Path, repo: Path, tmp_path: Path) -> None:
    operator = gpg_key(gnupg, "Operator <operator@example.com>")
    stranger = gpg_key(gnupg, "Stranger <stranger@example.com>")
    keyring = tmp_path / "trusted.gpg"
    keyring.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--homedir", str(gnupg), "--export", operator],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        ).stdout
    )
    env = {"GNUPGHOME": str(gnupg)}
    signing = ("-c", "gpg.format=openpgp")
    good = git_commit(repo, "a", *signing, "-c", f"user.signingkey={operator}", env=env)
    bad = git_commit(repo, "b", *signing, "-c", f"user.signingkey={stranger}", env=env)
    r = pygit2.Repository(repo)
    forged = with_signature_of(r, good, "not what was signed")

    policy = load_policy(gpg_keyring=keyring)
    assert policy.gpg_trusted == {operator}
    verdict = policy.verify(r, good)
    assert isinstance(verdict, Verified) and verdict.kind == "gpg", verdict
    assert verdict.fingerprint == operator and "operator@example.com" in verdict.principal
    assert policy.verify(r, bad) == Refused(bad, f"signed by an untrusted key {stranger}")
    moved = policy.verify(r, forged)
    assert isinstance(moved, Refused) and moved.reason.startswith("bad signature"), moved
    plain = git_commit(repo, "c")
    assert policy.verify(r, plain) == Refused(plain, "unsigned")

    # An SSH-only policy refuses an OpenPGP signature (and the other way round).
    ssh_only = SignaturePolicy(ssh=(), gpg_trusted=frozenset())
    assert not ssh_only.verify(r, good).trusted

    # Fingerprints narrow the keyring; one that is not in it is a config error.
    both = tmp_path / "both.gpg"
    both.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--homedir", str(gnupg), "--export", operator, stranger],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        ).stdout
    )
    assert load_policy(gpg_keyring=both).verify(r, bad).trusted
    narrowed = load_policy(gpg_keyring=both, gpg_fingerprints=[operator.lower()])
    assert narrowed.verify(r, bad) == Refused(bad, f"signed by an untrusted key {stranger}")
    with pytest.raises(SignersFileError, match=f"no key with fingerprint {'0' * 40}"):
        load_policy(gpg_keyring=keyring, gpg_fingerprints=["0" * 40])
    (tmp_path / "not-a-keyring").write_text("hello\n")
    with pytest.raises(SignersFileError, match="no OpenPGP public key found"):
        load_policy(gpg_keyring=tmp_path / "not-a-keyring")


# --- the engine, on a local World ----------------------------------------------------------------


@dataclass
class SignedWorld:
    world: World
    receiver: Receiver
    keys: Keys
    policy: SignaturePolicy
    cache: Path

    def engine(self, cache: Path | None = None) -> Engine:
        store = GitStore(self.world.remote, (cache or self.cache) / "repo.git")
        return engine_for(store, "sandbox", signatures=self.policy, lease_s=30.0)

    def commit(self, core: str, key: Path | None) -> str:
        """The operator's merge of a bump to `core`: unsigned (key None) or signed by `key`."""
        if key is None:
            return self.world.bump(core)
        world, repo = self.world, self.world.work
        index = repo.index
        for rel, data in world.spec_files(core).items():
            (world.root / "work" / rel).write_bytes(data)
            index.add(rel)
        index.write()
        tree = index.write_tree()
        parents = [] if repo.head_is_unborn else [repo.head.target]
        content = repo.create_commit_string(OPERATOR, OPERATOR, f"openclaw {core}", tree, parents)
        oid = repo.create_commit_with_signature(content, ssh_sign(content.encode(), key))
        repo.references.create("refs/heads/main", oid, force=True)
        world.push()
        return str(oid)

    def status_log(self) -> list[pygit2.Commit]:
        repo = self.world.status_repo()
        head = repo.references[STATUS_REF].target
        return list(repo.walk(head, pygit2.enums.SortMode.TOPOLOGICAL))[::-1]

    def rollout(self) -> dict[str, Any]:
        head = self.world.status_repo().get(self.world.status_repo().references[STATUS_REF].target)
        blob = head.tree / "fleets/sandbox/rollout.json"
        return dict(json.loads(blob.data))

    def versions(self) -> dict[str, set[str | None]]:
        return {
            h.name: {installed(h), *(installed(h, p) for p in PLUGINS)} for h in self.world.hosts
        }

    def failures(self) -> list[dict[str, Any]]:
        return self.receiver.bodies("failure")


def settle(engine: Engine) -> PassResult:
    return run_until_settled(engine, progress=False, max_failures=3, max_backoff=0.5)


@pytest.fixture(scope="module")
def sw(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[SignedWorld]:
    """Two local hosts on 2026.4.2 (steps [100]); the fleet adopted by a trusted-signed commit."""
    root = tmp_path_factory.mktemp("signatures")
    receiver = start_receiver()
    trusted = keygen(root / "operator", "operator-laptop")
    stranger = keygen(root / "stranger", "stranger")
    keys = Keys(trusted, stranger, allowed_signers(root / "allowed_signers", trusted))
    try:
        with World(
            root / "world",
            names=("mac-1", "mac-2"),
            transport="local",
            steps=(100,),
            registry=registry,
            initial="2026.4.2",
            webhook=receiver.url,
            extra_rollout={"drainTimeout": "2s", "probeTimeout": "15s"},
        ) as world:
            sw = SignedWorld(
                world, receiver, keys, load_policy(ssh_allowed_signers=keys.signers), root / "cache"
            )
            adopt = sw.commit("2026.4.2", trusted)
            done = settle(sw.engine())
            assert done.phase == "Complete", done.message
            assert sw.rollout()["appliedCommit"] == adopt
            yield sw
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_unsigned_and_untrusted_heads_are_recorded_not_applied_then_a_signed_one_rolls_out(
    sw: SignedWorld,
) -> None:
    world = sw.world
    good = sw.rollout()["appliedCommit"]
    before = sw.versions()
    target = "2026.4.4" if before["mac-1"] == {"2026.4.3"} else "2026.4.3"
    weights, ramps = world.weights(), len(world.weight_history())
    engine = sw.engine()

    def refused(commit: str, reason: str) -> None:
        problem = f"commit {commit[:12]} is not signed by a trusted key: {reason}"
        log, failures = len(sw.status_log()), len(sw.failures())
        result = settle(engine)
        assert result.phase == "Invalid", result
        assert problem in result.message
        record = sw.rollout()
        assert record["invalid"] == {"commit": commit, "problems": [problem]}
        # The last good state stays: nothing of the refused commit is applied anywhere.
        assert record["appliedCommit"] == good and record["specCommit"] == good
        assert sw.versions() == before
        assert world.weights() == weights and len(world.weight_history()) == ramps
        new = sw.status_log()[log:]
        assert len(new) == 1, [c.message for c in new]
        assert trailers(new[0])["Spec-Commit"] == commit
        assert "nothing applied" in new[0].message.splitlines()[0]
        sent = sw.failures()[failures:]
        assert len(sent) == 1, sent
        assert sent[0]["specCommit"] == commit and problem in sent[0]["message"]
        # The next passes (this engine, memoized; or a new one) record and broadcast nothing.
        assert settle(engine).phase == "Invalid"
        assert settle(sw.engine()).phase == "Invalid"
        assert len(sw.status_log()) == log + 1 and len(sw.failures()) == failures + 1

    unsigned = sw.commit(target, None)
    refused(unsigned, "unsigned")
    untrusted = sw.commit(target, sw.keys.stranger)
    refused(untrusted, f"signed by an untrusted key {ssh_fingerprint(sw.keys.stranger)}")

    signed = sw.commit(target, sw.keys.trusted)
    result = settle(engine)
    assert result.phase == "Complete", result.message
    record = sw.rollout()
    assert record["specCommit"] == signed and record["appliedCommit"] == signed
    assert "invalid" not in record
    assert sw.versions() == {h.name: {target} for h in world.hosts}
    assert world.weights() == weights


def reconcile_cli(sw: SignedWorld, *extra: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sw.world.reconcile_argv(*extra, cache=cache),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def test_cli_refuses_an_unsigned_head_and_a_malformed_signers_file(
    sw: SignedWorld, tmp_path: Path
) -> None:
    before = sw.versions()
    target = "2026.4.4" if before["mac-1"] == {"2026.4.3"} else "2026.4.3"
    failures = len(sw.failures())
    unsigned = sw.commit(target, None)
    problem = f"commit {unsigned[:12]} is not signed by a trusted key: unsigned"

    # Without the flag the head would roll out; with it, exit 2 and the reason.
    done = reconcile_cli(sw, "--trusted-signers", str(sw.keys.signers), cache=tmp_path / "c1")
    assert done.returncode == 2, done.stderr
    assert problem in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr
    assert sw.rollout()["invalid"] == {"commit": unsigned, "problems": [problem]}
    assert sw.versions() == before
    # A fresh process broadcasts the refusal too (to the last good spec's sinks), once.
    sent = sw.failures()[failures:]
    assert len(sent) == 1 and problem in sent[0]["message"], sent

    # A malformed signers file stops the command before anything: no cache, no status commit.
    log = len(sw.status_log())
    bad = tmp_path / "allowed_signers"
    bad.write_text(f"# ops\n{PRINCIPAL} ssh-ed25519 not!base64\n")
    for path, says in (
        (bad, f"{bad}:2: the key is not valid base64"),
        (tmp_path / "none", "No such file"),
    ):
        cache = tmp_path / "never"
        done = reconcile_cli(sw, "--trusted-signers", str(path), cache=cache)
        assert done.returncode == 2, done.stderr
        assert "argument --trusted-signers" in done.stderr and says in done.stderr, done.stderr
        assert not cache.exists()
    assert len(sw.status_log()) == log and sw.versions() == before


# --- the daemon's configuration ------------------------------------------------------------------


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(f"remote: /nowhere/spec.git\nfleets: [sandbox]\nhttp:\n  port: 0\n{extra}")
    return path


def test_daemon_config_trusted_signers_and_env_override(keys: Keys, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.yaml"), env={})
    assert config.trusted_signers is None and policy_from_config(None) is None

    extra = f"trustedSigners:\n  sshAllowedSigners: {keys.signers}\n"
    config = load_config(write_config(tmp_path / "c.yaml", extra), env={})
    policy = policy_from_config(config.trusted_signers)
    assert policy is not None and [s.principals for s in policy.ssh] == [PRINCIPAL]

    plain = tmp_path / "plain"
    plain.write_text(public(keys.stranger) + "\n")
    env = {"RECONCILER_TRUSTED_SIGNERS": str(plain)}
    config = load_config(write_config(tmp_path / "c.yaml", extra), env=env)
    policy = policy_from_config(config.trusted_signers)
    assert policy is not None and [s.principals for s in policy.ssh] == ["stranger"]

    with pytest.raises(ConfigError, match=r"trustedSigners: .*sshAllowedSigners"):
        load_config(write_config(tmp_path / "c.yaml", "trustedSigners: {}\n"), env={})

    # The documented example (commented out in deploy/config.example.yaml) is accepted as is.
    example = (ROOT / "deploy" / "config.example.yaml").read_text().split("# trustedSigners:\n")[-1]
    block = "trustedSigners:\n" + "".join(line[2:] + "\n" for line in example.splitlines())
    config = load_config(write_config(tmp_path / "c.yaml", block), env={})
    assert config.trusted_signers is not None and config.trusted_signers.gpg_fingerprints


def test_run_with_a_bad_signers_file_stops_before_it_serves(keys: Keys, tmp_path: Path) -> None:
    bad = tmp_path / "allowed_signers"
    bad.write_text("ops@example.com\n")
    extra = f"trustedSigners:\n  sshAllowedSigners: {bad}\n"
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "c.yaml", extra + f"cache: {cache}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "reconciler", "run", "--config", str(config)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    assert done.returncode == 2, done.stderr  # bad configuration input: exit 2, one line
    assert f"error: {bad}:1: no SSH public key on the line" in done.stderr, done.stderr
    assert not cache.exists()
    # `--trusted-signers` replaces the file's setting, and is checked while parsing (exit 2).
    done = subprocess.run(
        [*argv, "--trusted-signers", str(bad)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert done.returncode == 2 and f"{bad}:1:" in done.stderr, done.stderr
