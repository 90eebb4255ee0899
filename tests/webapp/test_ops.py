"""/healthz, /readyz and /metrics against the real Postgres and Redis; JSON log lines carry
the run and stage a worker executes."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from runs.models import StageState
from tests import factories as f
from webapp.log_context import log_context

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        r = Client().get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "process": os.getpid()}
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/healthz").status_code == 405
    assert strict.delete("/readyz").status_code == 405


def test_readyz_checks_postgres_redis_and_migrations():
    r = Client().get("/readyz")
    assert r.status_code == 200, r.content
    assert r.json() == {
        "status": "ready",
        "checks": {"postgres": None, "migrations": None, "redis": None},
    }


def test_readyz_is_503_naming_the_check_that_fails(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    r = Client().get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    assert body["checks"]["postgres"] is None and body["checks"]["redis"]


def _scrape(client: Client, **headers) -> dict[str, dict]:
    r = client.get("/metrics", **headers)
    assert r.status_code == 200, r.content
    assert r["Content-Type"].startswith("text/plain")
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(r.content.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_count_queues_stages_points_and_runs():
    from runs.services.workers import worker_announce, worker_stopped

    facts = {"host": "h", "pid": 1, "queues": ["q"], "devices": [], "memory_bytes": None}
    worker_announce(name="w1@h", facts={**facts, "version": "x"})
    worker_announce(name="w2@h", facts={**facts, "version": "x"})
    worker_stopped(name="w2@h")
    q1, q2 = f.QueueFactory(name="q-busy"), f.QueueFactory(name="q-idle")
    waiting = f.RunFactory(queue=q1, state="queued")
    f.StageRunFactory(run=waiting, stage_index=0, state=StageState.QUEUED)
    f.StageRunFactory(run=waiting, stage_index=1, state=StageState.QUEUED)
    running = f.RunFactory(queue=q2, state="running")
    f.StageRunFactory(run=running, stage_index=0, state=StageState.RUNNING)
    f.SeriesFactory(run=running, key="train/loss", count=120)
    f.SeriesFactory(run=running, key="lr", count=80)
    staff = f.UserFactory(is_staff=True)
    client = Client()
    client.force_login(staff)
    m = _scrape(client)
    assert m["stagewise_queue_depth"][(("queue", "q-busy"),)] == 2
    assert m["stagewise_queue_depth"][(("queue", "q-idle"),)] == 0
    assert m["stagewise_running_stages"][()] == 1
    assert m["stagewise_points_stored_total"][()] == 200
    assert m["stagewise_runs"][(("state", "queued"),)] == 1
    assert m["stagewise_workers"][(("state", "online"),)] == 1
    assert m["stagewise_workers"][(("state", "stopped"),)] == 1
    assert m["stagewise_websocket_clients"][()] == 0


def test_metrics_need_staff_or_the_scrape_token(settings, user):
    assert Client().get("/metrics").status_code == 403
    member = Client()
    member.force_login(user)
    assert member.get("/metrics").status_code == 403
    settings.STAGEWISE_METRICS_TOKEN = "s3cret"
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert "stagewise_running_stages" in _scrape(Client(), HTTP_AUTHORIZATION="Bearer s3cret")


def test_json_log_lines_carry_the_run_and_stage():
    stream = io.StringIO()
    config = json.loads(json.dumps(settings.LOGGING))
    config["handlers"]["console"]["formatter"] = "json"
    config["handlers"]["console"]["stream"] = stream
    config["root"]["level"] = "INFO"
    logging.config.dictConfig(config)
    try:
        with log_context(run_id=7, stage_index=2):
            logging.getLogger("runs.execution.runner").info("stage starts")
        logging.getLogger("runs").warning("outside")
    finally:
        logging.config.dictConfig(settings.LOGGING)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "stage starts" and first["level"] == "INFO"
    assert (first["run_id"], first["stage_index"]) == (7, 2)
    assert "run_id" not in second and second["logger"] == "runs"
