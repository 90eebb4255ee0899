"""A real daphne ASGI server (``webapp.asgi:application``) on the test database, for tests that
need HTTP from another process: the browser tests, the external-run CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.workers import ROOT, test_database_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daphne:
    """daphne on a free port (kept across ``stop()``/``start()``), with the test database's
    URL, the session's Redis and data dir. Starts on construction unless ``start=False``."""

    def __init__(self, tmp: Path, *, start: bool = True):
        from django.conf import settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "STAGEWISE_DATA_DIR": str(settings.STAGEWISE_DATA_DIR),
            "SESSION_COOKIE_SECURE": "false",  # plain http on 127.0.0.1
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path = tmp / "daphne.log"
        self.proc: subprocess.Popen | None = None
        if start:
            self.start()

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.log_path, "a")  # noqa: SIM115 - closed with the process
        cmd = [sys.executable, "-m", "webapp.web", "-b", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "webapp.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"daphne did not listen in {timeout:.0f} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
