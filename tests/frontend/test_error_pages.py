"""Outside /api/, a bad parameter, an unknown page, a refusal or a crash is the app's styled
error page (frontend/templates/4xx.html, 500.html) with the reason, never Django's bare HTML;
dataset uploads answer JSON with the right status."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from runs.models import Dataset

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def c(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _styled(resp, code: int) -> str:
    body = resp.content.decode()
    assert resp.status_code == code, body[:500]
    assert resp["Content-Type"].startswith("text/html")
    assert "frontend/app.css" in body and 'class="topbar"' in body
    assert f'data-error="{code}"' in body
    return body


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1.5", "99999999999999999999"])
def test_pipeline_new_from_a_bad_id_is_a_styled_400(c, value):
    body = _styled(c.get(f"/pipelines/new/?from={value}"), 400)
    assert "?from= must be a pipeline id" in body


def test_pipeline_new_from_an_unknown_pipeline_is_a_styled_404(c):
    _styled(c.get("/pipelines/new/?from=123456789"), 404)


def test_pipeline_new_from_an_unknown_or_absurd_example_is_a_styled_404(c):
    body = _styled(c.get("/pipelines/new/?example=nope"), 404)
    assert "no example plan named" in body
    _styled(c.get("/pipelines/new/?example=" + "a" * 300), 404)
    assert c.get("/pipelines/new/?example=lm_prose_code_sft").status_code == 200


def test_unknown_pages_are_a_styled_404_with_the_navigation(c):
    body = _styled(c.get("/no/such/page/"), 404)
    assert "Not found" in body and 'href="/pipelines/"' in body
    assert "tried" not in body  # never the URL patterns a Resolver404 carries
    _styled(c.get("/runs/99999999999999999999/"), 404)
    _styled(Client().get("/no/such/page/"), 404)  # anonymous too


def test_nul_in_a_page_query_parameter_is_a_styled_400(c):
    body = _styled(c.get("/?search=a%00b"), 400)
    assert "search" in body and "NUL" in body


def test_permission_denied_in_a_page_is_a_styled_403(c, monkeypatch):
    def refuse(**kwargs):
        raise PermissionDenied("not for you")

    monkeypatch.setattr("frontend.views.pipeline_list", refuse)
    body = _styled(c.get("/pipelines/"), 403)
    assert "not for you" in body


def test_a_crash_in_a_page_is_the_styled_500(c, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("frontend.views.pipeline_list", boom)
    resp = c.get("/pipelines/")
    body = resp.content.decode()
    assert resp.status_code == 500
    assert "frontend/app.css" in body and 'data-error="500"' in body
    assert "secret internals" not in body


def test_upload_over_the_limit_is_a_413_with_a_json_reason(c, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.STAGEWISE_MAX_UPLOAD_BYTES = 1024 * 1024
    big = SimpleUploadedFile("big.txt", b"x\n" * (600 * 1024))
    resp = c.post("/datasets/upload/", {"name": "big", "file": big})
    assert resp.status_code == 413
    assert resp.json() == {"detail": "file is larger than 1 MB", "field": "file"}
    assert not Dataset.objects.exists()


@pytest.mark.parametrize("name, reason", [("n" * 101, "at most 100 characters"), ("a\x00b", "NUL")])
def test_upload_name_over_its_column_or_with_nul_is_refused_not_cut(c, settings, tmp_path, name,
                                                                    reason):  # fmt: skip
    settings.MEDIA_ROOT = tmp_path
    resp = c.post("/datasets/upload/", {"name": name, "file": SimpleUploadedFile("a.txt", b"hi\n")})
    assert resp.status_code == 400, resp.content
    assert reason in resp.json()["detail"]
    assert not Dataset.objects.exists()
