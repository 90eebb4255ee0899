"""The worker registry: workers announce themselves (host, devices, memory, queues, version)
and heartbeat; silent ones are marked lost; GET /api/workers/ lists them with the queues the
user's teams may use."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from runs.models import Worker
from runs.services.workers import (
    worker_announce,
    worker_heartbeat,
    worker_stopped,
    workers_mark_lost,
)
from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/api/workers/"


def _facts(queues: list[str], **over) -> dict:
    facts = {
        "host": "box",
        "pid": 42,
        "queues": queues,
        "devices": [{"kind": "cuda", "name": "H200", "memory_bytes": 141 * 2**30}],
        "memory_bytes": 2**36,
        "version": "0.1.0",
    }
    return {**facts, **over}


def test_no_worker_is_an_empty_page(api):
    r = api.get(URL)
    assert r.status_code == 200
    assert r.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_workers_with_the_queues_the_users_teams_may_use(api, team):
    f.QueueFactory(name="open")
    mine = f.QueueFactory(name="mine")
    mine.allowed_teams.add(team)
    theirs = f.QueueFactory(name="theirs")
    theirs.allowed_teams.add(f.TeamFactory())
    worker_announce(name="all-queues@box", facts=_facts(["mine", "open", "theirs"]))
    worker_announce(name="gpu1@box", facts=_facts(["theirs"]))
    worker_announce(name="control@box", facts=_facts([settings.STAGEWISE_CONTROL_QUEUE]))
    worker_announce(name="old@box", facts=_facts(["open", "deleted-queue"]))
    body = api.get(URL).json()
    assert body["count"] == 2
    first, second = body["results"]
    assert (first["name"], first["queues"], first["all_queues"]) == (
        "all-queues@box",
        ["mine", "open"],
        True,
    )
    assert first["state"] == "online" and first["host"] == "box" and first["version"] == "0.1.0"
    assert first["devices"] == [{"kind": "cuda", "name": "H200", "memory_bytes": 141 * 2**30}]
    assert first["memory_bytes"] == 2**36
    assert (second["name"], second["queues"]) == ("old@box", ["open"])
    page = api.get(URL, {"limit": 1, "offset": 1}).json()
    assert [w["name"] for w in page["results"]] == ["old@box"] and page["next"] is None


def test_silent_workers_are_marked_lost_and_come_back_with_a_heartbeat(api):
    f.QueueFactory(name="q")
    worker_announce(name="a@box", facts=_facts(["q"]))
    worker_announce(name="b@box", facts=_facts(["q"]))
    later = timezone.now() + timedelta(seconds=settings.STAGEWISE_WORKER_LOST_SECONDS + 1)
    assert worker_heartbeat(name="b@box", queues=["q"])
    Worker.objects.filter(name="b@box").update(heartbeat_at=later)
    assert workers_mark_lost(now=later) == 1
    states = {w["name"]: w["state"] for w in api.get(URL).json()["results"]}
    assert states == {"a@box": "lost", "b@box": "online"}
    assert worker_heartbeat(name="a@box", queues=["q"])
    assert Worker.objects.get(name="a@box").state == "online"
    assert not worker_heartbeat(name="never-announced@box", queues=["q"])


def test_stopped_workers_are_listed_for_a_day(api):
    f.QueueFactory(name="q")
    worker_announce(name="a@box", facts=_facts(["q"]))
    worker_stopped(name="a@box")
    assert [w["state"] for w in api.get(URL).json()["results"]] == ["stopped"]
    Worker.objects.update(stopped_at=timezone.now() - timedelta(days=2))
    assert api.get(URL).json()["count"] == 0


def test_staff_see_every_queue(team):
    private = f.QueueFactory(name="private")
    private.allowed_teams.add(f.TeamFactory())
    worker_announce(name="gpu1@box", facts=_facts(["private"]))
    staff = f.UserFactory(is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    assert client.get(URL).json()["results"][0]["queues"] == ["private"]


def test_anonymous_is_a_401():
    assert APIClient().get(URL).status_code == 401


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_announces_itself_and_says_when_it_stops(tmp_path, api, monkeypatch):
    import signal

    from tests.workers import Workers, wait_for

    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    w = Workers(tmp_path)
    try:
        proc = w.start(queue.name, "reg")
        wait_for(lambda: Worker.objects.filter(name__startswith="reg@").exists(), 120,
                 "the worker to announce itself", w.logs)  # fmt: skip
        row = Worker.objects.get(name__startswith="reg@")
        assert row.pid == proc.pid and row.queues == [queue.name] and row.state == "online"
        assert row.devices and row.devices[0]["kind"] in ("cpu", "cuda")
        assert row.memory_bytes > 0 and row.version
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        row.refresh_from_db()
        assert row.state == "stopped" and row.stopped_at is not None
    finally:
        w.stop_all()
