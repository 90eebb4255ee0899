"""Editing and deleting pipelines over the API: a rename keeps the pipeline, bad input is a
400 naming the field and changes nothing, and runs never change with their pipeline."""

import copy

import pytest
from django.test import Client
from rest_framework.test import APIClient

from runs.models import Pipeline, Run
from runs.services.plans import pipeline_upsert_from_plan
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db


def _client(role: str, team) -> APIClient:
    return f.api_client_for(team, role)


def _plan(name: str) -> dict:
    return {**reduced_lm_plan(), "name": name}


@pytest.fixture
def pipeline(team):
    p = pipeline_upsert_from_plan(team=team, plan=_plan("lm"))
    p.description = "three stages"
    p.save(update_fields=["description"])
    return p


def _stored(pipeline) -> dict:
    return Pipeline.objects.get(pk=pipeline.pk).plan


def _url(pipeline) -> str:
    return f"/api/pipelines/{pipeline.pk}/"


def test_put_renames_and_replaces_the_stages_keeping_the_id(api, team, pipeline):
    old_rows = _stored(pipeline)
    plan = _plan("lm-renamed")
    plan["stages"] = plan["stages"][:2]
    plan["stages"][1]["name"] = "code-cpt"
    plan["seed"] = 7

    r = api.put(_url(pipeline), {"plan": plan, "description": "two stages"}, format="json")

    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["id"] == pipeline.pk
    assert body["name"] == "lm-renamed"
    assert body["description"] == "two stages"
    assert body["plan"]["seed"] == 7
    assert body["plan"] == plan
    assert [s["name"] for s in body["stages"]] == [old_rows["stages"][0]["name"], "code-cpt"]
    assert list(Pipeline.objects.filter(team=team).values_list("pk", "name")) == [
        (pipeline.pk, "lm-renamed")
    ]
    assert _stored(pipeline) == plan
    listed = api.get("/api/pipelines/").json()
    assert [p["name"] for p in listed["results"]] == ["lm-renamed"]


def test_put_without_description_keeps_it_and_blank_clears_it(api, pipeline):
    assert api.put(_url(pipeline), {"plan": _plan("lm")}, format="json").status_code == 200
    pipeline.refresh_from_db()
    assert pipeline.description == "three stages"
    r = api.put(_url(pipeline), {"plan": _plan("lm"), "description": ""}, format="json")
    assert r.status_code == 200
    pipeline.refresh_from_db()
    assert pipeline.description == ""


def test_rename_to_a_name_the_team_already_uses_is_400_on_name(api, team, pipeline):
    other = pipeline_upsert_from_plan(team=team, plan=_plan("taken"))
    rows = _stored(pipeline)

    r = api.put(_url(pipeline), {"plan": _plan("taken")}, format="json")

    assert r.status_code == 400
    assert "already has a pipeline named 'taken'" in r.json()["errors"]["name"][0]
    pipeline.refresh_from_db()
    assert pipeline.name == "lm"
    assert _stored(pipeline) == rows
    assert Pipeline.objects.filter(team=team, name="taken").get().pk == other.pk


def test_the_same_name_in_another_team_is_fine(api, pipeline):
    pipeline_upsert_from_plan(team=f.TeamFactory(), plan=_plan("elsewhere"))
    assert api.put(_url(pipeline), {"plan": _plan("elsewhere")}, format="json").status_code == 200


def test_invalid_stages_are_400_with_the_path_and_change_nothing(api, pipeline):
    rows = _stored(pipeline)
    plan = _plan("lm-renamed")
    plan["stages"][1]["eval_interval"] = 0
    plan["stages"][2]["data"] = []

    r = api.put(_url(pipeline), {"plan": plan, "description": "changed"}, format="json")

    assert r.status_code == 400
    errors = r.json()["errors"]
    assert "stages.1.eval_interval" in errors
    assert "stages.2.data" in errors
    pipeline.refresh_from_db()
    assert (pipeline.name, pipeline.description) == ("lm", "three stages")
    assert _stored(pipeline) == rows


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["stages"][1].update(name=p["stages"][0]["name"]), "stages.1.name"),
        (lambda p: p["stages"][0]["schedule"].update(warmup_steps=2**60), "stages.0.schedule.warmup_steps"),
        (lambda p: p.update(name="x" * 101), "name"),
        (lambda p: p.update(seed=-1), "seed"),
        (lambda p: p["stages"][0].update(batch_size=2**31), "stages.0.batch_size"),
    ],
)  # fmt: skip
def test_plans_out_of_bounds_are_400_not_500(api, pipeline, change, field):
    """Plans the engine cannot run or a column cannot hold (unique stage names, sizes over
    the limits): a field error for PUT and POST, nothing stored."""
    rows = _stored(pipeline)
    plan = _plan("lm")
    change(plan)

    r = api.put(_url(pipeline), {"plan": plan}, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()["errors"]
    assert _stored(pipeline) == rows

    plan["name"] = plan["name"] if field == "name" else "brand-new"
    r = api.post("/api/pipelines/", {"plan": plan}, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()["errors"]
    assert list(Pipeline.objects.values_list("pk", flat=True)) == [pipeline.pk]


@pytest.mark.parametrize("body", [{"plan": [1, 2]}, {"plan": "lm"}, {}])
def test_put_needs_a_plan_object(api, pipeline, body):
    r = api.put(_url(pipeline), body, format="json")
    assert r.status_code == 400
    assert "plan" in r.json()


def test_viewer_can_read_but_not_update_or_delete(team, pipeline):
    viewer = _client("viewer", team)
    rows = _stored(pipeline)
    assert viewer.get(_url(pipeline)).status_code == 200
    r = viewer.put(_url(pipeline), {"plan": _plan("by-viewer")}, format="json")
    assert r.status_code == 403
    assert "read-only" in r.json()["detail"]
    assert viewer.delete(_url(pipeline)).status_code == 403
    pipeline.refresh_from_db()
    assert pipeline.name == "lm"
    assert _stored(pipeline) == rows


def test_other_teams_pipelines_are_not_found(pipeline):
    outsider = _client("admin", f.TeamFactory())
    assert outsider.get(_url(pipeline)).status_code == 404
    assert outsider.put(_url(pipeline), {"plan": _plan("x")}, format="json").status_code == 404
    assert outsider.delete(_url(pipeline)).status_code == 404
    assert Pipeline.objects.filter(pk=pipeline.pk, name="lm").exists()


def test_anonymous_is_refused(pipeline):
    anon = APIClient()
    assert anon.put(_url(pipeline), {"plan": _plan("x")}, format="json").status_code in (401, 403)
    assert anon.delete(_url(pipeline)).status_code in (401, 403)
    assert Pipeline.objects.filter(pk=pipeline.pk).exists()


def test_update_and_delete_never_change_existing_runs(api, user, team, queue, pipeline):
    run = run_submit(team=team, queue=queue, pipeline=pipeline, name="before-edit")
    snapshot = copy.deepcopy(run.plan)
    stage_names = list(run.stage_runs.order_by("stage_index").values_list("name", flat=True))
    edited = _plan("lm-v2")
    edited["stages"] = edited["stages"][:1]

    assert api.put(_url(pipeline), {"plan": edited}, format="json").status_code == 200
    run.refresh_from_db()
    assert run.plan == snapshot
    assert run.pipeline_id == pipeline.pk

    r = api.delete(_url(pipeline))

    assert r.status_code == 204
    assert not Pipeline.objects.filter(pk=pipeline.pk).exists()
    run.refresh_from_db()
    assert run.plan == snapshot
    assert run.pipeline_id is None
    assert list(run.stage_runs.order_by("stage_index").values_list("name", flat=True)) == (
        stage_names
    )
    body = api.get(f"/api/runs/{run.pk}/").json()
    assert (body["pipeline"], body["pipeline_name"], body["plan"]) == (None, None, snapshot)
    rows = api.get("/api/runs/").json()["results"]
    assert [(x["id"], x["pipeline_name"]) for x in rows] == [(run.pk, None)]
    assert api.get(_url(pipeline)).status_code == 404
    assert api.delete(_url(pipeline)).status_code == 404
    # The pages that show a run's pipeline still render without one.
    browser = Client()
    browser.force_login(user)
    assert browser.get(f"/runs/{run.pk}/").status_code == 200
    ui = browser.get("/api/ui/runs/")
    assert ui.status_code == 200
    assert Run.objects.filter(pk=run.pk).exists()


def test_the_openapi_schema_documents_put_and_delete(api):
    r = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    schema = r.json()
    ops = schema["paths"]["/api/pipelines/{pipeline_id}/"]
    assert {"get", "put", "delete"} <= set(ops)
    body = ops["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert set(fields) == {"plan", "description"}
    assert "204" in ops["delete"]["responses"]


def test_post_refuses_a_taken_name_unless_asked_to_replace(api, team, pipeline):
    rows = _stored(pipeline)
    plan = _plan("lm")
    plan["stages"] = plan["stages"][:1]
    r = api.post("/api/pipelines/", {"plan": plan}, format="json")
    assert r.status_code == 400
    assert "already has a pipeline named 'lm'" in r.json()["errors"]["name"][0]
    assert _stored(pipeline) == rows

    r = api.post("/api/pipelines/", {"plan": plan, "replace": True}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["id"] == pipeline.pk
    assert [s["name"] for s in r.json()["stages"]] == [plan["stages"][0]["name"]]


def test_top_level_plan_settings_survive_create_and_update(api, team):
    plan = {**_plan("lm-settings"), "log_interval": 7, "keep_last": 3, "torch_threads": 2}
    r = api.post("/api/pipelines/", {"plan": plan}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["plan"] == plan
    stored = Pipeline.objects.get(pk=r.json()["id"])
    assert stored.plan == plan
    plan["log_interval"] = 11
    del plan["torch_threads"]
    r = api.put(f"/api/pipelines/{stored.pk}/", {"plan": plan}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["plan"] == plan
    assert "torch_threads" not in Pipeline.objects.get(pk=stored.pk).plan
    run = run_submit(team=team, queue=f.QueueFactory(), pipeline=Pipeline.objects.get(pk=stored.pk))
    assert (run.plan["log_interval"], run.plan["keep_last"]) == (11, 3)
