"""The command driver: one configured argv per operation, for LBs we have no driver for.

A cloud load balancer's CLI, an nginx upstream updater, a script behind a firewall: the spec
names an argv for `get` (prints `{"server": weight, ...}` or `{"servers": {...}}` as JSON),
`set` (with `{server}` and `{weight}` filled in) and optionally `stats` (prints
`{server: {sessions, requests, responses_5xx}}`). Commands run without a shell: a placeholder
becomes part of exactly one argument, whatever it contains, and names are checked anyway. Each
run has a timeout (the process group is killed when it passes) and a bound on its output, and
every error names the command and the tail of its stderr.

The command gets a small environment of its own, not the daemon's: the daemon holds webhook
secrets, registry tokens and SSH agent sockets in its environment, and an LB script has no use
for them. It sees PATH, HOME and LANG (as the daemon has them), plus exactly the variables its
configuration names (`pass_env`), and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from reconciler.lb.base import LBConfigError, LBError, ServerStats

MAX_OUTPUT = 1024 * 1024
STDERR_TAIL = 500
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_ALLOWED = {"get": set(), "set": {"{server}", "{weight}"}, "stats": set()}
Operation = Literal["get", "set", "stats"]
_SERVER = re.compile(r"[A-Za-z0-9._:@+=,%~-]{1,256}")
BASE_ENV = ("PATH", "HOME", "LANG")
"""What every command sees of the daemon's environment."""


class CommandLB:
    """Weights through external commands; `get` and `set` are required, `stats` optional."""

    def __init__(
        self,
        commands: Mapping[Operation, Sequence[str]] | Mapping[str, Sequence[str]],
        *,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        pass_env: Sequence[str] = (),
    ) -> None:
        """`env`: the environment to pick from (the daemon's own by default); the commands get
        BASE_ENV and `pass_env` of it, nothing else."""
        self.commands = {str(op): list(argv) for op, argv in commands.items()}
        self.timeout = timeout
        self.env = command_env(os.environ if env is None else env, pass_env)
        _check_templates(self.commands)

    # --- the interface -------------------------------------------------------------------

    def weights(self) -> dict[str, int]:
        doc = self._json("get", self.commands["get"])
        servers = _servers(doc)
        if servers is None or not all(_is_int(w) for w in servers.values()):
            raise LBError(f"{_show(self.commands['get'])}: expected {{server: weight}} JSON")
        return {str(s): int(w) for s, w in servers.items()}

    def set_weight(self, server: str, weight: int) -> None:
        if not _SERVER.fullmatch(server):
            raise LBConfigError(f"command driver: server name {server!r} is not a plain name")
        if not _is_int(weight) or weight < 0:
            raise LBConfigError(f"command driver: weight {weight!r} for {server!r}")
        known = self.weights()
        if server not in known:
            raise LBConfigError(f"command driver: no server {server!r} (has {sorted(known)})")
        values = {"{server}": server, "{weight}": str(weight)}
        self._run("set", [_fill(arg, values) for arg in self.commands["set"]])

    def stats(self) -> dict[str, ServerStats]:
        weights = self.weights()
        if "stats" not in self.commands:
            return {s: ServerStats(server=s, weight=w) for s, w in weights.items()}
        doc = _servers(self._json("stats", self.commands["stats"]))
        if doc is None or not all(isinstance(v, dict) for v in doc.values()):
            raise LBError(f"{_show(self.commands['stats'])}: expected {{server: {{...}}}} JSON")
        return {str(s): _server_stats(str(s), v, weights.get(str(s), 0)) for s, v in doc.items()}

    def close(self) -> None:
        return None

    # --- running -------------------------------------------------------------------------

    def _json(self, op: str, argv: list[str]) -> Any:
        out = self._run(op, argv)
        try:
            return json.loads(out)
        except ValueError:
            raise LBError(f"{_show(argv)}: {op} printed no JSON: {out[-STDERR_TAIL:]!r}") from None

    def _run(self, op: str, argv: list[str]) -> str:
        """Run `argv` (no shell) with the timeout and output bound; stdout on success."""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise LBConfigError(f"command driver: cannot run {op} `{_show(argv)}`: {exc}") from None
        try:
            out, err = _collect(proc, self.timeout)
        except _Overrun as exc:
            raise LBError(f"command driver: {op} `{_show(argv)}` {exc}") from None
        finally:
            _kill_group(proc)
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-STDERR_TAIL:]
            code = proc.returncode
            raise LBError(f"command driver: {op} `{_show(argv)}` exited {code}: {tail or '-'}")
        return out.decode(errors="replace")


def command_env(environ: Mapping[str, str], pass_env: Sequence[str] = ()) -> dict[str, str]:
    """The environment of a command: BASE_ENV and the names in `pass_env`, where set."""
    names = dict.fromkeys((*BASE_ENV, *pass_env))
    return {name: environ[name] for name in names if name in environ}


class _Overrun(Exception):
    """The command ran past its timeout or printed more than MAX_OUTPUT."""


def _collect(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr until both close and the process exits, within bounds."""
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Overrun(f"timed out after {timeout:g}s")
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buffers[key.fd] += chunk
                if len(buffers[key.fd]) > MAX_OUTPUT:
                    raise _Overrun(f"printed more than {MAX_OUTPUT} bytes")
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise _Overrun(f"timed out after {timeout:g}s") from None
    return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the command's own process group (it may have left children holding the pipes)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _check_templates(commands: Mapping[str, list[str]]) -> None:
    for op in ("get", "set"):
        if not commands.get(op):
            raise LBConfigError(f"command driver needs commands.{op}")
    for op, argv in commands.items():
        if op not in _ALLOWED:
            raise LBConfigError(f"command driver: unknown operation {op!r} (get, set, stats)")
        unknown = {p for arg in argv for p in _PLACEHOLDER.findall(arg)} - _ALLOWED[op]
        if unknown:
            raise LBConfigError(f"command driver: {op} uses unknown placeholders {sorted(unknown)}")


def _fill(arg: str, values: Mapping[str, str]) -> str:
    """Replace `{server}`/`{weight}` inside one argument; never splits or joins arguments."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], arg)


def _servers(doc: Any) -> dict[str, Any] | None:
    if isinstance(doc, dict) and isinstance(doc.get("servers"), dict):
        doc = doc["servers"]
    return doc if isinstance(doc, dict) else None


def _server_stats(server: str, doc: Mapping[str, Any], weight: int) -> ServerStats:
    def count(key: str) -> int:
        value = doc.get(key, 0)
        return int(value) if _is_int(value) else 0

    return ServerStats(
        server=server,
        weight=int(doc["weight"]) if _is_int(doc.get("weight")) else weight,
        sessions=count("sessions"),
        requests=count("requests"),
        responses_5xx=count("responses_5xx"),
        status=str(doc.get("status", "UP")),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(argv: Sequence[str]) -> str:
    return " ".join(argv)
