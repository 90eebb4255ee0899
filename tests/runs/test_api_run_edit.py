"""PATCH /api/runs/{id}/ (name, tags, notes) and DELETE /api/runs/{id}/ (a finished run with
its points, checkpoints on disk and lineage rows): members only, other teams see 404."""

from __future__ import annotations

import pytest
from django.utils import timezone

from runs.models import Checkpoint, MetricPoint, Run, RunDatasetVersion, RunState, Series
from runs.selectors.run_files import run_dir
from runs.services.ingest import IngestPoint, ingest_points
from runs.services.runs import run_cancel, run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(team, queue):
    return run_submit(team=team, queue=queue, plan=reduced_lm_plan())


def _url(run: Run) -> str:
    return f"/api/runs/{run.pk}/"


def _finish(run: Run, state: str = RunState.SUCCEEDED) -> Run:
    Run.objects.filter(pk=run.pk).update(state=state, finished_at=timezone.now())
    run.refresh_from_db()
    return run


def _checkpoint(run: Run, step: int) -> Checkpoint:
    path = run_dir(run) / "checkpoints" / f"step-{step:08d}"
    (path / "model").mkdir(parents=True)
    (path / "model" / "weights.bin").write_bytes(b"w" * 100)
    return Checkpoint.objects.create(
        run=run, stage_run=run.stage_runs.get(stage_index=0), step=step, path=str(path),
        size_bytes=100,
    )  # fmt: skip


def test_patch_changes_name_tags_and_notes(api, run):
    r = api.patch(_url(run), {"name": "renamed", "tags": ["a", "b", "a"], "notes": "lr too high"},
                  format="json")  # fmt: skip
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["name"] == "renamed" and body["tags"] == ["a", "b"]
    assert body["notes"] == "lr too high"
    run.refresh_from_db()
    assert (run.name, run.tags, run.notes) == ("renamed", ["a", "b"], "lr too high")

    r = api.patch(_url(run), {"notes": ""}, format="json")
    assert r.status_code == 200
    run.refresh_from_db()
    assert (run.name, run.notes) == ("renamed", "")
    assert api.get(_url(run)).json()["notes"] == ""


def test_patch_works_on_a_finished_run_and_keeps_other_fields(api, run):
    _finish(run, RunState.FAILED)
    r = api.patch(_url(run), {"tags": []}, format="json")
    assert r.status_code == 200 and r.json()["tags"] == [] and r.json()["state"] == "failed"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"tags": ["x" * 51]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": "not-a-list"}, "tags"),
        ({"tags": [f"t{i}" for i in range(51)]}, "tags"),
        ({"notes": "x" * 100_001}, "notes"),
        ({"notes": None}, "notes"),
    ],
)
def test_patch_refuses_bad_values_naming_the_field(api, run, body, field):
    r = api.patch(_url(run), body, format="json")
    assert r.status_code == 400
    assert field in (r.json().get("errors") or r.json())
    run.refresh_from_db()
    assert run.notes == "" and run.tags == []


def test_viewers_may_not_edit_or_delete_and_other_teams_see_404(team, run):
    _finish(run)
    viewer = f.api_client_for(team, "viewer")
    assert viewer.patch(_url(run), {"name": "x"}, format="json").status_code == 403
    assert viewer.delete(_url(run)).status_code == 403
    outsider = f.api_client_for(f.TeamFactory(), "member")
    assert outsider.patch(_url(run), {"name": "x"}, format="json").status_code == 404
    assert outsider.delete(_url(run)).status_code == 404
    assert Run.objects.filter(pk=run.pk, name=run.name).exists()


def test_a_run_that_may_still_change_is_not_deleted(api, run):
    r = api.delete(_url(run))
    assert r.status_code == 409
    assert "cancel it first" in r.json()["detail"]
    Run.objects.filter(pk=run.pk).update(state=RunState.RUNNING)
    assert api.delete(_url(run)).status_code == 409
    assert Run.objects.filter(pk=run.pk).exists()


def test_delete_removes_points_series_checkpoints_and_their_files(
    api, run, django_capture_on_commit_callbacks
):
    ingest_points(run_id=run.pk, points=[IngestPoint("train/loss", s, 1.0 / (s + 1))
                                         for s in range(1, 30)], publish=False)  # fmt: skip
    ckpt = _checkpoint(run, 10)
    folder = run_dir(run)
    run_cancel(run=run)
    other = run_submit(team=run.team, queue=run.queue, plan=reduced_lm_plan())
    ingest_points(run_id=other.pk, points=[IngestPoint("train/loss", 1, 0.5)], publish=False)

    with django_capture_on_commit_callbacks(execute=True):
        r = api.delete(_url(run))
    assert r.status_code == 204
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not Series.objects.filter(run_id=run.pk).exists()
    assert not Checkpoint.objects.filter(pk=ckpt.pk).exists()
    assert not folder.exists()
    assert MetricPoint.objects.filter(series__run=other).count() == 1
    assert api.get(_url(run)).status_code == 404
    assert api.delete(_url(run)).status_code == 404


def test_a_run_with_forks_is_not_deleted_the_409_names_them(api, run):
    _finish(run)
    ckpt = _checkpoint(run, 10)
    fork = f.RunFactory(team=run.team, queue=run.queue, parent=run, fork_checkpoint=ckpt)
    r = api.delete(_url(run))
    assert r.status_code == 409
    assert r.json()["runs"] == [fork.pk] and "delete them first" in r.json()["detail"]
    _finish(fork, RunState.CANCELED)
    assert api.delete(_url(fork)).status_code == 204
    assert api.delete(_url(run)).status_code == 204


def test_deleting_the_run_frees_the_dataset_version_it_used(api, team, queue):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from runs.services.datasets import dataset_version_create

    version, _ = dataset_version_create(
        team=team, name="corpus", upload=SimpleUploadedFile("c.txt", b"one\n\ntwo\n"),
        filename="c.txt",
    )  # fmt: skip
    plan = reduced_lm_plan()
    plan["stages"][0]["data"] = [{"source": "dataset:corpus"}]
    run = run_submit(team=team, queue=queue, plan=plan)
    assert RunDatasetVersion.objects.filter(run=run).exists()
    assert api.delete(f"/api/datasets/{version.dataset_id}/").status_code == 409
    _finish(run, RunState.CANCELED)
    assert api.delete(_url(run)).status_code == 204
    assert api.delete(f"/api/datasets/{version.dataset_id}/").status_code == 204


def test_an_external_runs_client_files_are_never_touched(api, team, queue, tmp_path):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan(), external=True)
    local = tmp_path / "client-ckpt"
    local.mkdir()
    Checkpoint.objects.create(run=run, stage_run=run.stage_runs.get(stage_index=0), step=5,
                              path=str(local))  # fmt: skip
    _finish(run)
    assert api.delete(_url(run)).status_code == 204
    assert local.exists()
