import pytest
from django.contrib import admin
from django.urls import reverse

from runs.models import Queue
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client):
    user = f.UserFactory(is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_every_registered_model_has_a_working_changelist(admin_client_):
    f.RunFactory()
    f.CheckpointFactory()
    f.WorkerLeaseFactory()
    f.DatasetVersionFactory()
    f.PipelineFactory()
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert admin_client_.get(url).status_code == 200, url


def test_queue_admin_actions_pause_resume_and_tune(admin_client_):
    q = f.QueueFactory(max_concurrent=1, priority=0)
    url = reverse("admin:runs_queue_changelist")
    for action in ["pause", "raise_priority", "more_concurrency", "more_concurrency"]:
        r = admin_client_.post(url, {"action": action, "_selected_action": [q.pk]})
        assert r.status_code == 302
    q.refresh_from_db()
    assert (q.paused, q.priority, q.max_concurrent) == (True, 1, 3)
    admin_client_.post(url, {"action": "resume", "_selected_action": [q.pk]})
    admin_client_.post(url, {"action": "less_concurrency", "_selected_action": [q.pk]})
    q.refresh_from_db()
    assert (q.paused, q.max_concurrent) == (False, 2)


def test_admin_can_create_a_queue(admin_client_):
    r = admin_client_.post(
        reverse("admin:runs_queue_add"),
        {"name": "gpu-a100", "priority": 5, "max_concurrent": 2, "description": ""},
    )
    assert r.status_code == 302
    assert Queue.objects.filter(name="gpu-a100", max_concurrent=2).exists()
