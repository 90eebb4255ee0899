"""Shared helpers for benchmarks/ingest.py and benchmarks/read.py (not a test module).

* ``setup_django()``: use DATABASE_URL/REDIS_URL if both are set, else a throw-away
  STAGEWISE_DATA_DIR with the embedded Postgres + Redis (stopped and removed at exit);
  then ``migrate``.
* ``Subprocs``: starts daphne (``webapp.asgi:application``) and ``mlflow server`` as
  subprocesses in their own process groups and kills them (and their children) at exit.
* The MLflow *server* runs from a separate virtualenv (``.venv-bench``, see
  benchmarks/README.md): mlflow pins ``pyarrow<26`` while requirements.txt pins 26.0.1. The
  main venv only has ``mlflow-skinny`` (the client, from requirements-bench.txt).
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MLFLOW_VERSION = "3.17.2"
MLFLOW_VENV = Path(os.environ.get("MLFLOW_VENV", ROOT / ".venv-bench"))
MLFLOW_MAX_METRICS_PER_BATCH = 1000  # MlflowClient.log_batch limit (MAX_METRICS_PER_BATCH)


# ------------------------------------------------------------------ machine


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (nproc), {cpu}, RAM {mem}, load avg {load}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


# ------------------------------------------------------------------ Django


def setup_django(keep: bool = False) -> None:
    """Configure Django on a fresh embedded DB (or the given DATABASE_URL) and migrate it."""
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        data_dir = Path(tempfile.mkdtemp(prefix="stagewise-bench-"))
        os.environ["STAGEWISE_DATA_DIR"] = str(data_dir)
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)

        def _cleanup() -> None:
            from webapp.embedded import remove_data

            if keep:
                print(f"(kept data dir {data_dir})")
                return
            remove_data(data_dir)

        atexit.register(_cleanup)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def pg_socket_dir() -> str:
    """The unix-socket directory (or host) of the database Django uses."""
    from django.db import connection

    d = connection.settings_dict
    return d.get("HOST") or d.get("OPTIONS", {}).get("host", "")


def ensure_database(name: str) -> None:
    """CREATE DATABASE name (dropping an old one) on the server Django uses."""
    import psycopg
    from django.db import connection

    d = connection.settings_dict
    kw = {"dbname": "postgres", "user": d["USER"], "host": pg_socket_dir(), "autocommit": True}
    if d.get("PASSWORD"):
        kw["password"] = d["PASSWORD"]
    if d.get("PORT"):
        kw["port"] = d["PORT"]
    with psycopg.connect(**kw) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def sqlalchemy_url(dbname: str) -> str:
    from django.db import connection

    d = connection.settings_dict
    host = pg_socket_dir()
    auth = d["USER"] + (f":{d['PASSWORD']}" if d.get("PASSWORD") else "")
    if host.startswith("/"):
        return f"postgresql+psycopg://{auth}@/{dbname}?host={host}"
    return f"postgresql+psycopg://{auth}@{host}:{d.get('PORT') or 5432}/{dbname}"


def make_run(name: str = "bench"):
    """A user (with an API token), a team they can write to, a queue and an external run."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from runs.models import Membership, Queue, Run, RunState, StageRun, StageState, Team
    from runs.services.tokens import token_create

    user, _ = get_user_model().objects.get_or_create(username="bench")
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": "member"})
    queue, _ = Queue.objects.get_or_create(name="bench")
    # An external run (its client writes its points over the API) with one long stage.
    run = Run.objects.create(team=team, queue=queue, name=name, plan={}, created_by=user,
                             external=True, state=RunState.RUNNING, started_at=timezone.now())  # fmt: skip
    StageRun.objects.create(run=run, stage_index=0, name="bench", state=StageState.RUNNING,
                            start_step=0, end_step=10**12)  # fmt: skip
    _, key = token_create(user=user, team=team, name=f"benchmark {name}")
    return run, key


def point_counts(run_id: int) -> tuple[int, int]:
    """(raw points, rollup rows) stored for a run."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM runs_metricpoint p JOIN runs_series s ON s.id = p.series_id "
            "WHERE s.run_id = %s",
            [run_id],
        )
        n_points = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM runs_seriesrollup r JOIN runs_series s ON s.id = r.series_id "
            "WHERE s.run_id = %s",
            [run_id],
        )
        return n_points, cur.fetchone()[0]


# ------------------------------------------------------------------ subprocesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


class Subprocs:
    """Servers started by a benchmark; all are killed (process group) on stop() / exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="stagewise-bench-procs-"))
        atexit.register(self.stop)

    def _start(self, name: str, cmd: list[str], env: dict) -> tuple[subprocess.Popen, Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc, log

    def daphne(self, processes: int = 1) -> str:
        """Stagewise's ASGI app under daphne, attached to the same DB/Redis (``processes`` > 1:
        the multi-process web tier, ``python -m webapp.web --processes N``). Returns base URL."""
        from django.conf import settings

        from tests.workers import test_database_url

        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "STAGEWISE_DATA_DIR": str(settings.STAGEWISE_DATA_DIR),
            "LOG_LEVEL": "ERROR",
            "PYTHONUNBUFFERED": "1",
        }
        server = ["webapp.web", "--processes", str(processes)] if processes > 1 else ["daphne"]
        cmd = [sys.executable, "-m", *server, "-b", "127.0.0.1", "-p", str(port)]
        proc, log = self._start(f"web-{processes}", [*cmd, "webapp.asgi:application"], env)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/api/", 60, proc, log)
        return url

    def mlflow(self) -> str:
        """``mlflow server`` with a Postgres backend store (database ``mlflow``)."""
        exe = MLFLOW_VENV / "bin" / "mlflow"
        if not exe.exists():
            raise SystemExit(
                f"{exe} not found. Create the MLflow server venv first:\n"
                f"  python3.11 -m venv {MLFLOW_VENV} && {MLFLOW_VENV}/bin/pip install "
                f"mlflow=={MLFLOW_VERSION} 'psycopg[binary]==3.3.9'"
            )
        ensure_database("mlflow")
        port = free_port()
        artifacts = self.tmp / "mlartifacts"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [str(exe), "server", "--backend-store-uri", sqlalchemy_url("mlflow"),
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
        proc, log = self._start("mlflow", cmd, env)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", 180, proc, log)
        return url

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------ reporting


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def table(rows: list[tuple], headers: tuple) -> str:
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(headers)]
    widths = [max(len(c) for c in col) for col in cols]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, sep, *body])
