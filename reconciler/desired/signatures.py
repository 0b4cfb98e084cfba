"""Optional commit-signature verification of the watched branch.

Why: whoever can push to the watched branch controls the fleet (SECURITY.md), and branch
protection lives on the git host, where the reconciler cannot see it. With a policy set, the
engine applies a head commit only when it carries a good signature by a key the operator listed
(an SSH `allowed_signers` file, optionally an OpenPGP keyring); any other head is recorded on
the status branch as invalid, with the reason, and nothing of it is applied.

The checking is done by the programs git itself uses (`ssh-keygen -Y find-principals` and
`ssh-keygen -Y verify -n git`; `gpg --verify` with a throwaway home holding only the trusted
keyring), as argv (no shell), each with a timeout, over files in a private temporary directory.
A missing program or a timeout is an error, never a pass. Only the commit handed to `verify`
is checked (the engine hands it the head of the watched branch at each pass), not its history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pygit2

from reconciler.errors import ConfigError, PermanentError, TemporaryError

TIMEOUT_S = 10.0
SSH_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
SSH_END = b"-----END SSH SIGNATURE-----"
PGP_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_PLAIN_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
KEY_TYPES = frozenset(
    [
        *_PLAIN_KEY_TYPES,
        *(t.replace("@openssh.com", "") + "-cert-v01@openssh.com" for t in _PLAIN_KEY_TYPES),
    ]
)
OPTIONS = frozenset({"cert-authority", "namespaces", "valid-after", "valid-before"})
EXPECTED_LINE = (
    "expected `principals [options] key-type base64-key [comment]` (an allowed_signers line) "
    "or `key-type base64-key [comment]` (a public key line)"
)
_SAFE_PRINCIPAL = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


class SignersFileError(ConfigError):
    """The trusted-signers file (or keyring) is missing, unreadable or malformed."""


class SignatureToolError(PermanentError):
    """ssh-keygen or gpg is missing or broken: no commit can be checked, so none is applied."""


class SignatureTimeout(TemporaryError):
    """ssh-keygen or gpg ran past its timeout: the check is retried, never taken as a pass."""


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """The commit carries a good signature by a trusted key."""

    commit: str
    kind: Literal["ssh", "gpg"]
    principal: str
    fingerprint: str
    trusted: Literal[True] = True

    @property
    def problem(self) -> None:
        """Nothing to record: the commit may be applied."""
        return None

    def __str__(self) -> str:
        return f"{self.commit[:12]} signed by {self.principal} ({self.fingerprint})"


@dataclass(frozen=True)
class Refused:
    """The commit may not be applied: `reason` says why (unsigned, untrusted key, ...)."""

    commit: str
    reason: str
    trusted: Literal[False] = False

    @property
    def problem(self) -> str:
        return f"commit {self.commit[:12]} is not signed by a trusted key: {self.reason}"

    def __str__(self) -> str:
        return self.problem


Verdict = Verified | Refused


# --- the trusted SSH keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class SshSigner:
    """One trusted key: a line of the signers file, as ssh-keygen's allowed_signers reads it."""

    line: int
    principals: str
    options: str
    key_type: str
    key: str

    def allowed_signers_line(self) -> str:
        return " ".join(p for p in (self.principals, self.options, self.key_type, self.key) if p)


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (as `ssh-keygen -l` prints it)."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _ssh_string(blob: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(blob):
        raise ValueError("truncated")
    size = int.from_bytes(blob[pos : pos + 4], "big")
    end = pos + 4 + size
    if end > len(blob):
        raise ValueError("truncated")
    return blob[pos + 4 : end], end


def signature_key(armored: bytes) -> bytes:
    """The public key blob inside an armored SSH signature (SSHSIG); ValueError if malformed."""
    lines = armored.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != SSH_BEGIN or lines[-1].strip() != SSH_END:
        raise ValueError("not an armored SSH signature")
    try:
        blob = base64.b64decode(b"".join(x.strip() for x in lines[1:-1]), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if not blob.startswith(b"SSHSIG") or len(blob) < 10:
        raise ValueError("no SSHSIG header")
    key, _ = _ssh_string(blob, 10)  # after the magic and the uint32 version
    _ssh_string(key, 0)  # the key's own type string must be there
    return key


def _take_options(rest: str, where: str) -> tuple[str, str]:
    """Split `options key...` at the first whitespace outside double quotes."""
    quoted = False
    for i, ch in enumerate(rest):
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            return rest[:i], rest[i:].lstrip()
    if quoted:
        raise SignersFileError(f"{where}: unterminated quote in the options; {EXPECTED_LINE}")
    return rest, ""


def _check_options(options: str, where: str) -> None:
    """Each option is `name` or `name="value"`, comma-separated, and one ssh-keygen knows."""
    for option in re.findall(r'(?:[^,"]|"[^"]*")+', options):
        name = option.split("=", 1)[0]
        if not re.fullmatch(r'[A-Za-z-]+(="[^"]*")?', option):
            raise SignersFileError(
                f"{where}: cannot read the option {option[:60]!r} (expected name or "
                f'name="value", comma-separated, before the key type); {EXPECTED_LINE}'
            )
        if name.lower() not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise SignersFileError(f"{where}: unknown option {name!r} (expected one of {known})")


def parse_allowed_signers(text: str, source: str) -> tuple[SshSigner, ...]:
    """The trusted keys of an allowed_signers-style file; SignersFileError (file:line: what
    was expected) on the first line that is neither a signer, a public key, blank nor `#`."""
    signers: list[SshSigner] = []
    for n, raw in enumerate(text.split("\n"), 1):  # ssh-keygen's line numbers
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{n}"
        first, rest = [*line.split(None, 1), ""][:2]
        principals, options = "", ""
        if not any(token in KEY_TYPES for token in line.split()):
            raise SignersFileError(
                f"{where}: no SSH public key on the line (a key type such as ssh-ed25519, then "
                f"its base64); {EXPECTED_LINE}"
            )
        if first in KEY_TYPES:
            rest = line
        else:
            principals = first
            if '"' in principals:
                raise SignersFileError(
                    f"{where}: a quoted principal is not supported; {EXPECTED_LINE}"
                )
            if rest and rest.split()[0] not in KEY_TYPES:
                options, rest = _take_options(rest, where)
                _check_options(options, where)
        parts = rest.split(None, 2)
        if len(parts) < 2:
            raise SignersFileError(f"{where}: no key after {line.split()[0]!r}; {EXPECTED_LINE}")
        key_type, key = parts[0], parts[1]
        if key_type not in KEY_TYPES:
            raise SignersFileError(
                f"{where}: unknown key type {key_type[:40]!r} (expected one of "
                f"{', '.join(_PLAIN_KEY_TYPES)}, or a certificate type); {EXPECTED_LINE}"
            )
        try:
            blob = base64.b64decode(key, validate=True)
            inner, _ = _ssh_string(blob, 0)
        except (binascii.Error, ValueError):
            raise SignersFileError(f"{where}: the key is not valid base64 of an SSH key") from None
        if inner.decode("ascii", "replace") != key_type:
            raise SignersFileError(
                f"{where}: the key is a {inner.decode('ascii', 'replace')[:40]!r} key, "
                f"but the line says {key_type!r}"
            )
        if not principals:  # a plain public key line: name it by its comment, or its line
            comment = parts[2].strip() if len(parts) > 2 else ""
            principals = comment if _SAFE_PRINCIPAL.fullmatch(comment) else f"key-line-{n}"
        signers.append(SshSigner(n, principals, options, key_type, key))
    if not signers:
        raise SignersFileError(f"{source}: no trusted key in the file; {EXPECTED_LINE}")
    return tuple(signers)


# --- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignaturePolicy:
    """Which keys may sign the head of the watched branch. Build it with `load_policy`."""

    ssh: tuple[SshSigner, ...] = ()
    ssh_source: str = "allowed_signers"
    gpg_keyring: bytes = b""
    gpg_trusted: frozenset[str] = frozenset()  # primary key fingerprints, upper-case hex
    timeout_s: float = TIMEOUT_S

    def describe(self) -> str:
        parts = [f"{len(self.ssh)} SSH key(s) from {self.ssh_source}"] if self.ssh else []
        parts += [f"{len(self.gpg_trusted)} GPG key(s)"] if self.gpg_trusted else []
        return ", ".join(parts) or "no trusted key"

    def verify(self, repo: pygit2.Repository, commit: str) -> Verdict:
        """Is `commit` signed by a trusted key? Raises SignatureToolError or SignatureTimeout
        when the check itself could not be made (never a pass)."""
        obj = repo.get(commit)
        if not isinstance(obj, pygit2.Commit):
            return Refused(commit, "not a commit")
        signature, payload = obj.gpg_signature
        if not signature or payload is None:
            return Refused(commit, "unsigned")
        head = signature.lstrip()
        if head.startswith(SSH_BEGIN):
            return self._ssh(commit, signature, payload)
        if head.startswith(PGP_BEGIN):
            return self._gpg(commit, signature, payload)
        return Refused(commit, "unsupported signature type")

    # --- SSH ---------------------------------------------------------------------------------

    def _allowed_signers(self) -> str:
        """The file ssh-keygen reads: each signer on its own line number, so ssh-keygen's
        `file:line:` messages point into the operator's file."""
        lines = [""] * max((s.line for s in self.ssh), default=0)
        for s in self.ssh:
            lines[s.line - 1] = s.allowed_signers_line()
        return "\n".join(lines) + "\n"

    def _ssh(self, commit: str, signature: bytes, payload: bytes) -> Verdict:
        try:
            key = signature_key(signature)
        except ValueError as exc:
            return Refused(commit, f"bad signature (malformed SSH signature: {exc})")
        signer = fingerprint(key)
        if not self.ssh:
            return Refused(commit, f"signed by an untrusted key {signer} (no SSH key is trusted)")
        with tempfile.TemporaryDirectory(prefix="reconciler-sig-") as tmp:
            allowed = Path(tmp) / "allowed_signers"
            allowed.write_text(self._allowed_signers())
            sig = Path(tmp) / "commit.sig"
            sig.write_bytes(signature)
            base = ["ssh-keygen", "-Y"]
            found = self._run([*base, "find-principals", "-f", str(allowed), "-s", str(sig)], b"")
            principals = found.stdout.decode("utf-8", "replace").split()
            if found.returncode != 0 or not principals:
                return Refused(commit, f"signed by an untrusted key {signer}")
            principal = principals[0]
            argv = [*base, "verify", "-f", str(allowed), "-I", principal, "-n", "git"]
            checked = self._run([*argv, "-s", str(sig)], payload)
            if checked.returncode != 0:
                why = _last_line(checked.stderr, {str(allowed): self.ssh_source, str(sig): "sig"})
                return Refused(commit, f"bad signature ({why or 'ssh-keygen refused it'})")
        return Verified(commit, "ssh", principal, signer)

    # --- OpenPGP -----------------------------------------------------------------------------

    def _gpg(self, commit: str, signature: bytes, payload: bytes) -> Verdict:
        if not self.gpg_trusted:
            return Refused(
                commit, "signed by an untrusted key (an OpenPGP signature; no GPG key is trusted)"
            )
        with tempfile.TemporaryDirectory(prefix="reconciler-gpg-") as tmp:
            home = _gpg_home(tmp)
            keyring = Path(tmp) / "trusted.gpg"
            keyring.write_bytes(self.gpg_keyring)
            sig = Path(tmp) / "commit.sig"
            sig.write_bytes(signature)
            base = _gpg_argv(home)
            imported = self._run([*base, "--import", str(keyring)], b"")
            if imported.returncode != 0:
                why = _last_line(imported.stderr, {tmp: "<tmp>"})
                raise SignatureToolError(f"gpg could not import the trusted keyring: {why}")
            argv = [*base, "--trust-model", "always", "--status-fd", "1", "--verify", str(sig), "-"]
            checked = self._run(argv, payload)
        return self._gpg_verdict(commit, checked)

    def _gpg_verdict(self, commit: str, done: subprocess.CompletedProcess[bytes]) -> Verdict:
        status: dict[str, list[str]] = {}
        sigs = 0
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("[GNUPG:] "):
                word, *fields = line[9:].split(" ")
                sigs += word == "NEWSIG"
                status.setdefault(word, fields)
        if sigs > 1:
            return Refused(commit, "unsupported signature type (more than one OpenPGP signature)")
        for word, what in (
            ("BADSIG", "bad signature"),
            ("EXPKEYSIG", "signed by an expired key"),
            ("REVKEYSIG", "signed by a revoked key"),
            ("EXPSIG", "expired signature"),
        ):
            if word in status:
                return Refused(commit, f"{what} ({' '.join(status[word][:1])})")
        if "NO_PUBKEY" in status:
            errsig = status.get("ERRSIG", [])
            who = errsig[6] if len(errsig) > 6 and errsig[6] != "-" else status["NO_PUBKEY"][0]
            return Refused(commit, f"signed by an untrusted key {who}")
        valid = status.get("VALIDSIG", [])
        if done.returncode != 0 or "GOODSIG" not in status or len(valid) < 10:
            return Refused(commit, f"bad signature (gpg exited {done.returncode})")
        primary = valid[9]
        if primary.upper() not in self.gpg_trusted and valid[0].upper() not in self.gpg_trusted:
            return Refused(commit, f"signed by an untrusted key {primary}")
        uid = " ".join(status["GOODSIG"][1:]) or primary
        return Verified(commit, "gpg", uid, primary)

    # --- running the tools -------------------------------------------------------------------

    def _run(self, argv: Sequence[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
        return _run(argv, data, self.timeout_s)


def _run(argv: Sequence[str], data: bytes, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """Run a checking tool: argv (no shell), stdin `data`, a timeout, LC_ALL=C messages."""
    try:
        return subprocess.run(
            list(argv),
            input=data,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise SignatureToolError(
            f"{argv[0]} not found on PATH: commit signatures cannot be checked, so nothing is "
            "applied; install it (OpenSSH's ssh-keygen, GnuPG's gpg) or drop the trusted signers"
        ) from None
    except subprocess.TimeoutExpired:
        raise SignatureTimeout(
            f"{argv[0]} {argv[1]} {argv[2]} ran past {timeout_s:g}s while checking a commit "
            "signature; nothing was applied (retried)"
        ) from None
    except OSError as exc:
        raise SignatureToolError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


def _last_line(stderr: bytes, replace: dict[str, str]) -> str:
    text = stderr.decode("utf-8", "replace")
    for old, new in replace.items():
        text = text.replace(old, new)
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


def _gpg_home(tmp: str) -> str:
    home = Path(tmp) / "gnupg"
    home.mkdir(mode=0o700)
    return str(home)


def _gpg_argv(home: str) -> list[str]:
    return ["gpg", "--batch", "--no-tty", "--no-autostart", "--no-options", "--homedir", home]


# --- loading -----------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise SignersFileError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def _gpg_keys(path: Path, keyring: bytes, timeout_s: float) -> frozenset[str]:
    """The primary fingerprints of the keys in an exported keyring (listed, not imported)."""
    if shutil.which("gpg") is None:
        raise SignersFileError(f"{path}: a GPG keyring is configured but gpg is not on PATH")
    with tempfile.TemporaryDirectory(prefix="reconciler-gpg-") as tmp:
        ring = Path(tmp) / "trusted.gpg"
        ring.write_bytes(keyring)
        argv = [*_gpg_argv(_gpg_home(tmp)), "--with-colons", "--import-options", "show-only"]
        listed = _run([*argv, "--import", str(ring)], b"", timeout_s)
    primaries: list[str] = []
    pending = False
    for line in listed.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            pending = True
        elif fields[0] == "fpr" and pending and len(fields) > 9:
            primaries.append(fields[9].upper())
            pending = False
    if listed.returncode != 0 or not primaries:
        raise SignersFileError(
            f"{path}: no OpenPGP public key found (expected a keyring exported with "
            "`gpg --export KEYID > FILE`, binary or armored)"
        )
    return frozenset(primaries)


def load_policy(
    *,
    ssh_allowed_signers: Path | None = None,
    gpg_keyring: Path | None = None,
    gpg_fingerprints: Sequence[str] = (),
    timeout_s: float = TIMEOUT_S,
) -> SignaturePolicy:
    """Read and check the trusted signers; SignersFileError (file, line, what was expected)
    when a file is missing, unreadable or malformed, or a needed program is missing."""
    if ssh_allowed_signers is None and gpg_keyring is None:
        raise SignersFileError("trusted signers: name an SSH allowed-signers file or a GPG keyring")
    ssh: tuple[SshSigner, ...] = ()
    source = "allowed_signers"
    if ssh_allowed_signers is not None:
        source = str(ssh_allowed_signers)
        raw = _read(ssh_allowed_signers, "trusted signers")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise SignersFileError(f"{source}:{line}: not UTF-8 text; {EXPECTED_LINE}") from None
        ssh = parse_allowed_signers(text, source)
        if shutil.which("ssh-keygen") is None:
            raise SignersFileError(
                f"{source}: SSH signers are configured but ssh-keygen (OpenSSH) is not on PATH"
            )
    keyring, trusted = b"", frozenset[str]()
    if gpg_keyring is not None:
        keyring = _read(gpg_keyring, "GPG keyring")
        in_ring = _gpg_keys(gpg_keyring, keyring, timeout_s)
        wanted = [f.replace(" ", "").upper() for f in gpg_fingerprints]
        for f in wanted:
            if not _FINGERPRINT.fullmatch(f):
                raise SignersFileError(
                    f"{gpg_keyring}: {f!r} is not a key fingerprint (expected 40 hex digits)"
                )
            if f not in in_ring:
                raise SignersFileError(f"{gpg_keyring}: no key with fingerprint {f} in the keyring")
        trusted = frozenset(wanted) or in_ring
    elif gpg_fingerprints:
        raise SignersFileError("trusted signers: GPG fingerprints need a GPG keyring (gpgKeyring)")
    return SignaturePolicy(ssh, source, keyring, trusted, timeout_s)
