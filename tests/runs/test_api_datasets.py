"""The datasets API: upload (a dataset, or its next version), list, versions, preview,
download, delete (refused while a run uses the version), and team scoping."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs.models import Dataset, DatasetVersion
from runs.services.datasets import dataset_version_create
from runs.services.runs import run_submit
from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/api/datasets/"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _post(api: APIClient, filename: str, body: bytes, **fields):
    return api.post(URL, {"file": SimpleUploadedFile(filename, body), **fields}, format="multipart")


def _stored(team, name: str, body: bytes, filename: str = "d.jsonl") -> DatasetVersion:
    version, _ = dataset_version_create(
        team=team, name=name, upload=SimpleUploadedFile(filename, body), filename=filename
    )
    return version


def _plan(source: str) -> dict:
    model = {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
             "max_positions": 64}  # fmt: skip
    return {
        "name": f"ds-{uuid.uuid4().hex[:8]}",
        "model": model,
        "stages": [
            {
                "name": "s0",
                "objective": "causal_lm",
                "data": [{"source": source}],
                "steps": 3,
                "batch_size": 4,
                "seq_len": 32,
            }
        ],
    }


def test_upload_makes_a_dataset_then_versions_and_the_same_bytes_answer_the_old_one(api, team):
    rows = [{"text": f"line {i}"} for i in range(5)]
    r = _post(api, "notes.jsonl", _jsonl(rows), name="notes")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["created"] is True
    assert body["dataset"]["name"] == "notes" and body["dataset"]["team"] == team.slug
    assert body["version"]["version"] == 1
    assert body["version"]["records"] == 5 and body["version"]["format"] == "jsonl"
    assert len(body["version"]["sha256"]) == 64

    again = _post(api, "notes.jsonl", _jsonl(rows), name="notes")
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["version"]["id"] == body["version"]["id"]

    second = _post(api, "notes.jsonl", _jsonl(rows[:2]), name="notes")
    assert second.status_code == 201
    assert second.json()["version"]["version"] == 2
    assert second.json()["dataset"]["id"] == body["dataset"]["id"]
    assert second.json()["dataset"]["version_count"] == 2


def test_the_name_defaults_to_the_file_name_and_format_overrides_the_extension(api):
    r = _post(api, "pairs.json", _jsonl([{"q": "a", "a": "b"}]), format="jsonl",
              prompt_field="q", response_field="a")  # fmt: skip
    assert r.status_code == 201, r.json()
    assert r.json()["dataset"]["name"] == "pairs.json"
    version = DatasetVersion.objects.get(pk=r.json()["version"]["id"])
    assert version.format == "jsonl" and version.storage_path.endswith(".jsonl")


def test_upload_refuses_what_training_could_not_read_naming_the_field(api):
    r = _post(api, "d.jsonl", _jsonl([{"body": "x"}]), name="d")
    assert r.status_code == 400
    assert "text_field" in r.json()["errors"]
    assert "no field 'text'" in r.json()["errors"]["text_field"][0]

    r = _post(api, "d.csv", b"a,b\n", name="d")
    assert r.status_code == 400
    assert "unsupported file type" in r.json()["errors"]["file"][0]

    r = _post(api, "d.jsonl", _jsonl([{"q": "x"}]), name="d", prompt_field="q")
    assert r.status_code == 400 and "response_field" in r.json()["errors"]

    r = api.post(URL, {"name": "no-file"}, format="multipart")
    assert r.status_code == 400 and "file" in (r.json().get("errors") or r.json())
    assert not Dataset.objects.exists()


def test_upload_over_the_limit_is_a_413(api, settings):
    settings.STAGEWISE_MAX_UPLOAD_BYTES = 100
    r = _post(api, "big.txt", b"x" * 101, name="big")
    assert r.status_code == 413
    assert "upload limit" in r.json()["detail"]
    assert not Dataset.objects.exists()


def test_json_bodies_are_not_uploads(api):
    r = api.post(URL, {"name": "x"}, format="json")
    assert r.status_code == 415


def test_list_shows_only_the_users_teams_paginated(api, team):
    _stored(team, "mine", b"hello\n", "m.txt")
    _stored(team, "also-mine", b"hi\n", "a.txt")
    _stored(f.TeamFactory(), "theirs", b"secret\n", "t.txt")
    r = api.get(URL)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    assert [d["name"] for d in body["results"]] == ["also-mine", "mine"]
    assert body["results"][0]["latest"]["version"] == 1

    page = api.get(URL, {"limit": 1, "offset": 1}).json()
    assert [d["name"] for d in page["results"]] == ["mine"] and page["next"] is None
    assert api.get(URL, {"name": "mine"}).json()["count"] == 1
    assert api.get(URL, {"team": "nope"}).json()["count"] == 0
    assert api.get(URL, {"limit": 0}).status_code == 400
    assert api.get(URL, {"name": "x" * 101}).status_code == 400


def test_detail_lists_versions_newest_first_with_the_runs_using_them(api, team, queue):
    v1 = _stored(team, "corpus", b"one\n\ntwo\n", "c.txt")
    v2 = _stored(team, "corpus", b"three\n", "c.txt")
    run = run_submit(team=team, queue=queue, plan=_plan("dataset:corpus@1"))
    r = api.get(f"{URL}{v1.dataset_id}/")
    assert r.status_code == 200
    versions = r.json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["runs"] == [] and versions[1]["runs"] == [run.pk]

    one = api.get(f"{URL}{v1.dataset_id}/versions/1/")
    assert one.status_code == 200 and one.json()["id"] == v1.pk and one.json()["runs"] == [run.pk]
    assert api.get(f"{URL}{v2.dataset_id}/versions/3/").status_code == 404


def test_other_teams_datasets_are_not_found(api):
    other = _stored(f.TeamFactory(), "theirs", b"secret\n", "t.txt")
    base = f"{URL}{other.dataset_id}/"
    for url in (base, f"{base}versions/1/", f"{base}versions/1/preview/",
                f"{base}versions/1/download/"):  # fmt: skip
        assert api.get(url).status_code == 404, url
    assert api.delete(base).status_code == 404
    assert api.delete(f"{base}versions/1/").status_code == 404
    assert DatasetVersion.objects.filter(pk=other.pk).exists()


def test_preview_gives_the_first_records(api, team):
    v = _stored(team, "rows", _jsonl([{"text": f"r{i}"} for i in range(30)]))
    url = f"{URL}{v.dataset_id}/versions/1/preview/"
    r = api.get(url)
    assert r.status_code == 200
    body = r.json()
    assert body["format"] == "jsonl" and len(body["records"]) == 20
    assert json.loads(body["records"][0]) == {"text": "r0"}
    assert len(api.get(url, {"limit": 3}).json()["records"]) == 3
    assert api.get(url, {"limit": 0}).status_code == 400
    assert api.get(url, {"limit": 101}).status_code == 400


def test_preview_and_download_of_a_missing_file_are_a_409(api, team):
    v = _stored(team, "gone", b"text\n", "g.txt")
    Path(v.storage_path).unlink()
    base = f"{URL}{v.dataset_id}/versions/1/"
    r = api.get(base + "preview/")
    assert r.status_code == 409 and "cannot read" in r.json()["detail"]
    assert api.get(base + "download/").status_code == 409


def test_download_streams_the_stored_bytes(api, team):
    body = _jsonl([{"text": f"r{i}" * 50} for i in range(2000)])
    v = _stored(team, "big", body)
    r = api.get(f"{URL}{v.dataset_id}/versions/1/download/")
    assert r.status_code == 200
    assert r.streaming
    assert r["Content-Type"] == "application/jsonl"
    assert 'filename="big-v1.jsonl"' in r["Content-Disposition"]
    assert int(r["Content-Length"]) == len(body)
    with pytest.warns(Warning, match="asynchronous iterators"):  # the test client is sync
        assert b"".join(r) == body


def test_a_version_in_use_is_not_deleted_and_the_409_names_the_runs(
    api, team, queue, django_capture_on_commit_callbacks
):
    v1 = _stored(team, "used", b"one\n", "u.txt")
    v2 = _stored(team, "used", b"two\n", "u.txt")
    run = run_submit(team=team, queue=queue, plan=_plan("dataset:used@1"))
    base = f"{URL}{v1.dataset_id}/"

    r = api.delete(f"{base}versions/1/")
    assert r.status_code == 409
    assert r.json()["runs"] == [run.pk] and f"#{run.pk}" in r.json()["detail"]
    r = api.delete(base)
    assert r.status_code == 409 and r.json()["runs"] == [run.pk]
    assert DatasetVersion.objects.filter(dataset_id=v1.dataset_id).count() == 2

    path2 = Path(v2.storage_path)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"{base}versions/2/").status_code == 204
    assert not path2.exists() and Path(v1.storage_path).exists()
    assert api.get(f"{base}versions/2/").status_code == 404


def test_deleting_the_last_version_or_the_dataset_removes_rows_and_files(
    api, team, django_capture_on_commit_callbacks
):
    v = _stored(team, "solo", b"one\n", "s.txt")
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"{URL}{v.dataset_id}/versions/1/").status_code == 204
    assert not Dataset.objects.filter(pk=v.dataset_id).exists()
    assert not Path(v.storage_path).exists()

    a = _stored(team, "pair", b"a\n", "p.txt")
    b = _stored(team, "pair", b"b\n", "p.txt")
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"{URL}{a.dataset_id}/").status_code == 204
    assert not Dataset.objects.filter(pk=a.dataset_id).exists()
    assert not Path(a.storage_path).exists() and not Path(b.storage_path).exists()
    assert api.get(f"{URL}{a.dataset_id}/").status_code == 404


def test_a_legacy_run_naming_the_stored_file_also_blocks_the_delete(api, team, queue):
    v = _stored(team, "legacy", b"one\n", "l.txt")
    run = f.RunFactory(team=team, queue=queue, plan={"stages": [{"data": [
        {"source": f"file:{v.storage_path}"}]}]})  # fmt: skip
    r = api.delete(f"{URL}{v.dataset_id}/")
    assert r.status_code == 409 and r.json()["runs"] == [run.pk]


def test_viewers_read_but_may_not_upload_or_delete(team):
    v = _stored(team, "shared", b"one\n", "s.txt")
    viewer = f.api_client_for(team, "viewer")
    assert viewer.get(URL).json()["count"] == 1
    assert viewer.get(f"{URL}{v.dataset_id}/versions/1/preview/").status_code == 200
    r = _post(viewer, "n.txt", b"new\n", name="new")
    assert r.status_code == 403
    assert viewer.delete(f"{URL}{v.dataset_id}/").status_code == 403
    assert viewer.delete(f"{URL}{v.dataset_id}/versions/1/").status_code == 403
    assert Dataset.objects.count() == 1


def test_upload_into_a_named_team_and_not_into_someone_elses(team):
    other = f.TeamFactory()
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team, role="viewer")
    f.MembershipFactory(user=user, team=other, role="member")
    api = APIClient()
    api.force_authenticate(user)
    r = _post(api, "x.txt", b"x\n", name="x", team=other.slug)
    assert r.status_code == 201 and r.json()["dataset"]["team"] == other.slug
    assert _post(api, "x.txt", b"y\n", name="x", team=team.slug).status_code == 403
    assert _post(api, "x.txt", b"z\n", name="x", team="no-such-team").status_code == 403


def test_a_token_uploads_like_a_session(team, user):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {f.api_token_for(user, team)}")
    r = _post(api, "t.txt", b"tok\n", name="tok")
    assert r.status_code == 201
    assert APIClient().get(URL).status_code == 401
