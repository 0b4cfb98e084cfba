"""The weights-file driver: a JSON file that an external LB or script consumes.

Writes are atomic (temp file, fsync, rename) so a reader never sees half a document. Every
change is also appended to `<file>.history.jsonl`, a record of weights over time that tests
and incident reviews read ("were two hosts ever drained at once?").
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from reconciler.lb.base import LBConfigError, LBError, ServerStats


class WeightsFile:
    """`{"servers": {"mac-1": 100, ...}}`; unknown servers are refused, not invented."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history = path.with_name(path.name + ".history.jsonl")

    def _read(self) -> dict[str, int]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise LBError(f"{self.path}: weights file not found") from None
        except (OSError, ValueError) as exc:
            raise LBError(f"{self.path}: unreadable weights file ({exc})") from None
        servers = doc.get("servers") if isinstance(doc, dict) else None
        if not isinstance(servers, dict) or not all(isinstance(w, int) for w in servers.values()):
            raise LBError(f'{self.path}: expected {{"servers": {{name: weight}}}}')
        return {str(k): int(v) for k, v in servers.items()}

    def weights(self) -> dict[str, int]:
        return self._read()

    def set_weight(self, server: str, weight: int) -> None:
        servers = self._read()
        if server not in servers:
            raise LBConfigError(f"{self.path}: no server {server!r} (has {sorted(servers)})")
        if servers[server] == weight:
            return
        servers[server] = weight
        self._write(servers)
        with self.history.open("a") as log:
            log.write(json.dumps({"t": time.time(), "server": server, "weight": weight}) + "\n")

    def _write(self, servers: dict[str, int]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"servers": servers}, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def stats(self) -> dict[str, ServerStats]:
        return {s: ServerStats(server=s, weight=w) for s, w in self._read().items()}

    def close(self) -> None:
        return None
