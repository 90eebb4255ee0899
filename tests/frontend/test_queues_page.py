"""The queues page: whether a worker listens on each queue, how long queued stages have
waited, and external runs kept out of the queue's running stages."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from frontend import views
from runs.services.queues import queues_with_consumers
from tests import factories as f
from tests.workers import Workers, wait_for

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _fresh_worker_status():
    cache.delete(views.QUEUES_CONSUMED_CACHE_KEY)
    yield
    cache.delete(views.QUEUES_CONSUMED_CACHE_KEY)


@pytest.fixture
def member(client, user):
    client.force_login(user)
    return client


def _queue(**kw):
    return f.QueueFactory(name=f"qp-{uuid.uuid4().hex[:8]}", **kw)


def _section(page: str, queue_name: str) -> str:
    m = re.search(
        rf'<section class="card queue" data-queue="{queue_name}">(.*?)</section>', page, re.S
    )
    assert m, f"no section for {queue_name}"
    return m.group(1)


def test_listened_queue_shows_listening_and_another_no_worker(member, tmp_path):
    listened, idle = _queue(), _queue()
    workers = Workers(tmp_path)
    try:
        workers.start(listened.name, f"qp-{uuid.uuid4().hex[:6]}")
        wait_for(
            lambda: listened.name in (queues_with_consumers() or set()),
            60,
            "the worker to consume its queue",
            workers.logs,
        )
        page = member.get("/queues/").content.decode()
    finally:
        workers.stop_all()
    assert 'data-listening="yes">1 worker listening' in _section(page, listened.name)
    idle_section = _section(page, idle.name)
    assert 'data-listening="no"' in idle_section
    assert "no worker listening — runs here will wait" in idle_section


def test_broker_unreachable_shows_unknown_and_is_asked_once_per_view(member, monkeypatch):
    """A real broker address where nothing listens (a closed local port)."""
    from runs.services import queues as queues_service
    from webapp.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")
    calls = []

    def asked():
        calls.append(1)
        return queues_service.queue_consumer_counts()

    monkeypatch.setattr(views, "queue_consumer_counts", asked)
    a, b = _queue(), _queue()
    page = member.get("/queues/").content.decode()
    for q in (a, b):
        assert "worker status unknown (broker unreachable)" in _section(page, q.name)
    assert len(calls) == 1
    member.get("/queues/")  # within the cache's few seconds: not asked again
    assert len(calls) == 1


def test_external_running_run_does_not_occupy_the_queue(member, team):
    queue = _queue()
    ext = f.RunFactory(team=team, queue=queue, name="ext-elsewhere", external=True, state="running")
    f.StageRunFactory(run=ext, stage_index=0, state="running", queued_at=timezone.now())
    own = f.RunFactory(team=team, queue=queue, name="own-waiting", state="queued")
    f.StageRunFactory(
        run=own, stage_index=0, state="queued", queued_at=timezone.now() - timedelta(minutes=7)
    )
    section = _section(member.get("/queues/").content.decode(), queue.name)
    rows = section.split("</thead>")[1].split("</table>")[0]
    assert "ext-elsewhere" not in rows and "state-running" not in rows  # no slot taken
    assert "own-waiting" in rows and "waiting 7\xa0minutes" in rows
    external_note = section.split('class="muted small external-runs"')[1]
    assert "ext-elsewhere" in external_note and "badge external" in external_note
