"""A real git remote for tests, benchmarks and the demo: `git daemon` on loopback.

It serves bare repositories under one base directory over git:// with push enabled. The
daemon forks a child per connection and may fork a listener child too, so it is started in
its own process group and stopped as a group.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pygit2

from reconciler.sandbox.processes import free_port, stop_group


class GitDaemon:
    """`git daemon --export-all --enable=receive-pack` over `base_dir`, on 127.0.0.1."""

    def __init__(self, base_dir: Path, *, port: int | None = None) -> None:
        self.base_dir = base_dir
        self.port = port or free_port()
        base_dir.mkdir(parents=True, exist_ok=True)
        log = (base_dir / "git-daemon.log").open("ab")
        self.process = subprocess.Popen(
            [
                "git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={self.port}",
                f"--base-path={base_dir}", "--export-all", "--enable=receive-pack",
                "--informative-errors", str(base_dir),
            ],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        self._wait_listening(10.0)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"git daemon exited with {self.process.returncode}")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"git daemon did not listen on {self.port} within {timeout}s")

    def create(self, name: str) -> tuple[Path, str]:
        """A new bare repository; returns its path and its git:// URL."""
        path = self.base_dir / f"{name}.git"
        pygit2.init_repository(str(path), bare=True, initial_head="main")
        return path, self.url(name)

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        stop_group(self.process, 5.0)

    def __enter__(self) -> GitDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
