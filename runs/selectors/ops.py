"""What operators read: whether this process can serve (``readiness``) and the numbers a
Prometheus server scrapes (``OpsCollector``), all computed when asked from Postgres, Redis and
the workers' own answers, so every web process reports the same."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runs.models import Queue, Run, RunState, Series, StageRun, StageState

log = logging.getLogger(__name__)
CHECK_TIMEOUT = 2.0  # seconds a readiness check may wait on Redis


def _postgres() -> str | None:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready", said in one line
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def _migrations() -> str | None:
    try:
        executor = MigrationExecutor(connection)
        todo = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return f"{len(todo)} migrations not applied" if todo else None


def _redis() -> str | None:
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT
        )
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def readiness() -> dict[str, str | None]:
    """{check: None when it passes, else the reason}: postgres, migrations (skipped while
    Postgres is away), redis."""
    pg = _postgres()
    return {
        "postgres": pg,
        "migrations": _migrations() if pg is None else "postgres is not reachable",
        "redis": _redis(),
    }


class OpsCollector(Collector):
    """Queue depth per queue, running stages, stored points (a counter: its rate is the
    ingest rate in points/s), runs by state, workers and websocket clients."""

    def __init__(self, websocket_clients):
        self.websocket_clients = websocket_clients  # () -> int, this process's clients

    def collect(self) -> Iterator:
        depth = GaugeMetricFamily(
            "stagewise_queue_depth", "Stages waiting for a worker, per queue", labels=["queue"]
        )
        waiting = dict(
            StageRun.objects.filter(state=StageState.QUEUED)
            .values_list("run__queue__name")
            .annotate(n=Count("id"))
        )
        for name in Queue.objects.order_by("name").values_list("name", flat=True):
            depth.add_metric([name], waiting.get(name, 0))
        yield depth
        yield GaugeMetricFamily(
            "stagewise_running_stages",
            "Stages running on workers",
            value=StageRun.objects.filter(state=StageState.RUNNING).count(),
        )
        runs = GaugeMetricFamily("stagewise_runs", "Runs by state", labels=["state"])
        by_state = dict(Run.objects.values_list("state").annotate(n=Count("id")))
        for state in RunState.values:
            runs.add_metric([state], by_state.get(state, 0))
        yield runs
        points = Series.objects.aggregate(n=Sum("count"))["n"] or 0
        yield CounterMetricFamily(
            "stagewise_points_stored", "Metric points stored (rate: ingest points/s)", points
        )
        yield from self._workers()
        yield GaugeMetricFamily(
            "stagewise_websocket_clients",
            "Open websocket connections of this web process",
            value=self.websocket_clients(),
        )

    def _workers(self) -> Iterator:
        from runs.selectors.workers import worker_counts

        fam = GaugeMetricFamily(
            "stagewise_workers", "Registered workers by state", labels=["state"]
        )
        for state, n in worker_counts().items():
            fam.add_metric([state], n)
        yield fam
