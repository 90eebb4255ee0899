"""webapp/supervisor.py on its own: restarts with backoff and one log line, kills what a dead
child left in its process group, stops everything on request; embedded-server health checks
that do not take a zombie for a running server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from webapp import embedded, supervisor
from webapp.supervisor import Child, Embedded, Supervisor


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(supervisor, "TICK_SECONDS", 0.05)
    monkeypatch.setattr(supervisor, "FIRST_DELAY", 0.2)
    monkeypatch.setattr(supervisor, "MAX_DELAY", 0.8)
    monkeypatch.setattr(supervisor, "STOP_GRACE", 1.0)


class Running:
    """A supervisor in a thread, with its log lines."""

    def __init__(self, *services):
        self.lines: list[str] = []
        self.sup = Supervisor(list(services), log=self.lines.append)
        self.thread = threading.Thread(target=self.sup.run, daemon=True)
        self.thread.start()

    def wait_for(self, cond, timeout=15.0, what="a condition"):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.lines}"
            time.sleep(0.02)

    def stop(self):
        self.sup.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_is_restarted_with_a_doubling_capped_backoff(fast):
    child = Child("flaky", _py("raise SystemExit(3)"), os.environ)
    run = Running(child)
    run.wait_for(lambda: len(run.lines) >= 5, what="five exits")
    run.stop()
    assert run.lines[:5] == [
        "stagewise: flaky exited (code 3); restarting in 0.2s",
        "stagewise: flaky exited (code 3); restarting in 0.4s",
        "stagewise: flaky exited (code 3); restarting in 0.8s",
        "stagewise: flaky exited (code 3); restarting in 0.8s",
        "stagewise: flaky exited (code 3); restarting in 0.8s",
    ]


def test_a_child_that_ran_long_enough_starts_again_from_the_first_delay(fast, monkeypatch):
    monkeypatch.setattr(supervisor, "STABLE_AFTER", 0.0)
    run = Running(Child("steady", _py("raise SystemExit(1)"), os.environ))
    run.wait_for(lambda: len(run.lines) >= 3, what="three exits")
    run.stop()
    assert all(line.endswith("restarting in 0.2s") for line in run.lines), run.lines


def test_a_killed_child_is_restarted_and_what_it_left_in_its_group_is_killed(fast, tmp_path):
    # The child leaves a grandchild in its process group, as a Celery worker leaves its pool.
    pid_file = tmp_path / "grandchild"
    script = f"sleep 300 & echo $! > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; wait"
    child = Child("worker", ["sh", "-c", script], os.environ)
    run = Running(child)
    run.wait_for(pid_file.exists, what="the grandchild")
    first, grandchild = child.proc.pid, int(pid_file.read_text())
    pid_file.unlink()
    os.kill(first, signal.SIGKILL)
    run.wait_for(lambda: child.proc.pid != first and pid_file.exists(), what="a restart")
    assert run.lines == ["stagewise: worker exited (code -9); restarting in 0.2s"]
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"
    second = int(pid_file.read_text())
    run.stop()
    assert child.proc.poll() is not None
    time.sleep(0.2)
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie"


def test_stop_kills_a_child_that_ignores_sigterm(fast):
    child = Child("stubborn", _py(_IGNORE_TERM), os.environ)
    run = Running(child)
    run.wait_for(lambda: child.proc is not None, what="the start")
    time.sleep(0.5)  # its handler is installed
    started = time.monotonic()
    run.stop()
    assert child.proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert run.lines == []


_IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def test_an_embedded_server_that_is_gone_is_started_again_and_failures_retried(fast):
    state = {"up": True, "starts": 0, "fail": 1}

    def ensure():
        state["starts"] += 1
        if state["fail"]:
            state["fail"] -= 1
            raise RuntimeError("socket in use\nmore detail")
        state["up"] = True

    run = Running(Embedded("redis", lambda: state["up"], ensure))
    time.sleep(0.3)
    assert state["starts"] == 0  # up already: not started by the supervisor
    state["up"] = False
    run.wait_for(lambda: state["up"], what="the restart")
    run.stop()
    assert run.lines == [
        "stagewise: redis is gone; restarting in 0.2s",
        "stagewise: redis did not start (socket in use); retrying in 0.4s",
    ]
    assert state["starts"] == 2


def test_alive_does_not_count_a_zombie():
    assert embedded._alive(os.getpid())
    proc = _zombie()
    assert not embedded._alive(proc.pid)
    proc.wait()


def test_redis_running_is_false_without_a_server(tmp_path: Path):
    assert embedded.redis_running(tmp_path) is False
    assert embedded.postgres_running(tmp_path) is False


def _zombie() -> subprocess.Popen:
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    deadline = time.monotonic() + 5
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc


def _postmaster_files(data_dir: Path, pid: int) -> tuple[Path, Path]:
    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True)
    pid_file, socket_lock = pgdata / "postmaster.pid", pgdata / ".s.PGSQL.5432.lock"
    # PostgreSQL's layout: pid, data dir, start time, port, socket dir, host, "shmkey shmid"
    # (no such segment: its backends are gone), status.
    pid_file.write_text(f"{pid}\n{pgdata}\n0\n5432\n{pgdata}\n\n  0  2147483647\nready\n")
    socket_lock.write_text(f"{pid}\n{pgdata}\n0\n5432\n{pgdata}\n")
    return pid_file, socket_lock


def test_lock_files_of_a_zombie_postmaster_are_removed_so_it_can_start_again(tmp_path):
    proc = _zombie()
    pid_file, socket_lock = _postmaster_files(tmp_path, proc.pid)
    assert not embedded.postgres_running(tmp_path)
    embedded._remove_dead_postmaster_locks(tmp_path)
    assert not pid_file.exists() and not socket_lock.exists()
    proc.wait()


def test_lock_files_of_a_running_postmaster_stay(tmp_path):
    proc = subprocess.Popen(["sleep", "60"])
    try:
        pid_file, socket_lock = _postmaster_files(tmp_path, proc.pid)
        embedded._remove_dead_postmaster_locks(tmp_path)
        assert pid_file.exists() and socket_lock.exists()
    finally:
        proc.kill()
        proc.wait()
