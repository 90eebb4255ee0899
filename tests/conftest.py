"""Test session wiring: real PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL are
set), logged-in API clients and model factories."""

from __future__ import annotations

import os

import pytest

# Django-only imports stay inside fixtures: tests/trainers runs without Django too.


def pytest_sessionfinish(session, exitstatus):
    # Stop the embedded servers this session started, unless asked to keep them warm.
    from django.conf import settings

    if settings.configured and getattr(settings, "STAGEWISE_EMBEDDED", False):
        if not os.environ.get("STAGEWISE_KEEP_SERVICES"):
            from pathlib import Path

            from webapp.embedded import started_here, stop_postgres, stop_redis

            data_dir = Path(settings.STAGEWISE_DATA_DIR)
            if "redis" in started_here:
                stop_redis(data_dir)
            if "postgres" in started_here:
                stop_postgres(data_dir)


@pytest.fixture(autouse=True)
def _close_sync_thread_connections():
    """Async code under test (consumers through channels' communicators, sync_to_async) runs its
    queries on asgiref's one sync thread, which lives for the whole session. The communicators
    turn channels' close_old_connections into a no-op, so that thread keeps its connection after
    the test and holds the test database open at teardown ("being accessed by other users")."""
    yield
    try:
        from asgiref.sync import SyncToAsync
        from django.conf import settings
    except ImportError:  # tests/trainers without Django
        return
    if settings.configured:
        from django.db import connections

        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture
def team(db):
    from tests import factories

    return factories.TeamFactory()


@pytest.fixture
def user(team):
    from tests import factories

    u = factories.UserFactory()
    factories.MembershipFactory(user=u, team=team, role="member")
    return u


@pytest.fixture
def api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def queue(db):
    from tests import factories

    return factories.QueueFactory()
