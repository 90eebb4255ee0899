"""Stagewise as compose runs it on several machines, here as separate processes on one:
PostgreSQL and Redis started stand-alone (the embedded packages' servers, as daemons of their
own, not children of any Stagewise process), the one-shot bootstrap, the web tier with two
processes, the scheduler, the control worker and two training workers on different queues.
Every Stagewise process gets only environment variables (the compose file's, see
docker/compose.yml and docker/.env.example), not this test's environment or settings.

Two pipelines are submitted over the REST API, one per queue; both finish, each on its own
queue's worker, with every metric step stored once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.runs.reduced_plan import reduced_lm_plan
from tests.servers import free_port
from tests.workers import ROOT

pytestmark = pytest.mark.slow

SMALL = {
    **{f"stages.{i}.steps": 10 for i in range(3)},
    **{f"stages.{i}.schedule.warmup_steps": 2 for i in range(3)},
    **{f"stages.{i}.eval_interval": 5 for i in range(3)},
    **{f"stages.{i}.checkpoint_interval": 5 for i in range(3)},
    "stages.1.dense_eval": {"interval": 2, "steps": 4},
    "stages.2.dense_eval": {"interval": 2, "steps": 4},
}


def _plan(name: str) -> dict:
    from runs.services.plans import apply_overrides

    return {**apply_overrides(reduced_lm_plan(), SMALL), "name": name}


class Cluster:
    """The processes, their logs, and the environment every Stagewise process gets."""

    def __init__(self, tmp: Path):
        from webapp.embedded import ensure_postgres, ensure_redis

        self.tmp = tmp
        servers = tmp / "servers"  # the "database machine": its own data dir
        self.db_url = ensure_postgres(servers)
        self.redis_url = ensure_redis(servers)
        self.servers = servers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": "system-test-secret-key-" + "x" * 40,
            "STAGEWISE_DATA_DIR": str(tmp / "shared-data"),  # the shared volume
            "STAGEWISE_ADMIN_PASSWORD": "system-test-admin",
            "STAGEWISE_HTTPS": "false",
            "STAGEWISE_LEASE_SECONDS": "6",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def run(self, *cmd: str) -> str:
        out = subprocess.run(
            [sys.executable, *cmd], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def start(self, name: str, *cmd: str) -> None:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", *cmd],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker(self, name: str, queue: str) -> None:
        self.start(
            name, "celery", "-A", "webapp", "worker", "-Q", queue, "--concurrency", "1",
            "-P", "solo", "-n", f"{name}@%h", "--loglevel", "INFO",
        )  # fmt: skip

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log"))
        )

    def stop(self) -> None:
        import signal

        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        from webapp.embedded import stop_all

        stop_all(self.servers)


def _api(cluster: Cluster, token: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        cluster.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _wait(cond, timeout: float, what: str, cluster: Cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{cluster.logs()}")


WEB = ("web", "webapp.web", "--processes", "2", "-b", "127.0.0.1", "-p")  # + port, app

# A token for the bootstrapped admin, and the second queue: what an admin does in /admin/.
SETUP = """
from django.contrib.auth import get_user_model
from runs.models import Queue, Team
from runs.services.tokens import token_create
admin = get_user_model().objects.get(is_superuser=True)
Queue.objects.get_or_create(name="second")
print(token_create(user=admin, team=Team.objects.get(slug="default"), name="system")[1])
"""

COUNTS = """
import json
from django.db.models import Count
from runs.models import MetricPoint
out = {}
for run_id in %s:
    rows = MetricPoint.objects.filter(series__run_id=run_id)
    dupes = rows.values("series_id", "step").annotate(n=Count("step")).filter(n__gt=1).count()
    out[run_id] = {"points": rows.count(), "dupes": dupes}
print(json.dumps(out))
"""


def _ready(cluster: Cluster) -> bool:
    try:
        with urllib.request.urlopen(cluster.url + "/readyz", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def _up(cluster: Cluster) -> str:
    """Bootstrap and start every process; the admin's API token."""
    cluster.run("manage.py", "bootstrap")
    out = cluster.run("manage.py", "bootstrap")  # a second start changes nothing
    assert "First start" not in out
    token = cluster.run("manage.py", "shell", "-c", SETUP).strip().splitlines()[-1]
    cluster.start(*WEB, str(cluster.port), "webapp.asgi:application")
    cluster.start("scheduler", "celery", "-A", "webapp", "beat", "--loglevel", "INFO",
                  "-s", str(cluster.tmp / "celerybeat-schedule"))  # fmt: skip
    cluster.worker("control", "stagewise-control")
    cluster.worker("train-a", "default")
    cluster.worker("train-b", "second")

    _wait(lambda: _ready(cluster), 90, "the web tier to be ready", cluster)
    return token


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_two_pipelines_finish_on_two_queues_with_every_part_its_own_process(cluster):
    token = _up(cluster)
    runs = {
        queue: _api(cluster, token, "/api/runs/", {"plan": _plan(f"on {queue}"), "queue": queue})
        for queue in ("default", "second")
    }

    def finished():
        states = {
            q: _api(cluster, token, f"/api/runs/{r['id']}/")["state"] for q, r in runs.items()
        }
        return (
            states
            if all(s in ("succeeded", "failed", "cancelled") for s in states.values())
            else None
        )

    states = _wait(finished, 300, "both runs to finish", cluster)
    assert states == {"default": "succeeded", "second": "succeeded"}, cluster.logs()
    ids = [r["id"] for r in runs.values()]
    counts = json.loads(cluster.run("manage.py", "shell", "-c", COUNTS % ids).splitlines()[-1])
    for queue, run in runs.items():
        got = counts[str(run["id"])]
        assert got["dupes"] == 0 and got["points"] > 0, got
        # each stage ran on its own queue's worker, and only there (runs.execution.runner logs
        # "stage <i> of run <id> starts on <worker>")
        mine, other = ("train-a", "train-b") if queue == "default" else ("train-b", "train-a")
        starts = [f"stage {i} of run {run['id']} starts" for i in range(3)]
        assert all(s in (cluster.tmp / f"{mine}.log").read_text() for s in starts), queue
        assert not any(s in (cluster.tmp / f"{other}.log").read_text() for s in starts), queue
    # the web tier really is two processes, both serving
    web = cluster.procs["web"]
    children = subprocess.run(["pgrep", "-P", str(web.pid)], capture_output=True, text=True)
    assert len(children.stdout.split()) == 2, children.stdout
