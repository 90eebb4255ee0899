"""GET /api/workers/: the workers that answer and the queues each consumes, as far as the
user's teams may use them; 503 when the broker cannot be asked."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from runs.selectors import workers
from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/api/workers/"


@pytest.fixture(autouse=True)
def _no_cached_answer():
    cache.delete(workers.CACHE_KEY)
    yield
    cache.delete(workers.CACHE_KEY)


@pytest.fixture
def replies(monkeypatch):
    answer: dict[str, list[str]] = {}
    monkeypatch.setattr(workers, "_ask_workers", lambda timeout: answer)
    return answer


def test_the_live_broker_is_asked_and_no_worker_is_an_empty_page(api):
    r = api.get(URL)
    assert r.status_code == 200
    assert r.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_workers_with_the_queues_the_users_teams_may_use(api, team, replies):
    f.QueueFactory(name="open")
    mine = f.QueueFactory(name="mine")
    mine.allowed_teams.add(team)
    theirs = f.QueueFactory(name="theirs")
    theirs.allowed_teams.add(f.TeamFactory())
    replies.update({
        "all-queues@box": ["mine", "open", "theirs"],
        "gpu1@box": ["theirs"],
        "control@box": [settings.STAGEWISE_CONTROL_QUEUE],
        "old@box": ["open", "deleted-queue"],
    })  # fmt: skip
    body = api.get(URL).json()
    assert body["count"] == 2
    assert body["results"] == [
        {"name": "all-queues@box", "queues": ["mine", "open"], "all_queues": True},
        {"name": "old@box", "queues": ["open"], "all_queues": False},
    ]
    page = api.get(URL, {"limit": 1, "offset": 1}).json()
    assert [w["name"] for w in page["results"]] == ["old@box"] and page["next"] is None


def test_staff_see_every_queue(team, replies):
    private = f.QueueFactory(name="private")
    private.allowed_teams.add(f.TeamFactory())
    replies["gpu1@box"] = ["private"]
    staff = f.UserFactory(is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    assert client.get(URL).json()["results"][0]["queues"] == ["private"]


def test_the_answer_is_cached_for_a_few_seconds(api, replies):
    f.QueueFactory(name="q")
    replies["a@box"] = ["q"]
    assert api.get(URL).json()["count"] == 1
    replies.clear()
    assert api.get(URL).json()["count"] == 1
    cache.delete(workers.CACHE_KEY)
    assert api.get(URL).json()["count"] == 0


def test_a_broker_that_is_away_is_a_503(api, monkeypatch):
    def away(timeout):
        raise ConnectionError("broker away")

    monkeypatch.setattr(workers, "_ask_workers", away)
    r = api.get(URL)
    assert r.status_code == 503
    assert "broker" in r.json()["detail"]


def test_anonymous_is_a_401():
    assert APIClient().get(URL).status_code == 401
