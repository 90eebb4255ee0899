"""Bad query parameters, ids, names and bodies under /api/ are a 4xx with a JSON body naming
the field and the reason; never a 500 and never a silent cut (DESIGN.md "Conventions")."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from django.test import Client
from rest_framework.test import APIClient

from runs.api.parsers import OrjsonParser
from runs.models import Pipeline, Run
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(user):
    # Exceptions become responses (as in production), so a 500 is seen as a 500.
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    return client


def _errors(resp) -> dict:
    """The field-keyed part of an error body: DRF's {field: [...]} or our {"errors": {...}}."""
    assert resp["Content-Type"].startswith("application/json"), resp.content[:200]
    body = resp.json()
    return body.get("errors", body) if isinstance(body, dict) else {}


# ------------------------------------------------------------------ query parameters


@pytest.mark.parametrize(
    "query, field",
    [
        ("pipeline=abc", "pipeline"),
        ("pipeline=-1", "pipeline"),
        ("pipeline=99999999999999999999", "pipeline"),
        ("search=a%00b", "search"),
        ("tag=a%00b", "tag"),
        ("tag=" + "t" * 51, "tag"),
        ("search=" + "s" * 201, "search"),
        ("queue=q%00", "queue"),
        ("queue=" + "q" * 61, "queue"),
        ("state=nope", "state"),
        ("state=queued,bogus", "state"),
        ("limit=99999999999999999999", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=99999999999999999999", "offset"),
        ("offset=-5", "offset"),
        ("offset=x", "offset"),
        ("ordering=nope", "ordering"),
        ("a%00=1", "a\x00"),
    ],
)
def test_bad_run_list_parameters_are_400_naming_the_field(api, query, field):
    resp = api.get(f"/api/runs/?{query}")
    assert resp.status_code == 400, resp.content[:300]
    errors = _errors(resp)
    assert field in errors, errors
    assert errors[field] and all(isinstance(m, str) and m for m in errors[field])


def test_good_run_list_parameters_still_work(api, team, queue):
    run = team.runs.create(name="alpha", plan=reduced_lm_plan(), queue=queue, tags=["t1"])
    for query in ["limit=1&offset=0", "state=draft,queued", "tag=t1", "search=alp",
                  f"pipeline={run.pk + 1000}", "search=" + "s" * 200, "queue=" + queue.name]:  # fmt: skip
        resp = api.get(f"/api/runs/?{query}")
        assert resp.status_code == 200, (query, resp.content[:300])
    assert api.get("/api/runs/?tag=t1").json()["count"] == 1
    assert api.get("/api/runs/?limit=1&offset=5").json()["results"] == []


@pytest.mark.parametrize(
    "query, field",
    [
        ("search=a%00b", "search"),
        ("tag=a%00b", "tag"),
        ("pipeline=abc", "pipeline"),
        ("page=abc", "page"),
        ("page=99999999999999999999", "page"),
        ("page_size=0", "page_size"),
        ("page_size=99999999999999999999", "page_size"),
        ("state=nope", "state"),
        ("ordering=nope", "ordering"),
    ],
)
def test_bad_ui_run_rows_parameters_are_400_naming_the_field(api, query, field):
    resp = api.get(f"/api/ui/runs/?{query}")
    assert resp.status_code == 400, resp.content[:300]
    assert field in _errors(resp)


def test_nul_in_any_api_query_parameter_is_400(api):
    resp = api.get("/api/queues/?x=1&note=a%00")
    assert resp.status_code == 400
    assert "note" in _errors(resp)


# ------------------------------------------------------------------ ids and unknown URLs


@pytest.mark.parametrize(
    "path",
    ["/api/runs/abc/", "/api/nope/", "/api/runs/1/nope/", "/api/runs/%00/", "/api/"],
)
def test_unmatched_api_urls_are_json_404(api, path):
    resp = api.get(path)
    assert resp.status_code == 404
    assert resp["Content-Type"].startswith("application/json")
    assert resp.json()["detail"]


def test_unmatched_api_urls_are_json_404_for_anonymous_and_post():
    c = Client(raise_request_exception=False)
    for resp in (c.get("/api/runs/abc/"), c.post("/api/nope/", {"a": 1})):
        assert resp.status_code == 404
        assert resp.json()["detail"]


def test_api_url_without_its_slash_still_redirects(api):
    resp = api.get("/api/runs")
    assert resp.status_code == 301 and resp["Location"].endswith("/api/runs/")


def test_unknown_ids_are_json_404(api):
    for path in ["/api/runs/99999999999999999999/", "/api/pipelines/99999999999999999999/",
                 "/api/runs/123456789/"]:  # fmt: skip
        resp = api.get(path)
        assert resp.status_code == 404, (path, resp.content[:200])
        assert resp.json()["detail"]


def test_a_500_under_api_is_json(api, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("runs.api.views.run_list", boom)
    resp = api.get("/api/runs/")
    assert resp.status_code == 500
    assert resp.json() == {"detail": "internal error"}


# ------------------------------------------------------------------ bodies


def _plan_with(path: tuple, value) -> dict:
    plan = reduced_lm_plan()
    node = plan
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return plan


def test_nul_in_a_plan_name_is_400_naming_the_json_path(api, team):
    plan = _plan_with(("name",), "bad\u0000name")
    resp = api.post("/api/pipelines/", {"plan": plan}, format="json")
    assert resp.status_code == 400, resp.content[:300]
    assert "plan.name" in _errors(resp)
    assert not Pipeline.objects.exists()


def test_nul_in_a_stage_name_of_a_submitted_plan_is_400(api, queue):
    plan = _plan_with(("stages", 1, "name"), "st\u0000")
    resp = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
    assert resp.status_code == 400, resp.content[:300]
    assert "plan.stages.1.name" in _errors(resp)
    assert not Run.objects.exists()


def test_nul_in_an_object_key_is_400(api, queue):
    plan = reduced_lm_plan()
    plan["extra\u0000"] = 1
    resp = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
    assert resp.status_code == 400
    assert any(k.startswith("plan") for k in _errors(resp))


def test_escaped_backslash_u0000_is_plain_text_not_nul(api, team):
    plan = _plan_with(("name",), "backslash\\u0000")  # six characters, no NUL
    raw = json.dumps({"plan": plan})
    resp = api.post("/api/pipelines/", raw, content_type="application/json")
    assert resp.status_code != 500
    assert "plan.name" not in _errors(resp) or "NUL" not in str(_errors(resp))


@pytest.mark.parametrize("depth", [65, 1000, 1020])
def test_deeply_nested_bodies_are_400(api, queue, depth):
    # Written by hand: json.dumps itself recurses (and fails) on a value this deep.
    nested = '{"a": ' * depth + "1" + "}" * depth
    plan = json.dumps(reduced_lm_plan())[:-1] + f', "extra": {nested}}}'
    for path, body in [
        ("/api/runs/", f'{{"queue": "{queue.name}", "plan": {plan}}}'),
        ("/api/pipelines/", f'{{"plan": {plan}}}'),
        ("/api/ui/plan-preview/", f'{{"plan": {plan}}}'),
    ]:
        resp = api.post(path, body, content_type="application/json")
        assert resp.status_code == 400, (path, resp.content[:300])
        assert "nested deeper than 64 levels" in resp.json()["detail"]
    assert not Run.objects.exists() and not Pipeline.objects.exists()


def test_nesting_beyond_json_parsers_limit_is_400(api):
    raw = "[" * 5000 + "]" * 5000
    resp = api.post("/api/runs/", raw, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json()["detail"]


def test_run_name_over_its_column_length_is_refused_not_cut(api, queue):
    resp = api.post(
        "/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name, "name": "n" * 201},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 400
    assert "name" in _errors(resp)
    resp = api.post(
        "/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name, "tags": ["t" * 51]},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 400
    assert "tags" in _errors(resp)
    assert not Run.objects.exists()


def test_nul_in_a_run_name_is_400(api, queue):
    resp = api.post(
        "/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name, "name": "a\u0000"},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 400
    assert "name" in _errors(resp)


# ------------------------------------------------------------------ body size


def test_a_100_mb_body_is_413_before_it_is_read(api):
    body = b'{"plan": "' + b"x" * (100 * 1024 * 1024) + b'"}'
    t0 = time.monotonic()
    resp = api.post("/api/runs/", body, content_type="application/json")
    elapsed = time.monotonic() - t0
    assert resp.status_code == 413
    assert "MB" in resp.json()["detail"]
    assert elapsed < 1.0, elapsed


class LazyBody(io.RawIOBase):
    """``size`` bytes made on demand (no 100 MB in the test's own memory), counting reads."""

    def __init__(self, size: int):
        self.left = size
        self.read_bytes = 0

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = b"x" * n
        self.left -= n
        self.read_bytes += n
        return n


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_a_declared_100_mb_body_is_refused_unread_without_memory_growth(user):
    size = 100 * 1024 * 1024
    body = LazyBody(size)
    c = Client(raise_request_exception=False)
    c.force_login(user)
    before = _rss()
    t0 = time.monotonic()
    resp = c.generic(
        "POST", "/api/runs/", content_type="application/json",
        **{"wsgi.input": body, "CONTENT_LENGTH": str(size)},
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert resp.status_code == 413 and "MB" in resp.json()["detail"]
    assert body.read_bytes == 0
    assert elapsed < 1.0, elapsed
    assert _rss() - before < 20 * 1024 * 1024


def test_a_100_mb_body_through_the_asgi_handler_is_413_without_memory_growth():
    """The path under daphne: Django's ASGI handler spools the body to a temporary file (not
    memory) before the app runs; the app then refuses it from its Content-Length."""
    from asgiref.sync import async_to_sync
    from django.core.handlers.asgi import ASGIHandler

    size, chunk = 100 * 1024 * 1024, b"x" * (1024 * 1024)
    sent, out = {"n": 0}, []

    async def receive():
        if sent["n"] >= size:  # the body is all sent: the client waits for the answer
            await asyncio.Event().wait()
        sent["n"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent["n"] < size}

    async def send(message):
        out.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/runs/", "raw_path": b"/api/runs/", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(size).encode())],
    }  # fmt: skip
    before = _rss()
    async_to_sync(ASGIHandler())(scope, receive, send)
    assert out[0]["status"] == 413
    assert b"MB" in b"".join(m.get("body", b"") for m in out[1:])
    assert _rss() - before < 20 * 1024 * 1024


def test_a_50000_point_metric_batch_fits_the_body_limit(settings):
    points = [
        {"key": "eval/some_long_task_name/loss", "step": 10_000_000 + i,
         "value": 1.2345678901234567 + i, "time": 1_712_345_678.123456 + i}
        for i in range(50_000)
    ]  # fmt: skip
    size = len(json.dumps({"stage": 12, "points": points}).encode())
    assert size * 2 < settings.STAGEWISE_MAX_BODY_BYTES, size


def _parse(raw: bytes, meta: dict):
    class Req:
        META = meta

    return OrjsonParser().parse(io.BytesIO(raw), parser_context={"request": Req()})


def test_parser_reads_at_most_the_limit_without_a_content_length(settings):
    from rest_framework.exceptions import APIException

    settings.STAGEWISE_MAX_BODY_BYTES = 1000
    assert _parse(b'{"a": "' + b"x" * 900 + b'"}', {}) == {"a": "x" * 900}

    class Endless(io.RawIOBase):
        reads = 0

        def readable(self):
            return True

        def readinto(self, b):
            Endless.reads += len(b)
            b[:] = b"x" * len(b)
            return len(b)

    with pytest.raises(APIException) as exc:
        OrjsonParser().parse(
            io.BufferedReader(Endless()), parser_context={"request": type("R", (), {"META": {}})}
        )
    assert exc.value.status_code == 413
    assert Endless.reads < 100_000
    with pytest.raises(APIException) as exc:
        _parse(b"{}", {"CONTENT_LENGTH": "5000"})
    assert exc.value.status_code == 413
