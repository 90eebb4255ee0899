"""The OpenAPI document and the docs pages: authenticated only, every operation's errors
documented, the plan typed by trainers' own JSON schema, lists paginated alike, and the
answers the app gives valid against the document."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from jsonschema import Draft202012Validator
from rest_framework.test import APIClient

from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture
def schema(api) -> dict:
    r = api.get("/api/schema/?format=json")
    assert r.status_code == 200
    return r.json()


def _ops(schema: dict):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _validator(schema: dict, ref: str) -> Draft202012Validator:
    """A validator of one component, its $refs resolved inside the whole document."""
    return Draft202012Validator({"$ref": ref, "components": schema["components"]})


def test_schema_and_docs_need_authentication(user, team):
    anonymous = Client()
    for url in ("/api/schema/", "/api/docs/", "/api/redoc/"):
        r = anonymous.get(url)
        assert r.status_code == 401, url
        assert r["Content-Type"] == "application/json" and "detail" in r.json()
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Bearer {f.api_token_for(user, team)}")
    assert token.get("/api/schema/?format=json").status_code == 200


def test_docs_pages_load_their_assets_from_this_server(user):
    browser = Client()
    browser.force_login(user)
    for url in ("/api/docs/", "/api/redoc/"):
        r = browser.get(url)
        assert r.status_code == 200
        html = r.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
        assert assets, url
        for asset in assets:
            assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
            got = browser.get(asset)
            assert got.status_code == 200, asset
        assert "https://" not in html and "http://" not in html, url


def test_every_operation_documents_its_errors(schema):
    ops = list(_ops(schema))
    assert len(ops) > 30
    for path, method, op in ops:
        codes = set(op["responses"])
        label = f"{method.upper()} {path}"
        assert {"400", "401", "403", "429"} <= codes, label
        assert any(c.startswith("2") for c in codes), label
        if "{" in path:
            assert "404" in codes, label
        if "requestBody" in op:
            assert {"413", "415"} <= codes, label
        error = op["responses"]["401"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorOut"}, label
    paths = schema["paths"]
    assert "409" in paths["/api/runs/{run_id}/"]["delete"]["responses"]
    assert "409" in paths["/api/datasets/{dataset_id}/"]["delete"]["responses"]
    assert "409" in paths["/api/runs/{run_id}/cancel/"]["post"]["responses"]
    assert "413" in paths["/api/datasets/"]["post"]["responses"]


def test_json_bodies_are_documented_as_json_and_uploads_as_multipart(schema):
    for path, method, op in _ops(schema):
        body = op.get("requestBody")
        if body is None:
            continue
        types = set(body["content"])
        if path == "/api/datasets/":
            assert types == {"multipart/form-data"}
        else:
            assert types == {"application/json"}, f"{method} {path}"


def test_the_plan_is_typed_by_trainers_schema(schema):
    comps = schema["components"]["schemas"]
    assert comps["Plan"]["required"] == ["name", "stages"]
    assert comps["Plan"]["properties"]["stages"]["items"] == {
        "$ref": "#/components/schemas/PlanStageSpec"
    }
    submit = comps["RunSubmitInRequest"]["properties"]["plan"]
    assert "#/components/schemas/Plan" in str(submit)
    fork = comps["RunForkInRequest"]["properties"]["stages"]["items"]
    assert fork == {"$ref": "#/components/schemas/PlanStageSpec"}
    assert "#/components/schemas/Plan" in str(comps["PipelineInRequest"]["properties"]["plan"])
    assert "#/components/schemas/Plan" in str(comps["RunDetailOut"]["properties"]["plan"])
    # What-if takes a plan too (its serializer leaves it untyped: the hook types it).
    assert "#/components/schemas/Plan" in str(comps["WhatIfInRequest"]["properties"]["plan"])
    plan = _validator(schema, "#/components/schemas/Plan")
    plan.validate(reduced_lm_plan())
    assert not plan.is_valid({"name": "x", "stages": []})
    assert not plan.is_valid({"name": "x", "stages": [{"name": "s"}], "bogus": 1})


def test_run_fields_metrics_and_series_are_typed(schema):
    comps = schema["components"]["schemas"]
    assert comps["RunOut"]["properties"]["pipeline_name"]["type"] == ["string", "null"]
    assert "AnalysisSummaryOut" in str(comps["RunOut"]["properties"]["analysis"])
    assert "notes" in comps["RunDetailOut"]["properties"]
    metrics = schema["paths"]["/api/runs/{run_id}/metrics/"]
    body = metrics["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MetricsInRequest"}
    point = comps["PointInRequest"]
    assert set(point["required"]) == {"key", "step", "value"}
    answer = metrics["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/MetricsAcceptedOut"}
    keys = metrics["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert keys == {"$ref": "#/components/schemas/SeriesKeysOut"}
    series = schema["paths"]["/api/runs/{run_id}/series/"]["get"]["responses"]["200"]
    assert series["content"]["application/json"]["schema"]["$ref"].endswith("/SeriesOut")


def test_every_list_is_paginated_alike(schema):
    lists = [
        "/api/runs/", "/api/pipelines/", "/api/queues/", "/api/datasets/", "/api/workers/",
        "/api/tokens/", "/api/runs/{run_id}/checkpoints/",
    ]  # fmt: skip
    for path in lists:
        op = schema["paths"][path]["get"]
        names = {p["name"] for p in op["parameters"]}
        assert {"limit", "offset"} <= names, path
        limit = next(p for p in op["parameters"] if p["name"] == "limit")["schema"]
        assert (limit["minimum"], limit["maximum"]) == (1, 1000), path
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(page["properties"]) == {"count", "next", "previous", "results"}, path
    # The dashboard's rows keep their own page/page_size shape.
    ui = schema["paths"]["/api/ui/runs/"]["get"]
    assert not {"limit", "offset"} & {p["name"] for p in ui.get("parameters", [])}


def test_answers_validate_against_the_document(api, schema, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan(), tags=["t"])
    ckpt_stage = run.stage_runs.get(stage_index=0)
    f.CheckpointFactory(run=run, stage_run=ckpt_stage, step=10)
    checks = [
        (f"/api/runs/{run.pk}/", "RunDetailOut"),
        ("/api/runs/", "PaginatedRunOutList"),
        (f"/api/runs/{run.pk}/checkpoints/", "PaginatedCheckpointOutList"),
        ("/api/queues/", "PaginatedQueueOutList"),
        ("/api/datasets/", "PaginatedDatasetOutList"),
        (f"/api/runs/{run.pk}/metrics/", "SeriesKeysOut"),
        (f"/api/runs/{run.pk}/series/?keys=train/loss", "SeriesOut"),
        ("/api/runs/999999999/", "ErrorOut"),
    ]
    for url, component in checks:
        body = api.get(url).json()
        errors = list(_validator(schema, f"#/components/schemas/{component}").iter_errors(body))
        assert not errors, (url, [e.message for e in errors[:3]])
    assert api.get(f"/api/runs/{run.pk}/checkpoints/").json()["count"] == 1


def test_the_checkpoint_list_is_paginated(api, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    stage = run.stage_runs.get(stage_index=0)
    for step in (10, 20, 30):
        f.CheckpointFactory(run=run, stage_run=stage, step=step)
    body = api.get(f"/api/runs/{run.pk}/checkpoints/", {"limit": 2}).json()
    assert body["count"] == 3 and [c["step"] for c in body["results"]] == [10, 20]
    assert body["next"] is not None
    outsider = f.api_client_for(f.TeamFactory())
    assert outsider.get(f"/api/runs/{run.pk}/checkpoints/").status_code == 404
