"""`manage.py up` in a fresh data dir: it serves, keeps data across restarts, stops cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.workers import ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(STAGEWISE_DATA_DIR=str(data_dir), STAGEWISE_ADMIN_PASSWORD="up-test-password-1",
               PYTHONUNBUFFERED="1")  # fmt: skip
    return env


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port)],
        cwd=ROOT,
        env=_env(data_dir),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _manage(data_dir: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer\n{log.read_text()}")


def _descendants_and_servers(proc: psutil.Process, data_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(data_dir) in cmd:
            found.append(p)
    return found


def test_up_serves_keeps_data_and_leaves_no_process(tmp_path):
    data_dir = tmp_path / "data"
    port = _free_port()
    log = tmp_path / "up.log"
    proc = _start(data_dir, port, log)
    assert _wait_http(f"http://127.0.0.1:{port}/accounts/login/", proc, log) == 200
    first_log = log.read_text()
    assert "admin login is  admin" in first_log
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 4  # web, training worker, control worker, scheduler
    # Other management commands attach to the same embedded servers while up runs.
    _manage(
        data_dir, "shell", "-c", "from runs.models import Queue; Queue.objects.create(name='kept')"
    )
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    time.sleep(1)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], alive
    assert _descendants_and_servers(psutil.Process(), data_dir) == []

    # A second start reuses the data: no new admin is printed, same database.
    proc = _start(data_dir, port, log)
    assert _wait_http(f"http://127.0.0.1:{port}/accounts/login/", proc, log) == 200
    assert "admin login" not in log.read_text()
    out = _manage(
        data_dir,
        "shell",
        "-c",
        "from runs.models import Queue; print(sorted(Queue.objects.values_list('name', flat=True)))",
    )
    assert "'kept'" in out
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


# Waits until up's training worker answers (the control worker may be up first), so the
# queue below is created while it is running.
_WAIT_FOR_WORKER = """
import time
from webapp.celery import app
deadline = time.monotonic() + 60
workers = []
while not any(w.startswith("all-queues@") for w in workers) and time.monotonic() < deadline:
    workers = sorted(app.control.inspect(timeout=1).active_queues() or {})
print(workers)
"""

_CREATE_AND_SUBMIT = """
from runs.models import Queue, Team
from runs.services.runs import run_submit
from tests.runs.reduced_plan import reduced_lm_plan
queue = Queue.objects.create(name="added-later")
run = run_submit(team=Team.objects.get(), queue=queue, plan=reduced_lm_plan(), name="late")
print("run", run.pk)
"""

# Started means a worker took the stage over from the dispatcher's placeholder lease (the
# dispatcher alone already marks it running) or has finished it.
_STARTED = """
from runs.models import StageRun, WorkerLease
sr = StageRun.objects.get(run_id={run}, stage_index=0)
lease = WorkerLease.objects.filter(stage_run=sr).values_list("worker_id", flat=True).first()
print("started" if sr.state == "succeeded" or (lease and not lease.startswith("dispatched:"))
      else f"waiting {{sr.state}} {{lease}}")
"""


@contextlib.contextmanager
def _serving(tmp_path: Path):
    """``up`` in a fresh data dir, answering HTTP; stopped with SIGTERM at the end."""
    data_dir, port, log = tmp_path / "data", _free_port(), tmp_path / "up.log"
    proc = _start(data_dir, port, log)
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/accounts/login/", proc, log) == 200
        yield data_dir, proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_up_worker_consumes_a_queue_created_while_it_runs(tmp_path):
    with _serving(tmp_path) as (data_dir, proc, log):
        workers = _manage(data_dir, "shell", "-c", _WAIT_FOR_WORKER)
        assert "all-queues@" in workers, (workers, log.read_text())
        out = _manage(data_dir, "shell", "-c", _CREATE_AND_SUBMIT)
        run_id = int(out.split("run ")[1])
        deadline = time.monotonic() + 120
        state = _manage(data_dir, "shell", "-c", _STARTED.format(run=run_id))
        while "started" not in state and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(1)
            state = _manage(data_dir, "shell", "-c", _STARTED.format(run=run_id))
        assert "started" in state, (state, log.read_text())


# Both of up's workers answer: the control worker consumes the control queue only, the
# all-queue training worker every queue but that one.
_WORKERS_QUEUES = """
import time
from django.conf import settings
from webapp.celery import app
deadline = time.monotonic() + 60
queues = {}
while time.monotonic() < deadline:
    replies = app.control.inspect(timeout=1).active_queues() or {}
    queues.update({w.split("@")[0]: sorted(q["name"] for q in qs) for w, qs in replies.items()})
    if {"control", "all-queues"} <= set(queues):
        break
print("control queue", settings.STAGEWISE_CONTROL_QUEUE, "consumed", queues)
"""

# Keeps up's one training worker busy with a long stage, then leaves the scheduler's work
# that only the control tasks can do: a stage whose worker died (its lease expired) and a
# queued stage that no submit dispatches (its queue was unpaused by a plain update).
_BUSY_TRAINING_WORKER = """
import time
from datetime import timedelta
from django.db import transaction
from django.utils import timezone
from runs.models import Queue, Run, StageRun, Team, WorkerLease
from runs.services.plans import apply_overrides
from runs.services.runs import run_submit
from tests.runs.reduced_plan import reduced_lm_plan

def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)

def lease(run):
    sr = StageRun.objects.get(run=run, stage_index=0)
    return sr.state, getattr(WorkerLease.objects.filter(stage_run=sr).first(), "worker_id", "")

team, plan = Team.objects.get(), reduced_lm_plan()
long_plan = apply_overrides(plan, {"stages.0.steps": 100000})
busy = run_submit(team=team, queue=Queue.objects.get(name="default"), plan=long_plan, name="busy")
wait(lambda: lease(busy)[1] and not lease(busy)[1].startswith("dispatched:"), 120, "a stage start")
with transaction.atomic():
    dead = run_submit(team=team, queue=Queue.objects.create(name="dead"), plan=plan, name="dead")
    sr = StageRun.objects.get(run=dead, stage_index=0)
    StageRun.objects.filter(pk=sr.pk).update(state="running", attempts=1)
    Run.objects.filter(pk=dead.pk).update(state="running", started_at=timezone.now())
    gone = timezone.now() - timedelta(seconds=1)
    WorkerLease.objects.create(stage_run=sr, worker_id="dead-host:1", acquired_at=gone,
                               heartbeat_at=gone, expires_at=gone + timedelta(microseconds=1))
    queue = Queue.objects.create(name="missed", paused=True)
    missed = run_submit(team=team, queue=queue, plan=plan, name="missed")
Queue.objects.filter(pk=queue.pk).update(paused=False)
start = time.monotonic()
redispatched = lambda run: lease(run)[1].startswith("dispatched:")
wait(lambda: redispatched(dead) and redispatched(missed), 30, "the control tasks")
print(f"handled in {time.monotonic() - start:.1f} s while busy:", lease(busy))
"""


def test_up_control_worker_requeues_and_dispatches_while_the_training_worker_trains(tmp_path):
    with _serving(tmp_path) as (data_dir, _proc, log):
        out = _manage(data_dir, "shell", "-c", _WORKERS_QUEUES)
        assert "control queue stagewise-control consumed" in out, out
        assert "'control': ['stagewise-control']" in out, (out, log.read_text())
        assert "'all-queues': ['default']" in out, out
        out = _manage(data_dir, "shell", "-c", _BUSY_TRAINING_WORKER)
        # The training worker still holds its stage: it took none of this work.
        assert "while busy: ('running', '" in out and "dispatched:" not in out, out
        seconds = float(out.split("handled in ")[1].split(" s")[0])
        assert seconds < 15, out  # two 5 s scheduler ticks at most


def test_up_refuses_a_taken_port_with_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "manage.py", "up", "--port", str(port)],
            cwd=ROOT,
            env=_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "Traceback" not in out.stderr
    subprocess.run([sys.executable, "manage.py", "embedded", "stop"], cwd=ROOT,
                   env=_env(tmp_path / "data"), capture_output=True, timeout=60)  # fmt: skip


def test_unwritable_data_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_env(blocker / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "is not writable" in out.stderr
