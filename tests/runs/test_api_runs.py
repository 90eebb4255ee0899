"""Bad requests get 400/403/404 with a reason and store nothing; never a 500."""

import uuid

import pytest
from rest_framework.test import APIClient

from runs.models import MetricPoint, Run
from runs.services.ingest import IngestPoint, ingest_points
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(team, queue):
    return run_submit(team=team, queue=queue, plan=reduced_lm_plan())


@pytest.fixture
def external_run(team, queue):
    """Points come over the API only for runs trained elsewhere."""
    return run_submit(team=team, queue=queue, plan=reduced_lm_plan(), external=True)


def _client(role: str, team) -> APIClient:
    return f.api_client_for(team, role)


def test_submit_creates_a_queued_run_with_stage_runs(api, queue):
    r = api.post("/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name, "tags": ["x"]},
                 format="json")  # fmt: skip
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["state"] in ("queued", "running")
    assert [s["end_step"] for s in body["stages"]] == [40, 80, 100]


def test_submit_invalid_plan_names_the_field(api, queue):
    plan = reduced_lm_plan()
    plan["stages"][1]["eval_interval"] = 0
    r = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
    assert r.status_code == 400
    assert "stages.1.eval_interval" in r.json()["errors"]
    assert not Run.objects.exists()


def test_submit_to_a_queue_of_other_teams_is_forbidden(api):
    queue = f.QueueFactory(name=f"private-{uuid.uuid4().hex[:6]}")
    queue.allowed_teams.add(f.TeamFactory())
    r = api.post("/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name}, format="json")
    assert r.status_code == 403
    assert "may not use queue" in r.json()["detail"]
    assert not Run.objects.exists()


def test_submit_unknown_queue_is_a_field_error(api):
    r = api.post("/api/runs/", {"plan": reduced_lm_plan(), "queue": "nope"}, format="json")
    assert r.status_code == 400
    assert "queue" in r.json()


def test_viewer_cannot_submit_or_post_metrics(team, queue, run):
    viewer = _client("viewer", team)
    r = viewer.post("/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name}, format="json")
    assert r.status_code == 403
    r = viewer.post(f"/api/runs/{run.pk}/metrics/", {"points": [{"key": "k", "step": 1, "value": 1}]},
                    format="json")  # fmt: skip
    assert r.status_code == 403
    assert viewer.get(f"/api/runs/{run.pk}/").status_code == 200


def test_other_teams_runs_are_not_found(run):
    outsider = _client("admin", f.TeamFactory())
    assert outsider.get(f"/api/runs/{run.pk}/").status_code == 404
    assert outsider.get(f"/api/runs/{run.pk}/series/?keys=train/loss").status_code == 404
    r = outsider.post(f"/api/runs/{run.pk}/metrics/", {"points": [{"key": "k", "step": 1, "value": 1}]},
                      format="json")  # fmt: skip
    assert r.status_code == 404


def test_anonymous_is_refused(run):
    assert APIClient().get(f"/api/runs/{run.pk}/").status_code in (401, 403)


def test_post_metrics_accepts_a_batch_and_is_idempotent(api, external_run):
    run = external_run
    pts = [{"key": f"train/loss{s % 5}", "step": s, "value": 1.0 / (s + 1)} for s in range(100)]
    for _ in range(2):
        r = api.post(f"/api/runs/{run.pk}/metrics/", {"points": pts}, format="json")
        assert r.json() == {"accepted": 100}
    assert MetricPoint.objects.filter(series__run=run).count() == 100


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"key": "k", "step": -1, "value": 1.0}, "step"),
        ({"key": "k", "step": 1, "value": "NaN"}, "value"),
        ({"key": "k" * 201, "step": 1, "value": 1.0}, "key"),
        ({"key": "k", "value": 1.0}, "step"),
        ({"key": "k", "step": 1.5, "value": 1.0}, "step"),
        ("not an object", "(point)"),
    ],
)
def test_bad_point_refuses_the_request_with_its_index(api, external_run, bad, field):
    run = external_run
    pts = [{"key": "k", "step": 0, "value": 1.0}, bad]
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"points": pts}, format="json")
    assert r.status_code == 400
    assert (r.json()["index"], r.json()["field"]) == (1, field)
    assert not MetricPoint.objects.filter(series__run=run).exists()


def test_non_finite_json_value_is_refused(api, external_run):
    run = external_run
    body = '{"points": [{"key": "k", "step": 1, "value": Infinity}]}'
    r = api.post(f"/api/runs/{run.pk}/metrics/", body, content_type="application/json")
    assert r.status_code == 400
    assert not MetricPoint.objects.filter(series__run=run).exists()


def test_too_many_points_is_refused(api, external_run):
    run = external_run
    pts = [{"key": "k", "step": s, "value": 1.0} for s in range(50_001)]
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"points": pts}, format="json")
    assert r.status_code == 400
    assert "at most 50000" in r.json()["detail"]


def test_unknown_run_is_404(api):
    r = api.post("/api/runs/999999/metrics/", {"points": [{"key": "k", "step": 1, "value": 1}]},
                 format="json")  # fmt: skip
    assert r.status_code == 404


def test_series_downsamples_to_max_points_with_envelopes(api, run):
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint("train/loss", s, float(s % 97)) for s in range(20_000)],
    )
    r = api.get(f"/api/runs/{run.pk}/series/?keys=train/loss&max_points=500")
    body = r.json()["series"]["train/loss"]
    assert 0 < len(body["steps"]) <= 500
    assert body["level"] is not None
    assert min(body["min"]) == 0.0 and max(body["max"]) == 96.0
    assert body["steps"] == sorted(body["steps"])
    raw = api.get(f"/api/runs/{run.pk}/series/?keys=train/loss&min_step=100&max_step=199").json()
    assert raw["series"]["train/loss"]["steps"] == list(range(100, 200))
    after = api.get(f"/api/runs/{run.pk}/series/?keys=train/loss&after_step=19990").json()
    assert after["series"]["train/loss"]["steps"] == list(range(19991, 20000))


@pytest.mark.parametrize(
    "query",
    ["", "keys=", "keys=a&max_points=1", "keys=a&min_step=5&max_step=2", "keys=a&min_step=x"],
)
def test_bad_series_queries_are_400(api, run, query):
    r = api.get(f"/api/runs/{run.pk}/series/?{query}")
    assert r.status_code == 400, r.content


def test_cancel_a_queued_run_then_cancel_again_is_409(api, run):
    r = api.post(f"/api/runs/{run.pk}/cancel/")
    assert r.status_code == 200
    assert r.json()["state"] == "canceled"
    assert {s["state"] for s in r.json()["stages"]} <= {"canceled", "running"}
    assert api.post(f"/api/runs/{run.pk}/cancel/").status_code == 409


def test_fork_with_unknown_checkpoint_is_400(api, run):
    r = api.post(f"/api/runs/{run.pk}/fork/", {"checkpoint": 12345}, format="json")
    assert r.status_code == 400
    assert "checkpoint" in r.json()


def test_run_list_is_paginated_filtered_and_has_no_query_per_row(
    api, team, queue, django_assert_max_num_queries
):
    plan = reduced_lm_plan()
    for i in range(6):
        run = run_submit(team=team, queue=queue, plan=plan, tags=["even" if i % 2 else "odd"])
        ingest_points(
            run_id=run.pk,
            points=[IngestPoint(f"eval/{n}/loss", 40, 1.0 + i) for n in ("prose", "code")],
        )
    with django_assert_max_num_queries(8):
        body = api.get("/api/runs/?limit=4").json()
    assert body["count"] == 6 and len(body["results"]) == 4 and body["next"]
    assert body["results"][0]["analysis"]["metric"] == "loss"
    assert api.get("/api/runs/?tag=even").json()["count"] == 3
    assert api.get("/api/runs/?ordering=bogus").status_code == 400
