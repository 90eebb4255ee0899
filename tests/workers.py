"""Real Celery worker processes for integration tests, on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def test_database_url() -> str:
    d = connection.settings_dict
    host = d.get("HOST") or d.get("OPTIONS", {}).get("host", "")
    if host.startswith("/"):
        return f"postgres://{d['USER']}@/{d['NAME']}?host={host}"
    auth = d["USER"] + (f":{d['PASSWORD']}" if d.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}:{d.get('PORT') or 5432}/{d['NAME']}"


class Workers:
    def __init__(self, tmp: Path, lease_seconds: int = 4):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "STAGEWISE_DATA_DIR": str(settings.STAGEWISE_DATA_DIR),
            "STAGEWISE_LEASE_SECONDS": str(lease_seconds),
            "STAGEWISE_HEARTBEAT_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, queue: str, name: str, pool: str = "solo") -> subprocess.Popen:
        """A worker on ``queue``; ``pool="prefork"`` (one process) runs stages in a pool child
        as in production, ``solo`` in the worker's own process."""
        log = open(self.tmp / f"worker-{name}.log", "w")  # noqa: SIM115 - closed with the process
        # fmt: off
        cmd = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "-P", pool,
               "--concurrency", "1",
               "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h",
               "--loglevel", "INFO"]
        # fmt: on
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        self._forget()

    def _forget(self) -> None:
        """Drop the registry rows these workers wrote (runs/execution/registry.py). They
        committed them on their own connections, so a test's rollback would keep them: delete
        on a connection of our own, in autocommit."""
        from django.db import connections

        conn = connections.create_connection("default")
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "DELETE FROM runs_worker WHERE pid = ANY(%s)", [[p.pid for p in self.procs]]
                )
        finally:
            conn.close()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("worker-*.log")))


def wait_for(cond: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str] = str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
