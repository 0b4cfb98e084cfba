"""Real requests through a load balancer, and single probes of a gateway's endpoints.

The lane and the demo send traffic through HAProxy's frontend while a rollout runs, so what the
load balancer did with requests (and what the canary analysis counted) is seen, not assumed.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any


def probe(port: int, path: str, timeout: float = 5.0) -> tuple[int | None, dict[str, Any] | None]:
    """GET 127.0.0.1:port/path: (status, JSON body), or (None, None) when nothing answers."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, _json(response.read())
        finally:
            connection.close()
    except (OSError, http.client.HTTPException):
        return None, None


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class Traffic(threading.Thread):
    """Real requests through the load balancer while a rollout runs: GET /healthz every
    `every` seconds, each on a new connection; counts answers by status (0: no answer)."""

    def __init__(self, port: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.every = every
        self.statuses: dict[int, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            status = probe(self.port, "/healthz")[0] or 0
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.halt.wait(self.every)

    def stop(self) -> dict[int, int]:
        self.halt.set()
        self.join(10)
        return dict(self.statuses)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)
