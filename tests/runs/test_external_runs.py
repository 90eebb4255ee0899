"""External runs: trained outside Stagewise, reporting stages and metrics over the API.

The API rules run in-process; the end-to-end tests start daphne on the test database and run
``python -m trainers run --report-to`` against it as a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from runs.models import MetricPoint, Run, RunAnalysis, Series, WorkerLease
from runs.services.data_access import MODEL_DENIED, PATH_DENIED
from runs.services.dispatch import dispatch, requeue_expired
from runs.services.external import external_stage_report
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan
from tests.workers import ROOT, wait_for


def _missing_file_plan() -> dict:
    """A plan whose training data and starting model are on the client's machine."""
    plan = reduced_lm_plan()
    plan["stages"][0]["data"] = [{"source": "file:/data/on/the/gpu/box/prose.txt"}]
    plan["model"]["path"] = "/models/on/the/gpu/box/base"
    return plan


def _queue(**kw):
    return f.QueueFactory(name=f"ext-{uuid.uuid4().hex[:8]}", **kw)


def _external(team, queue=None) -> Run:
    return run_submit(team=team, queue=queue or _queue(), plan=reduced_lm_plan(), external=True)


def _states(run: Run) -> list[str]:
    return list(run.stage_runs.order_by("stage_index").values_list("state", flat=True))


def _report(api, run: Run, index: int, state: str, **extra):
    return api.post(f"/api/runs/{run.pk}/stages/{index}/", {"state": state, **extra},
                    format="json")  # fmt: skip


def _points(key: str, steps, value=1.0) -> list[dict]:
    return [{"key": key, "step": s, "value": value + s} for s in steps]


# ------------------------------------------------------------------ creating, never dispatching


@pytest.mark.django_db
def test_external_run_is_created_running_with_pending_stages_and_unchecked_files(api, queue):
    r = api.post("/api/runs/", {"external": True, "plan": _missing_file_plan(), "name": "box",
                                "tags": ["gpu"]}, format="json")  # fmt: skip
    assert r.status_code == 201, r.json()
    body = r.json()
    assert (body["external"], body["state"], body["name"], body["tags"]) == (
        True, "running", "box", ["gpu"])  # fmt: skip
    assert body["queue"] == queue.name  # no queue given: the team's first usable one
    assert [s["state"] for s in body["stages"]] == ["pending"] * 3
    assert [s["end_step"] for s in body["stages"]] == [40, 80, 100]
    run = Run.objects.get(pk=body["id"])
    assert run.external and run.started_at is not None
    assert dispatch() == 0
    assert _states(run) == ["pending"] * 3
    assert not WorkerLease.objects.exists()
    row = api.get("/api/ui/runs/").json()["results"][0]
    assert (row["id"], row["external"]) == (run.pk, True)
    # For our workers those paths are ones the team may not read (granted roots only).
    plan = _missing_file_plan()
    r = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
    assert r.status_code == 400
    assert r.json()["errors"]["model.path"] == [MODEL_DENIED]
    del plan["model"]["path"]
    r = api.post("/api/runs/", {"plan": plan, "queue": queue.name}, format="json")
    assert r.status_code == 400
    assert r.json()["errors"]["stages.0.data.0.source"] == [PATH_DENIED]
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_a_worker_run_still_needs_a_queue_and_an_external_one_needs_a_usable_queue(api, team):
    r = api.post("/api/runs/", {"plan": reduced_lm_plan()}, format="json")
    assert r.status_code == 400
    assert "queue" in r.json()
    _queue().allowed_teams.add(f.TeamFactory())  # the only queue is another team's
    r = api.post("/api/runs/", {"plan": reduced_lm_plan(), "external": True}, format="json")
    assert r.status_code == 400
    assert "no queue is open to team" in r.json()["errors"]["queue"][0]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_external_stages_are_never_dispatched_nor_counted_against_the_queue(team):
    queue = _queue(max_concurrent=1)
    ext = _external(team, queue)
    external_stage_report(run=ext, stage_index=0, state="running")
    external_stage_report(run=ext, stage_index=0, state="succeeded")
    assert _states(ext) == ["succeeded", "queued", "pending"]  # stage 1 waits for its client
    assert dispatch() == 0
    assert _states(ext) == ["succeeded", "queued", "pending"]
    external_stage_report(run=ext, stage_index=1, state="running")
    # The external stage runs on its own machine: the queue's one worker slot is still free.
    worker_run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    assert dispatch() == 1
    assert _states(worker_run)[0] == "running"
    assert not WorkerLease.objects.filter(stage_run__run=ext).exists()


@pytest.mark.django_db
def test_an_expired_lease_never_requeues_an_external_stage(team):
    queue = _queue(max_concurrent=1)
    ext = _external(team, queue)
    external_stage_report(run=ext, stage_index=0, state="running")
    worker_run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    dispatch()
    beat = timezone.now() - timezone.timedelta(minutes=5)
    expired = dict(
        acquired_at=beat, heartbeat_at=beat, expires_at=beat + timezone.timedelta(seconds=60)
    )
    WorkerLease.objects.filter(stage_run__run=worker_run).update(**expired)
    f.WorkerLeaseFactory(stage_run=ext.stage_runs.get(stage_index=0), **expired)
    assert requeue_expired() == 2
    assert _states(worker_run)[0] == "queued"  # a worker's stage goes back to the queue
    assert _states(ext)[0] == "running"  # an external one is its client's business
    assert not WorkerLease.objects.exists()


# ------------------------------------------------------------------------------ stage reports


@pytest.mark.django_db
def test_stage_reports_drive_the_run_to_succeeded(api, team):
    run = _external(team)
    for i, end in enumerate([40, 80, 100]):
        r = _report(api, run, i, "running")
        assert r.status_code == 200, r.json()
        assert r.json()["stages"][i]["state"] == "running"
        assert r.json()["state"] == "running"
        assert _report(api, run, i, "running").status_code == 200  # a retry changes nothing
        r = _report(api, run, i, "succeeded")
        assert r.status_code == 200, r.json()
        stage = r.json()["stages"][i]
        assert (stage["state"], stage["last_step"], stage["attempts"]) == ("succeeded", end, 1)
        assert stage["started_at"] and stage["finished_at"]
    run.refresh_from_db()
    assert run.state == "succeeded" and run.finished_at is not None
    assert _states(run) == ["succeeded"] * 3
    assert _report(api, run, 2, "succeeded").status_code == 200  # a retry after the end


@pytest.mark.django_db
def test_a_failed_stage_fails_the_run_with_its_error(api, team):
    run = _external(team)
    _report(api, run, 0, "running")
    _report(api, run, 0, "succeeded")
    _report(api, run, 1, "running")
    r = _report(api, run, 1, "failed", error="RuntimeError: CUDA out of memory",
                traceback="Traceback (most recent call last):\n  ...")  # fmt: skip
    assert r.status_code == 200, r.json()
    run.refresh_from_db()
    assert (run.state, run.error) == ("failed", "RuntimeError: CUDA out of memory")
    assert _states(run) == ["succeeded", "failed", "canceled"]
    stage = run.stage_runs.get(stage_index=1)
    assert stage.error == "RuntimeError: CUDA out of memory"
    assert stage.traceback.startswith("Traceback (most recent call last)")
    r = _report(api, run, 2, "running")
    assert r.status_code == 409
    assert "stage 2 is canceled" in r.json()["detail"]


@pytest.mark.django_db
def test_a_stage_that_fails_before_it_started_fails_the_run(api, team):
    run = _external(team)
    r = _report(api, run, 0, "failed", error="DataError: no such file")
    assert r.status_code == 200, r.json()
    run.refresh_from_db()
    assert (run.state, run.error) == ("failed", "DataError: no such file")
    assert _states(run) == ["failed", "canceled", "canceled"]


@pytest.mark.django_db
def test_illegal_transitions_are_409_naming_the_current_state(api, team):
    run = _external(team)
    r = _report(api, run, 0, "succeeded")
    assert r.status_code == 409
    assert r.json()["detail"] == "stage 0 is pending and cannot become succeeded"
    r = _report(api, run, 1, "running")
    assert r.status_code == 409
    assert r.json()["detail"].startswith("stage 0 is pending; stage 1 can start only after")
    assert _states(run) == ["pending"] * 3
    for i in range(3):
        _report(api, run, i, "running")
        _report(api, run, i, "succeeded")
    r = _report(api, run, 2, "failed", error="late")
    assert r.status_code == 409
    assert r.json()["detail"] == "stage 2 is succeeded and cannot become failed"
    run.refresh_from_db()
    assert (run.state, run.error) == ("succeeded", "")


@pytest.mark.django_db
def test_bad_reports_are_400_naming_the_field(api, team):
    run = _external(team)
    r = _report(api, run, 0, "queued")
    assert r.status_code == 400
    assert "state" in r.json()
    r = api.post(f"/api/runs/{run.pk}/stages/0/", {}, format="json")
    assert r.status_code == 400
    assert "state" in r.json()
    r = _report(api, run, 3, "running")
    assert r.status_code == 400
    assert r.json()["errors"]["index"] == [f"run {run.pk} has stages 0 to 2, not 3"]
    assert api.post(f"/api/runs/{run.pk}/stages/-1/", {"state": "running"},
                    format="json").status_code == 404  # fmt: skip
    assert _states(run) == ["pending"] * 3


@pytest.mark.django_db
def test_stage_reports_to_a_worker_run_are_409(api, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    r = _report(api, run, 0, "succeeded")
    assert r.status_code == 409
    assert "executed by Stagewise's workers" in r.json()["detail"]
    assert _states(run) == ["queued", "pending", "pending"]


# -------------------------------------------------------------------------------------- metrics


@pytest.mark.django_db
def test_metrics_with_or_without_a_stage_land_in_the_runs_one_series_per_key(api, team):
    run = _external(team)
    _report(api, run, 0, "running")
    r = api.post(f"/api/runs/{run.pk}/metrics/",
                 {"stage": 0, "points": _points("train/loss", range(1, 11))}, format="json")  # fmt: skip
    assert r.status_code == 200, r.json()
    assert r.json() == {"accepted": 10}
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"points": _points("custom", [3])}, format="json")
    assert r.status_code == 200
    stage0 = run.stage_runs.get(stage_index=0)
    series = Series.objects.get(run=run, key="train/loss")
    assert Series.objects.filter(run=run).count() == 2
    stored = list(
        MetricPoint.objects.filter(series=series).order_by("step").values_list("step", "value")
    )
    assert stored == [(s, 1.0 + s) for s in range(1, 11)]
    stage0.refresh_from_db()
    assert stage0.last_step == 10  # progress, as a worker's sink reports it
    body = api.get(f"/api/runs/{run.pk}/series/?keys=train/loss").json()
    assert body["series"]["train/loss"]["steps"] == list(range(1, 11))


@pytest.mark.django_db
@pytest.mark.parametrize("stage", [3, -1, "0", True, 1.5])
def test_a_bad_stage_in_metrics_is_400_and_stores_nothing(api, team, stage):
    run = _external(team)
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"stage": stage, "points": _points("k", [1])},
                 format="json")  # fmt: skip
    assert r.status_code == 400
    assert "stage" in r.json()["errors"]
    assert not MetricPoint.objects.exists()


@pytest.mark.django_db
def test_a_canceled_external_run_answers_409_to_metrics_and_reports(api, team, queue):
    run = _external(team)
    _report(api, run, 0, "running")
    r = api.post(f"/api/runs/{run.pk}/cancel/")
    assert r.status_code == 200
    assert r.json()["state"] == "canceled"
    assert _states(run) == ["canceled"] * 3  # no worker of ours will mark the running one
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"stage": 0, "points": _points("k", [1])},
                 format="json")  # fmt: skip
    assert (r.status_code, r.json()) == (409, {"detail": "run canceled"})
    for state in ("running", "succeeded", "canceled"):
        r = _report(api, run, 0, state)
        assert (r.status_code, r.json()) == (409, {"detail": "run canceled"})
    assert not MetricPoint.objects.exists()
    # A worker run never takes points over the API (its worker writes them in-process, under
    # its lease, even after a cancel: the stage stops at a step and flushes).
    worker_run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    api.post(f"/api/runs/{worker_run.pk}/cancel/")
    r = api.post(f"/api/runs/{worker_run.pk}/metrics/", {"points": _points("k", [1])},
                 format="json")  # fmt: skip
    assert r.status_code == 409


@pytest.mark.django_db
def test_other_teams_get_404_and_viewers_403(team):
    run = _external(team)
    outsider = f.api_client_for(f.TeamFactory(), "admin")
    viewer = f.api_client_for(team, "viewer")
    metrics = {"stage": 0, "points": _points("k", [1])}
    assert _report(outsider, run, 0, "running").status_code == 404
    assert outsider.post(f"/api/runs/{run.pk}/metrics/", metrics, format="json").status_code == 404
    assert _report(viewer, run, 0, "running").status_code == 403
    assert viewer.post(f"/api/runs/{run.pk}/metrics/", metrics, format="json").status_code == 403
    r = viewer.post("/api/runs/", {"plan": reduced_lm_plan(), "external": True}, format="json")
    assert r.status_code == 403
    assert _states(run) == ["pending"] * 3
    assert not MetricPoint.objects.exists()
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_the_run_page_and_runs_list_show_the_external_badge(client, team, user):
    run = _external(team)
    client.force_login(user)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="run-external"' in html
    worker_run = run_submit(team=team, queue=_queue(), plan=reduced_lm_plan())
    assert 'id="run-external"' not in client.get(f"/runs/{worker_run.pk}/").content.decode()
    js = (ROOT / "frontend/static/frontend/js/runs_list.js").read_text()
    assert "r.external ?" in js


# ------------------------------------------------------------------------- liveness (last report)


@pytest.mark.django_db
def test_stage_reports_and_metrics_stamp_last_report_at(api, team):
    run = _external(team)
    assert run.last_report_at is None
    before = timezone.now()
    r = _report(api, run, 0, "running")
    assert r.status_code == 200
    run.refresh_from_db()
    first = run.last_report_at
    assert first is not None and first >= before
    assert r.json()["last_report_at"] is not None and r.json()["stale"] is False
    Run.objects.filter(pk=run.pk).update(last_report_at=before - timedelta(hours=1))
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"stage": 0, "points": _points("k", [1])},
                 format="json")  # fmt: skip
    assert r.status_code == 200
    run.refresh_from_db()
    assert run.last_report_at >= before
    # A repeated report (a client's retry) is accepted, so it is a sign of life too.
    Run.objects.filter(pk=run.pk).update(last_report_at=before - timedelta(hours=1))
    assert _report(api, run, 0, "running").status_code == 200
    run.refresh_from_db()
    assert run.last_report_at >= before
    # A refused report is not.
    Run.objects.filter(pk=run.pk).update(last_report_at=before - timedelta(hours=1))
    assert _report(api, run, 2, "running").status_code == 409
    run.refresh_from_db()
    assert run.last_report_at < before


@pytest.mark.django_db
def test_a_worker_runs_last_report_at_stays_null(api, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    r = api.post(f"/api/runs/{run.pk}/metrics/", {"points": _points("k", [1])}, format="json")
    assert r.status_code == 409
    assert _report(api, run, 0, "succeeded").status_code == 409
    run.refresh_from_db()
    assert run.last_report_at is None
    body = api.get(f"/api/runs/{run.pk}/").json()
    assert (body["last_report_at"], body["stale"]) == (None, False)
    row = api.get(f"/api/ui/runs/{run.pk}/").json()
    assert (row["last_report_at"], row["last_report_age"], row["stale"]) == (None, None, False)


@pytest.mark.django_db
def test_ui_rows_flag_a_silent_running_external_run_stale(api, team, settings):
    settings.STAGEWISE_EXTERNAL_STALE_SECONDS = 600
    run = _external(team)
    _report(api, run, 0, "running")

    def row():
        rows = api.get("/api/ui/runs/").json()["results"]
        return next(r for r in rows if r["id"] == run.pk)

    fresh = row()
    assert fresh["last_report_at"] is not None
    assert fresh["stale"] is False and 0 <= fresh["last_report_age"] < 60
    assert api.get(f"/api/ui/runs/{run.pk}/").json()["stale"] is False
    Run.objects.filter(pk=run.pk).update(last_report_at=timezone.now() - timedelta(minutes=15))
    old = row()
    assert old["stale"] is True and 900 <= old["last_report_age"] < 960
    assert api.get(f"/api/ui/runs/{run.pk}/").json()["stale"] is True
    assert api.get(f"/api/runs/{run.pk}/").json()["stale"] is True
    settings.STAGEWISE_EXTERNAL_STALE_SECONDS = 3600  # the threshold is a setting
    assert row()["stale"] is False
    settings.STAGEWISE_EXTERNAL_STALE_SECONDS = 600
    # Stale is only a mark: the run stays running, and a finished run is never stale.
    assert Run.objects.get(pk=run.pk).state == "running"
    api.post(f"/api/runs/{run.pk}/cancel/")
    Run.objects.filter(pk=run.pk).update(last_report_at=timezone.now() - timedelta(hours=2))
    assert row()["stale"] is False


@pytest.mark.django_db
def test_an_external_run_that_never_reported_goes_stale_from_its_start(api, team):
    run = _external(team)
    assert api.get(f"/api/ui/runs/{run.pk}/").json()["stale"] is False
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(hours=1))
    row = api.get(f"/api/ui/runs/{run.pk}/").json()
    assert (row["last_report_at"], row["stale"]) == (None, True)


@pytest.mark.django_db
def test_the_run_page_and_runs_list_render_the_liveness_mark(client, team, user):
    run = _external(team)
    client.force_login(user)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="run-last-report"' in html and 'id="run-stale"' in html
    worker_run = run_submit(team=team, queue=_queue(), plan=reduced_lm_plan())
    assert 'id="run-stale"' not in client.get(f"/runs/{worker_run.pk}/").content.decode()
    for js in ("runs_list.js", "run_summary_ui.js"):  # the run page draws it there
        text = (ROOT / "frontend/static/frontend/js" / js).read_text()
        assert "the job may be gone; cancel it if so" in text and "last report" in text


# ------------------------------------------------------- end to end: daphne + the trainers CLI


@pytest.fixture
def reporter(transactional_db):
    """A team member's API token, and a queue for the team's external runs."""
    team = f.TeamFactory()
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team, role="member")
    _queue()
    return team, f.api_token_for(user, team)


def _cli(plan: dict, tmp_path, url: str, token: str, *extra: str, popen: bool = False):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    cmd = [sys.executable, "-m", "trainers", "run", str(plan_path), "--out", str(tmp_path / "out"),
           "--no-progress", "--report-to", url, *extra]  # fmt: skip
    env = {**os.environ, "STAGEWISE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _local_rows(tmp_path) -> list[tuple]:
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    return [(r["key"], r["step"], r["value"], r["time"]) for r in rows]


def _stored_rows(run: Run) -> list[tuple]:
    return list(
        MetricPoint.objects.filter(series__run=run).values_list(
            "series__key", "step", "value", "wall_time"
        )
    )


@pytest.mark.slow
def test_cli_reports_a_run_trained_elsewhere_point_for_point(server, reporter, tmp_path):
    from tests.trainers.helpers import lm_plan

    team, token = reporter
    done = _cli(lm_plan(), tmp_path, server.url, token, "--name", "gpu box")
    assert done.returncode == 0, done.stderr + server.logs()
    run = Run.objects.get(team=team)
    assert f"Stagewise run {run.pk}: {server.url}/runs/{run.pk}/" in done.stdout
    assert (run.external, run.name, run.state) == (True, "gpu box", "succeeded")
    assert _states(run) == ["succeeded"] * 3
    local, stored = _local_rows(tmp_path), _stored_rows(run)
    # every key, step, value and time of the local file, under the same stage, stored once
    assert len(stored) == len(set(stored)) == len(local) > 100
    assert set(stored) == set(local)
    analysis = RunAnalysis.objects.get(run=run)
    assert analysis.eval_sets and analysis.result


@pytest.mark.slow
def test_canceling_in_stagewise_stops_the_trainer(server, reporter, tmp_path):
    from runs.services.runs import run_cancel
    from tests.trainers.helpers import lm_plan

    team, token = reporter
    proc = _cli(lm_plan(steps=(20_000, 10, 8)), tmp_path, server.url, token, popen=True)
    try:
        wait_for(
            lambda: (
                MetricPoint.objects.filter(series__run__team=team, step__gte=30).exists()
                or proc.poll() is not None
            ),
            180,
            "the trainer's first points",
            server.logs,
        )
        run = Run.objects.get(team=team)
        run_cancel(run=run)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert f"stopped: run {run.pk} was canceled in Stagewise" in err
    assert time.monotonic() - t0 < 30
    local = _local_rows(tmp_path)
    assert max(step for _, step, _, _ in local) < 20_000  # stopped inside stage 0
    assert set(_stored_rows(run)) <= set(local)
    run.refresh_from_db()
    assert run.state == "canceled"
    assert _states(run) == ["canceled"] * 3


@pytest.mark.slow
def test_the_sink_rides_out_a_server_restart_without_losing_points(server, reporter):
    import threading

    from tests.trainers.helpers import lm_plan
    from trainers.events import Point
    from trainers.remote import StagewiseSink, create_external_run

    team, token = reporter
    run_id = create_external_run(server.url, token, lm_plan(), name="restart")["id"]
    sink = StagewiseSink(server.url, token, run_id, flush_seconds=0.05, retry_for=120)
    sent = [Point(key, s, s / 7, 1e9 + s, 0) for s in range(13) for key in ("train/loss", "lr")]
    sink.stage_started(0, 0)
    sink.points(sent[:10])
    sink.flush()
    server.stop()  # the server goes away mid-stage
    sink.points(sent[10:])
    wait_for(lambda: sink.requests_failed > 0, 10, "a failed send")
    restart = threading.Thread(target=server.start)
    restart.start()
    sink.stage_finished(0, 12)  # waits for the server, sends the rest, then reports
    restart.join()
    sink.close()
    run = Run.objects.get(pk=run_id)
    stored = _stored_rows(run)
    assert sorted(stored) == sorted((p.key, p.step, p.value, p.time) for p in sent)
    assert _states(run) == ["succeeded", "queued", "pending"]
    assert run.stage_runs.get(stage_index=0).last_step == 12


@pytest.mark.slow
def test_a_killed_trainer_resumes_into_the_same_run(server, reporter, tmp_path):
    """A preempted cluster job (SIGKILL, no last report) restarted with --resume continues
    its run: no second run, every stage succeeded, each local point stored once."""
    import signal

    from tests.trainers.helpers import lm_plan
    from trainers.checkpoints import list_checkpoints

    team, token = reporter
    plan, out = lm_plan(steps=(12, 600, 8)), tmp_path / "out"
    ref = {}

    def inside_stage_1() -> bool:
        if proc.poll() is not None:
            return True
        run = Run.objects.filter(team=team).first()
        ref["run"] = run
        return (
            run is not None
            and _states(run)[1] == "running"
            and any(c.stage_index == 1 and not c.stage_end for c in list_checkpoints(out))
            and MetricPoint.objects.filter(
                series__run=run, step__gt=run.stage_runs.get(stage_index=1).start_step
            ).exists()
        )

    proc = _cli(plan, tmp_path, server.url, token, popen=True)
    try:
        wait_for(inside_stage_1, 120, "stage 1 running with a checkpoint", server.logs)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.communicate()
    run = ref["run"]
    assert json.loads((out / "stagewise.json").read_text()) == {"url": server.url,
                                                                "run_id": run.pk}  # fmt: skip
    run.refresh_from_db()
    assert run.state == "running"  # nobody reported anything after the kill
    assert _states(run) == ["succeeded", "running", "pending"]
    killed_at = max(c.step for c in list_checkpoints(out))
    assert killed_at < 612  # killed inside stage 1 (steps 13 to 612)

    done = _cli(plan, tmp_path, server.url, token, "--resume")
    assert done.returncode == 0, done.stderr + server.logs()
    assert f"Stagewise run {run.pk} (resumed): {server.url}/runs/{run.pk}/" in done.stdout
    assert Run.objects.filter(team=team).count() == 1
    run.refresh_from_db()
    assert run.state == "succeeded"
    assert _states(run) == ["succeeded"] * 3
    assert run.stage_runs.get(stage_index=1).attempts == 1  # "running" again was a no-op
    local, stored = _local_rows(tmp_path), _stored_rows(run)
    assert len({(k, step) for k, step, _, _ in local}) == len(local) > 600
    assert len(stored) == len(set(stored)) == len(local)
    assert set(stored) == set(local)

    # The run is over: resuming it again trains nothing.
    again = _cli(plan, tmp_path, server.url, token, "--resume")
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"error: run {run.pk} is already succeeded in Stagewise; not training "
        "(a new run needs a new --out)"
    )
