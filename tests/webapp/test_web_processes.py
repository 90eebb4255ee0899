"""``python -m webapp.web --processes 2``: two daphne processes share one listening socket;
requests reach both; one that dies is started again while the other keeps answering; SIGTERM
stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.servers import free_port
from tests.workers import ROOT, wait_for
from tests.workers import test_database_url as database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def _pid_of_answer(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            return json.loads(r.read())["process"]
    except OSError:
        return None


def test_two_web_processes_share_the_port_and_are_restarted(tmp_path, settings):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "STAGEWISE_DATA_DIR": str(settings.STAGEWISE_DATA_DIR),
    }
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "webapp.web", "--processes", "2", "-b", "127.0.0.1", "-p"]
    parent = subprocess.Popen(
        [*cmd, str(port), "webapp.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    logs = lambda: (tmp_path / "web.log").read_text()[-3000:]  # noqa: E731
    try:
        seen: set[int] = set()

        def both_answer() -> bool:
            pid = _pid_of_answer(url)
            if pid is not None:
                seen.add(pid)
            return len(seen) == 2

        wait_for(both_answer, 120, "answers from two processes", logs)
        victim = min(seen)
        os.kill(victim, signal.SIGKILL)
        answered = [_pid_of_answer(url) for _ in range(5)]  # the other one still serves
        assert any(p is not None and p != victim for p in answered), logs()
        first_two = set(seen)
        new = lambda: _pid_of_answer(url) not in first_two | {None}  # noqa: E731
        wait_for(new, 120, "the killed process to be replaced", logs)
        assert "web-" in logs() and "restarting" in logs()
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
        log.close()
    time.sleep(0.5)
    assert _pid_of_answer(url) is None  # nothing left listening
