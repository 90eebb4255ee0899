"""Pages and dashboard endpoints: team scoping, plan preview errors, uploads, queue control."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from runs.models import DatasetVersion, Queue
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def client_for():
    def make(user) -> Client:
        c = Client()
        c.force_login(user)
        return c

    return make


@pytest.fixture
def run(team, queue):
    return team.runs.create(name="mine <b>", plan=reduced_lm_plan(), queue=queue, state="queued")


def test_every_page_renders_for_a_member(user, run, client_for):
    c = client_for(user)
    for url in ["/", f"/runs/{run.pk}/", "/compare/", "/pipelines/", "/pipelines/new/",
                "/pipelines/new/?example=lm_prose_code_sft", "/datasets/", "/queues/"]:  # fmt: skip
        resp = c.get(url)
        assert resp.status_code == 200, url
    body = c.get(f"/runs/{run.pk}/").content.decode()
    assert "mine &lt;b&gt;" in body and "mine <b>" not in body.split("page-data")[0]
    assert f'href="/api/runs/{run.pk}/export/" download' in body


def test_fork_page_data_names_its_parent_and_fork_step(user, team, queue, run, client_for):
    ckpt = f.CheckpointFactory(stage_run=f.StageRunFactory(run=run), step=40)
    fork = team.runs.create(
        name="fork", plan=reduced_lm_plan(), queue=queue, parent=run, fork_checkpoint=ckpt
    )
    c = client_for(user)
    resp = c.get(f"/runs/{fork.pk}/")
    data = resp.context["page_data"]
    assert (data["parent"], data["parent_name"], data["fork_step"]) == (run.pk, run.name, 40)
    body = resp.content.decode()
    assert "forked from" in body and f'href="/runs/{run.pk}/"' in body and "at step 40" in body
    summary = c.get(f"/api/ui/runs/{fork.pk}/").json()
    assert (summary["parent"], summary["fork_step"]) == (run.pk, 40)
    # a run that is no fork: no parent, no fork line
    data = c.get(f"/runs/{run.pk}/").context["page_data"]
    assert (data["parent"], data["fork_step"]) == (None, None)
    assert "forked from" not in c.get(f"/runs/{run.pk}/").content.decode()


def test_anonymous_users_are_sent_to_login(run):
    assert Client().get("/").status_code == 302
    assert Client().get(f"/runs/{run.pk}/").status_code == 302


def test_run_page_and_endpoints_of_another_team_are_not_found(run, client_for):
    outsider = f.UserFactory()
    f.MembershipFactory(user=outsider)
    c = client_for(outsider)
    assert c.get(f"/runs/{run.pk}/").status_code == 404
    assert c.get(f"/api/ui/runs/{run.pk}/").status_code == 404
    assert c.get(f"/api/ui/runs/{run.pk}/analysis/").status_code == 404
    assert c.get("/api/ui/runs/").json()["count"] == 0


def test_run_rows_have_progress_and_filters(user, run, client_for):
    c = client_for(user)
    data = c.get("/api/ui/runs/?state=queued").json()
    assert data["count"] == 1
    row = data["results"][0]
    assert row["progress"]["total"] == 0 or row["progress"]["step"] == 0
    assert c.get("/api/ui/runs/?state=running").json()["count"] == 0


def test_plan_preview_returns_field_paths_or_the_lr_curve(user, client_for):
    c = client_for(user)
    plan = reduced_lm_plan()
    bad = json.loads(json.dumps(plan))
    bad["stages"][1]["data"][0]["weight"] = -1
    resp = c.post("/api/ui/plan-preview/", {"plan": bad}, content_type="application/json")
    assert resp.status_code == 400
    assert "stages.1.data.0.weight" in resp.json()["errors"]
    resp = c.post("/api/ui/plan-preview/", {"plan": plan}, content_type="application/json")
    assert resp.status_code == 200
    out = resp.json()
    assert out["steps"][-1] == 100 and len(out["lr"]) == len(out["steps"])
    assert [s["end_step"] for s in out["stages"]] == [40, 80, 100]


def test_upload_versions_by_content_hash(user, client_for, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    c = client_for(user)
    body = b'{"text": "hello"}\n{"text": "world"}\n'
    up = c.post("/datasets/upload/", {"name": "greet", "file": SimpleUploadedFile("g.jsonl", body)})
    assert up.status_code == 201, up.content
    assert up.json()["records"] == 2
    again = c.post(
        "/datasets/upload/", {"name": "greet", "file": SimpleUploadedFile("g.jsonl", body)}
    )
    assert again.status_code == 200 and again.json()["version"] == 1
    v2 = c.post(
        "/datasets/upload/",
        {"name": "greet", "file": SimpleUploadedFile("g.jsonl", body + b'{"text": "!"}\n')},
    )
    assert v2.json()["version"] == 2
    bad = c.post(
        "/datasets/upload/", {"name": "x", "file": SimpleUploadedFile("x.jsonl", b"not json\n")}
    )
    assert bad.status_code == 400 and "line 1" in bad.json()["detail"]
    v = DatasetVersion.objects.get(pk=up.json()["id"])
    page = c.get(f"/datasets/versions/{v.pk}/").content.decode()
    assert "hello" in page and "No run has used this version yet" in page


def test_only_staff_pause_queues(user, queue, client_for):
    c = client_for(user)
    assert c.post(f"/queues/{queue.pk}/pause/", {"paused": "1"}).status_code == 302
    assert not Queue.objects.get(pk=queue.pk).paused  # redirected to the admin login
    user.is_staff = True
    user.save()
    c = client_for(user)
    c.post(f"/queues/{queue.pk}/pause/", {"paused": "1"})
    assert Queue.objects.get(pk=queue.pk).paused


def test_plotly_is_served_locally_with_long_caching(user, client_for):
    import plotly

    resp = client_for(user).get(f"/vendor/plotly-{plotly.__version__}.min.js")
    assert resp.status_code == 200
    assert "max-age=31536000" in resp["Cache-Control"]
