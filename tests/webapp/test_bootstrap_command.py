"""``manage.py bootstrap`` (the compose one-shot service, and the first step of ``up``): the
admin, default team and queue and example pipelines once; a second call changes nothing."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from runs.models import Pipeline, Queue, Team

pytestmark = pytest.mark.django_db


def _counts() -> tuple[int, ...]:
    users = get_user_model().objects.count()
    return users, Team.objects.count(), Queue.objects.count(), Pipeline.objects.count()


def test_bootstrap_is_idempotent(monkeypatch):
    monkeypatch.setenv("STAGEWISE_ADMIN_PASSWORD", "from-env-1234")
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "admin login is  admin / (from STAGEWISE_ADMIN_PASSWORD)" in out.getvalue()
    first = _counts()
    assert first[0] == 1 and first[1] == 1 and first[2] == 1 and first[3] >= 3
    assert get_user_model().objects.get().check_password("from-env-1234")
    again = io.StringIO()
    call_command("bootstrap", stdout=again)
    assert _counts() == first and again.getvalue() == ""
