"""Switch faults of the stand-in OpenClaw per host, without touching the code under test.

The stand-in reads `$HOME/.openclaw-standin/faults.json` (or the file named by
`OPENCLAW_STANDIN_FAULTS`) on every CLI invocation and every gateway request, so a test flips a
host's behaviour by rewriting one file, even for a release that is not installed yet ("doctor is
red only on 2026.4.4"). Format:

- boolean faults (`doctor_red`, `never_ready`, `crash_at_start`, `http_5xx`): `true` for every
  version, or a list of the versions it applies to. `crash_at_start`: the gateway process exits
  at start and nothing answers /healthz, /readyz or /startupz, while `gateway start|restart`
  still exits 0 as a service manager would (`crash_on_start` is its older name);
- numeric faults (`ready_delay_s`, `doctor_delay_s`, `install_delay_s`, `ingress_pending`): a
  number for every version, or `{"value": N, "versions": [...]}`.

`real_timings()` is the one switch for the product's own pace (off by default; for benchmarks):
`set_faults(home, **real_timings())`.

Writes are atomic (temp file + rename): a gateway reading mid-write never sees half a document.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

BOOLEAN_FAULTS = frozenset(
    {"doctor_red", "never_ready", "crash_at_start", "crash_on_start", "http_5xx", "backup_refused"}
)
NUMERIC_FAULTS = frozenset(
    {"ready_delay_s", "doctor_delay_s", "install_delay_s", "ingress_pending"}
)
FAULTS_ENV = "OPENCLAW_STANDIN_FAULTS"

FaultValue = bool | float | Sequence[str] | Mapping[str, object]
JsonFault = bool | float | list[str] | dict[str, object]


# What the real product takes (openclaw 2026.9.5/2026.9.6 on this machine): `doctor --json`
# about 8 s, gateway start to /readyz 200 between 7 s (idle) and 24 s (busy host), the
# `npm i -g openclaw@V` install about 30 s.
REAL_DOCTOR_S = 8.0
REAL_READY_S = (7.0, 24.0)
REAL_INSTALL_S = 30.0


def real_timings(ready_s: float = REAL_READY_S[0]) -> dict[str, FaultValue]:
    """Faults that give the stand-in the real product's timings (doctor, start to ready, install).

    `ready_s` picks the start-to-ready time within the measured 7-24 s (default: the fast end).
    """
    low, high = REAL_READY_S
    if not low <= ready_s <= high:
        raise ValueError(f"ready_s {ready_s} is outside the measured {low}-{high} s")
    return {
        "doctor_delay_s": REAL_DOCTOR_S,
        "ready_delay_s": ready_s,
        "install_delay_s": REAL_INSTALL_S,
    }


def faults_file(home: Path) -> Path:
    """Where the stand-in looks for faults on a host whose HOME is `home`."""
    return home / ".openclaw-standin" / "faults.json"


def versioned(value: float, *versions: str) -> dict[str, object]:
    """A numeric fault that applies only while one of `versions` runs."""
    return {"value": value, "versions": list(versions)}


def set_faults(home: Path, **faults: FaultValue) -> Path:
    """Replace the host's faults with exactly `faults` (False/None entries are left out)."""
    document = {name: _normalize(name, value) for name, value in faults.items()}
    return _write(faults_file(home), {k: v for k, v in document.items() if v is not None})


def update_faults(home: Path, **faults: FaultValue | None) -> Path:
    """Merge `faults` into the host's current ones; a value of None or False removes a fault."""
    document: dict[str, object] = dict(read_faults(home))
    for name, value in faults.items():
        normalized = None if value is None else _normalize(name, value)
        if normalized is None:
            document.pop(name, None)
        else:
            document[name] = normalized
    return _write(faults_file(home), document)


def clear_faults(home: Path) -> None:
    """Remove every fault of the host."""
    faults_file(home).unlink(missing_ok=True)


def read_faults(home: Path) -> dict[str, object]:
    """The host's current faults ({} when none are set)."""
    try:
        loaded = json.loads(faults_file(home).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return dict(loaded) if isinstance(loaded, dict) else {}


def _normalize(name: str, value: FaultValue) -> JsonFault | None:
    if name in BOOLEAN_FAULTS:
        return _boolean_fault(name, value)
    if name in NUMERIC_FAULTS:
        return _numeric_fault(name, value)
    known = ", ".join(sorted(BOOLEAN_FAULTS | NUMERIC_FAULTS))
    raise ValueError(f"unknown stand-in fault {name!r}; expected one of: {known}")


def _boolean_fault(name: str, value: FaultValue) -> JsonFault | None:
    if isinstance(value, bool):
        return True if value else None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(v) for v in value]
    raise ValueError(f"fault {name!r} takes true or a list of versions, got {value!r}")


def _numeric_fault(name: str, value: FaultValue) -> JsonFault | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping) and "value" in value:
        versions = value.get("versions")
        out: dict[str, object] = {"value": float(str(value["value"]))}
        if versions is not None:
            if not isinstance(versions, Sequence) or isinstance(versions, str):
                raise ValueError(f"fault {name!r}: versions must be a list, got {versions!r}")
            out["versions"] = [str(v) for v in versions]
        return out
    raise ValueError(f"fault {name!r} takes a number or {{value, versions}}, got {value!r}")


def _write(path: Path, document: Mapping[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".faults-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
    Path(tmp).replace(path)
    return path
