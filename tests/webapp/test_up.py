"""`manage.py up` in a fresh data dir: it serves, keeps data across restarts, stops cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.workers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir():
    """A data dir outside pytest's temp root: each pytest session starting on this machine
    makes that root private (0700) again, and an embedded PostgreSQL run as pgserver's own
    user (tests running as root) would lose access to its files mid-test."""
    root = Path(tempfile.mkdtemp(prefix="stagewise-up-"))
    root.chmod(0o755)
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ADMIN_PASSWORD = "up-test-password-1"


def _env(data_dir: Path, **extra: str) -> dict:
    # What the test session's own settings put into os.environ is not for these processes.
    inherited = ("DATABASE_URL", "REDIS_URL", "STAGEWISE_EMBEDDED")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(STAGEWISE_DATA_DIR=str(data_dir), STAGEWISE_ADMIN_PASSWORD=ADMIN_PASSWORD,
               PYTHONUNBUFFERED="1", **extra)  # fmt: skip
    return env


def _start(
    data_dir: Path, port: int, log: Path, *args: str, env: dict | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port), *args],
        cwd=ROOT,
        env=_env(data_dir, **(env or {})),
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


def test_up_serves_keeps_data_and_leaves_no_process(tmp_path, data_dir):
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


@dataclass
class Up:
    data_dir: Path
    proc: subprocess.Popen
    log: Path
    url: str


@contextlib.contextmanager
def _serving(tmp_path: Path, data_dir: Path, *args: str, env: dict | None = None):
    """``up`` in a fresh data dir, answering HTTP; stopped with SIGTERM at the end."""
    port, log = _free_port(), tmp_path / "up.log"
    proc = _start(data_dir, port, log, *args, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        assert _wait_http(f"{url}/accounts/login/", proc, log) == 200
        yield Up(data_dir, proc, log, url)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_up_worker_consumes_a_queue_created_while_it_runs(tmp_path, data_dir):
    with _serving(tmp_path, data_dir) as up:
        data_dir, proc, log = up.data_dir, up.proc, up.log
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


def test_up_control_worker_requeues_and_dispatches_while_the_training_worker_trains(
    tmp_path, data_dir
):
    with _serving(tmp_path, data_dir) as up:
        data_dir, log = up.data_dir, up.log
        out = _manage(data_dir, "shell", "-c", _WORKERS_QUEUES)
        assert "control queue stagewise-control consumed" in out, out
        assert "'control': ['stagewise-control']" in out, (out, log.read_text())
        assert "'all-queues': ['default']" in out, out
        out = _manage(data_dir, "shell", "-c", _BUSY_TRAINING_WORKER)
        # The training worker still holds its stage: it took none of this work.
        assert "while busy: ('running', '" in out and "dispatched:" not in out, out
        seconds = float(out.split("handled in ")[1].split(" s")[0])
        assert seconds < 15, out  # two 5 s scheduler ticks at most


def test_up_refuses_a_taken_port_with_one_line(data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "manage.py", "up", "--port", str(port)],
            cwd=ROOT,
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "Traceback" not in out.stderr
    subprocess.run([sys.executable, "manage.py", "embedded", "stop"], cwd=ROOT,
                   env=_env(data_dir), capture_output=True, timeout=60)  # fmt: skip


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


def _secure_cookies(response) -> list[str]:
    """The Set-Cookie headers of ``response`` that carry the Secure attribute."""
    headers = response.headers.get_list("set-cookie")
    return [h for h in headers if "secure" in [a.strip().lower() for a in h.split(";")[1:]]]


def test_up_on_all_interfaces_over_http_lets_a_script_log_in(tmp_path, data_dir):
    """Children inherit the embedded servers' URLs; they must still serve http cookies that
    a client over http keeps (not Secure), or every login fails with "CSRF cookie not set"."""
    import httpx

    with _serving(tmp_path, data_dir, "--host", "0.0.0.0", "--no-worker") as up:
        with httpx.Client(base_url=up.url, follow_redirects=False, timeout=30) as client:
            form = client.get("/accounts/login/")
            assert form.status_code == 200
            assert "csrftoken" in client.cookies, form.headers
            assert _secure_cookies(form) == []
            done = client.post(
                "/accounts/login/",
                data={
                    "username": "admin",
                    "password": ADMIN_PASSWORD,
                    "csrfmiddlewaretoken": client.cookies["csrftoken"],
                },  # fmt: skip
            )
            assert done.status_code == 302, done.text[:2000]
            assert any(h.startswith("sessionid=") for h in done.headers.get_list("set-cookie"))
            assert _secure_cookies(done) == []
            page = client.get("/")
            assert page.status_code == 200, (page.status_code, page.headers.get("location"))


# -- supervision: what `up` started comes back when it dies, and the running stage completes

SUPERVISED_STEPS = 2000  # long enough to span the three kills below on a loaded machine

_SUBMIT_LONG = f"""
from runs.models import Queue, Team
from runs.services.plans import apply_overrides
from runs.services.runs import run_submit
from tests.runs.reduced_plan import reduced_lm_plan
plan = reduced_lm_plan()
plan["stages"] = plan["stages"][:1]
plan = apply_overrides(plan, {{"stages.0.steps": {SUPERVISED_STEPS},
                              "stages.0.eval_interval": {SUPERVISED_STEPS},
                              "stages.0.checkpoint_interval": 50}})
run = run_submit(team=Team.objects.get(), queue=Queue.objects.get(name="default"), plan=plan,
                 name="supervised")
print("run", run.pk)
"""

_LOSS_STEPS = """
import json
from runs.models import MetricPoint, Run
run = Run.objects.get(pk={run})
steps = list(MetricPoint.objects.filter(series__run=run, series__key="train/loss")
             .order_by("step").values_list("step", flat=True))
print("state", run.state)
print("steps", json.dumps(steps))
"""


def _sql(data_dir: Path, query: str, *params):
    """One row from the embedded database, read directly: a `manage.py shell` here would
    start the embedded servers itself while `up` restarts them."""
    import psycopg

    socket_dir = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[4]
    with psycopg.connect(host=socket_dir, user="postgres", dbname="stagewise") as conn:
        return conn.execute(query, params).fetchone()


def _stage(data_dir: Path, run_id: int) -> tuple[str, int | None, str]:
    """(state, last step, lease holder) of the run's only stage."""
    state, last, worker = _sql(
        data_dir,
        "SELECT sr.state, sr.last_step, l.worker_id FROM runs_stagerun sr"
        " LEFT JOIN runs_workerlease l ON l.stage_run_id = sr.id"
        " WHERE sr.run_id = %s AND sr.stage_index = 0",
        run_id,
    )
    return state, last, worker or ""


def _child(up: subprocess.Popen, needle: str) -> psutil.Process | None:
    for c in psutil.Process(up.pid).children():
        try:
            if needle in " ".join(c.cmdline()):
                return c
        except psutil.NoSuchProcess:
            pass
    return None


def _until(cond, timeout: float, what: str, up: Up):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert up.proc.poll() is None, up.log.read_text()[-6000:]
        value = cond()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                         f"{up.log.read_text()[-6000:]}")  # fmt: skip


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _runs_counted(data_dir: Path) -> int | None:
    import psycopg

    try:
        return _sql(data_dir, "SELECT count(*) FROM runs_run")[0]
    except (OSError, IndexError, psycopg.Error):
        return None  # not accepting connections yet


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_up_restarts_what_dies_and_the_running_stage_finishes_with_every_step_once(
    tmp_path, data_dir
):
    from webapp.embedded import postgres_running, redis_running

    env = {"STAGEWISE_LEASE_SECONDS": "8", "STAGEWISE_HEARTBEAT_SECONDS": "1"}
    seen: set[int] = set()  # every process up started: none may outlive it
    with _serving(tmp_path, data_dir, env=env) as up:
        run_id = int(_manage(data_dir, "shell", "-c", _SUBMIT_LONG).split("run ")[1])

        def training(min_step: int = 0, not_by: str = "") -> str:
            """The worker training the stage past ``min_step``, if one is (not ``not_by``)."""
            state, last, worker = _stage(data_dir, run_id)
            assert state in ("queued", "running"), (state, last)
            held = worker and not worker.startswith("dispatched:") and worker != not_by
            return worker if held and state == "running" and (last or 0) >= min_step else ""

        def remember():
            seen.update(p.pid for p in psutil.Process(up.proc.pid).children(recursive=True))

        worker_id = _until(lambda: training(min_step=60), 300, "the stage to train", up)
        remember()

        # The web server gets SIGTERM: it is back within 30 s; the stage never noticed.
        web = _child(up.proc, "webapp.web")
        web.send_signal(signal.SIGTERM)
        _until(lambda: (_child(up.proc, "webapp.web") or web).pid != web.pid, 30, "a new web", up)
        _until(lambda: _answers(f"{up.url}/accounts/login/"), 30, "the web server", up)
        assert training() == worker_id, "the stage kept its worker through a web restart"
        remember()

        # The training worker's main process is killed mid-stage: a new worker is up within
        # 30 s, and the stage resumes from its checkpoint there once the lease expires.
        worker = _child(up.proc, "all-queues@")
        worker.send_signal(signal.SIGKILL)
        _until(lambda: (_child(up.proc, "all-queues@") or worker).pid != worker.pid, 30,
               "a new worker", up)  # fmt: skip
        resumed_by = _until(lambda: training(not_by=worker_id), 180, "the stage to resume", up)
        remember()

        # Redis is killed while the stage trains: it is back within 30 s.
        redis_pid_file = data_dir / "redis" / "redis.pid"
        redis_pid = _pid_in(redis_pid_file)
        os.kill(redis_pid, signal.SIGKILL)
        _until(lambda: _pid_in(redis_pid_file) != redis_pid and redis_running(data_dir), 30,
               "Redis", up)  # fmt: skip

        def finished():
            state = _stage(data_dir, run_id)[0]
            assert state in ("queued", "running", "succeeded"), state
            return state == "succeeded"

        _until(finished, 600, "the stage to finish", up)
        out = _manage(data_dir, "shell", "-c", _LOSS_STEPS.format(run=run_id))
        assert "state succeeded" in out, out
        steps = json.loads(out.split("steps ")[1])
        assert steps == list(range(1, SUPERVISED_STEPS + 1)), "every step stored exactly once"

        # PostgreSQL is killed: it is back within 30 s and serves the web server again.
        pg_pid_file = data_dir / "postgres" / "postmaster.pid"
        pg_pid = _pid_in(pg_pid_file)
        os.kill(pg_pid, signal.SIGKILL)
        _until(lambda: _pid_in(pg_pid_file) != pg_pid and postgres_running(data_dir), 30,
               "PostgreSQL", up)  # fmt: skip
        _until(lambda: _runs_counted(data_dir) == 1, 30, "a query", up)
        remember()

    log = up.log.read_text()
    assert re.search(r"stagewise: web exited \(code -?\d+\); restarting in 1s", log), log[-6000:]
    assert "stagewise: worker exited (code -9); restarting in 1s" in log, log[-6000:]
    assert "stagewise: redis is gone; restarting in 1s" in log, log[-6000:]
    assert "stagewise: postgres is gone; restarting in 1s" in log, log[-6000:]
    assert resumed_by != worker_id
    time.sleep(1)
    left = [p for p in seen if _running(p)]
    assert left == [], left
    assert _descendants_and_servers(psutil.Process(), data_dir) == []
