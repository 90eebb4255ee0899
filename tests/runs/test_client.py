"""The Python client (trainers.client) against a real daphne server: free-form runs, stage
marks, outages, the offline spool and ``python -m trainers sync``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from runs.models import MetricPoint, Run
from tests.workers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def _stored(run_id: int) -> list[tuple[str, int, float]]:
    rows = MetricPoint.objects.filter(series__run_id=run_id).values_list(
        "series__key", "step", "value"
    )
    return sorted(rows)


def _stages(run_id: int) -> list[tuple]:
    run = Run.objects.get(pk=run_id)
    return [(sr.name, sr.start_step, sr.end_step, sr.state)
            for sr in run.stage_runs.order_by("stage_index")]  # fmt: skip


def _train(run, steps: range, logged: list, *, offset: float = 0.0) -> None:
    for step in steps:
        metrics = {"train/loss": 3.0 - step / 1000 + offset, "lr": 1e-3 * step}
        if step % 10 == 0:
            metrics["eval/prose/loss"] = 3.5 - step / 2000
        run.log(metrics, step=step)
        logged.extend((k, step, v) for k, v in metrics.items())


def test_free_form_run_keeps_its_stage_marks_and_every_point_once(server, token, tmp_path):
    from trainers import client

    logged: list = []
    run = client.init(url=server.url, token=token, name="hf-like", config={"lr": 1e-3},
                      spool_dir=tmp_path / "spool")  # fmt: skip
    assert run.mode == "online" and run.url.endswith(f"/runs/{run.id}/")
    run.stage("prose-pt")
    _train(run, range(0, 41), logged)
    run.stage("code-cpt")  # the boundary is the last logged step: 40
    _train(run, range(41, 81), logged, offset=0.5)
    run.log({"train/loss": float("nan")}, step=81)  # not stored, never blocks
    run.finish()
    assert _stages(run.id) == [("prose-pt", 0, 40, "succeeded"), ("code-cpt", 40, 80, "succeeded")]
    stored = _stored(run.id)
    assert stored == sorted(logged)
    assert len(stored) == len({(k, s) for k, s, _ in stored})
    shown = Run.objects.get(pk=run.id)
    assert (shown.state, shown.free_form, shown.config) == ("succeeded", True, {"lr": 1e-3})


def test_server_down_for_a_while_loses_nothing(server, token, tmp_path):
    from trainers import client

    logged: list = []
    run = client.init(url=server.url, token=token, spool_dir=tmp_path / "spool")
    run.stage("pt")
    _train(run, range(0, 30), logged)
    run._sender.flush(30)
    server.stop()
    _train(run, range(30, 60), logged)  # buffered while the server is away
    server.start()
    _train(run, range(60, 90), logged)
    run.finish()
    assert _stored(run.id) == sorted(logged)
    assert not (tmp_path / "spool").exists()  # nothing had to spill


def test_overflow_spills_to_the_spool_and_finish_sends_it(server, token, tmp_path):
    from trainers import client

    logged: list = []
    run = client.init(url=server.url, token=token, spool_dir=tmp_path / "spool", max_buffered=50)
    run.stage("pt")
    _train(run, range(0, 10), logged)
    run._sender.flush(30)
    server.stop()
    _train(run, range(10, 200), logged)
    assert run._sender.overflowed > 0 and run._sender.buffered <= 50
    server.start()
    run.finish()
    assert _stored(run.id) == sorted(logged)
    assert Run.objects.get(pk=run.id).state == "succeeded"


def _sync(path, url: str, token: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STAGEWISE_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "trainers", "sync", str(path), "--report-to", url,
                           "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_offline_run_synced_twice_and_after_a_partial_sync_stores_each_point_once(
    server, token, tmp_path
):
    from trainers import client

    logged: list = []
    spool = tmp_path / "spool"
    with client.init(mode="offline", name="cut off", spool_dir=spool) as run:
        run.stage("prose-pt")
        _train(run, range(0, 25), logged)
        run.stage("code-cpt")
        _train(run, range(25, 50), logged)
    assert run.id is None and (spool / "events.jsonl").exists()
    first = _sync(spool, server.url, token)
    assert first.returncode == 0, first.stderr
    run_id = json.loads((spool / "sync.json").read_text())["run_id"]
    assert f"run {run_id}" in first.stdout
    assert _stored(run_id) == sorted(logged)
    assert _stages(run_id) == [("prose-pt", 0, 24, "succeeded"), ("code-cpt", 24, 49, "succeeded")]
    again = _sync(spool, server.url, token)
    assert again.returncode == 0 and "already synced" in again.stdout
    # A sync cut short: it resumes from what it recorded; re-sent points are stored once.
    state = json.loads((spool / "sync.json").read_text())
    (spool / "sync.json").write_text(json.dumps({**state, "done": 2}))
    Run.objects.filter(pk=run_id).update(state="running", finished_at=None)
    partial = _sync(spool, server.url, token)
    assert partial.returncode == 0, partial.stderr
    assert _stored(run_id) == sorted(logged)
    assert Run.objects.filter(external=True).count() == 1


def test_sync_of_a_missing_or_bad_spool_is_one_line(server, token, tmp_path):
    r = _sync(tmp_path / "nothing-here", server.url, token)
    assert r.returncode == 1 and "not a Stagewise spool directory" in r.stderr
    assert "Traceback" not in r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("STAGEWISE_TOKEN", "STAGEWISE_URL")}
    r = subprocess.run([sys.executable, "-m", "trainers", "sync", str(tmp_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_unreachable_server_at_init_goes_offline(tmp_path):
    from tests.servers import free_port
    from trainers import client

    run = client.init(url=f"http://127.0.0.1:{free_port()}", token="x", spool_dir=tmp_path / "s")
    assert run.mode == "offline"
    run.log({"train/loss": 1.0}, step=1)
    run.finish()
    events = (tmp_path / "s" / "events.jsonl").read_text().splitlines()
    assert [json.loads(e).get("finish") for e in events][-1] == "succeeded"
    meta = json.loads((tmp_path / "s" / "run.json").read_text())
    assert meta["url"].startswith("http://127.0.0.1:")


def test_client_log_checks_values_and_steps_without_raising(tmp_path):
    from trainers import client

    run = client.init(mode="offline", spool_dir=tmp_path / "s")
    run.log({"a": 1.0})  # step 0
    run.log({"a": 2.0})  # step 1
    run.log({"a": "not a number"}, step=2)
    run.log({"a": math.inf}, step=3)
    run.stage("next")
    run.log({"a": 3.0}, step=0)  # before the new stage's start: dropped with a warning
    with pytest.raises(ValueError):
        run.stage("")
    run.finish()
    rows = [json.loads(line) for line in (tmp_path / "s" / "events.jsonl").read_text().splitlines()]
    points = [tuple(p[:3]) for ev in rows if "points" in ev for p in ev["points"]]
    assert points == [("a", 0, 1.0), ("a", 1, 2.0)]


# ------------------------------------------------------------------ the declaration API


def test_stage_declarations_are_checked_and_idempotent(api, queue):
    r = api.post("/api/runs/", {"external": True, "name": "ff", "config": {"x": 1}}, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert (body["free_form"], body["plan"], body["stages"], body["config"]) == (
        True,
        None,
        [],
        {"x": 1},
    )
    rid = body["id"]
    url = f"/api/runs/{rid}/stages/"
    points = {"points": [{"key": "a", "step": 1, "value": 1.0}]}
    assert api.post(f"/api/runs/{rid}/metrics/", points, format="json").status_code == 400
    assert (
        api.post(url, {"index": 1, "name": "a", "start_step": 0}, format="json").status_code == 400
    )
    assert (
        api.post(url, {"index": 0, "name": "a", "start_step": 0}, format="json").status_code == 201
    )
    assert (
        api.post(url, {"index": 0, "name": "a", "start_step": 0}, format="json").status_code == 201
    )
    r = api.post(url, {"index": 0, "name": "b", "start_step": 0}, format="json")
    assert r.status_code == 409 and "does not change" in r.json()["detail"]
    for bad in ({"index": 1, "name": "b", "start_step": 0}, {"index": "1", "name": "b"},
                {"index": 1, "name": " ", "start_step": 5}, {"index": 1, "name": "b", "start_step": -1},
                {"index": 1, "name": "b", "start_step": 2**60}, [], "x"):  # fmt: skip
        r = api.post(url, bad, format="json")
        assert r.status_code == 400, (bad, r.status_code)
    big = {"points": [{"key": "a", "step": s, "value": 1.0} for s in (5, 500)]}
    assert api.post(f"/api/runs/{rid}/metrics/", big, format="json").status_code == 200
    assert Run.objects.get(pk=rid).stage_runs.get().end_step == 500
    r = api.post(url, {"index": 1, "name": "b", "start_step": 300}, format="json")
    assert r.status_code == 201
    assert [(s["name"], s["start_step"], s["end_step"], s["state"]) for s in r.json()["stages"]] == [
        ("a", 0, 300, "succeeded"), ("b", 300, 301, "running")]  # fmt: skip
    planned = api.post("/api/runs/", {"external": True, "plan": _plan()}, format="json").json()
    r = api.post(f"/api/runs/{planned['id']}/stages/", {"index": 0, "name": "a", "start_step": 0},
                 format="json")  # fmt: skip
    assert r.status_code == 409 and "follows a plan" in r.json()["detail"]
    r = api.post("/api/runs/", {"name": "worker run", "config": {}, "queue": queue.name,
                                "plan": _plan()}, format="json")  # fmt: skip
    assert r.status_code == 400 and "config" in r.json()


def _plan() -> dict:
    from tests.runs.reduced_plan import reduced_lm_plan

    return reduced_lm_plan()


def test_every_page_and_endpoint_of_a_free_form_run_answers(api, user, queue, client):
    rid = api.post("/api/runs/", {"external": True, "name": "ff"}, format="json").json()["id"]
    url = f"/api/runs/{rid}/"
    assert api.post(url + "stages/", {"index": 0, "name": "pt", "start_step": 0},
                    format="json").status_code == 201  # fmt: skip
    pts = [{"key": k, "step": s, "value": 1.0 + s / 100} for s in range(0, 60, 5)
           for k in ("train/loss", "lr", "eval/prose/loss")]  # fmt: skip
    assert api.post(url + "metrics/", {"points": pts}, format="json").status_code == 200
    assert api.post(url + "stages/", {"index": 1, "name": "cpt", "start_step": 55},
                    format="json").status_code == 201  # fmt: skip
    more = [{**p, "step": p["step"] + 60} for p in pts]
    assert (
        api.post(url + "metrics/", {"points": more, "stage": 1}, format="json").status_code == 200
    )
    client.force_login(user)
    for path in (f"/runs/{rid}/", f"/compare/?runs={rid}", "/"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code)
    for path in ("", "series/?keys=train/loss", "export/", "checkpoints/", "analysis/"):
        r = api.get(url + path)
        assert r.status_code == 200, (path, r.status_code)
    for path in (f"/api/ui/runs/{rid}/", f"/api/ui/runs/{rid}/analysis/", "/api/ui/runs/"):
        assert api.get(path).status_code == 200, path
    analysis = api.get(url + "analysis/").json()
    assert (analysis["eval_sets"], analysis["boundaries"]) == (["prose"], [55, 115])
    page = api.get(f"/api/ui/runs/{rid}/analysis/").json()
    assert page["gap_boundaries"][0]["boundary_step"] == 55
    r = api.get(url + "lr-law/")
    assert r.status_code == 400 and "free-form" in r.json()["detail"]
    body = api.get(url).json()
    assert [(s["name"], s["start_step"], s["end_step"]) for s in body["stages"]] == [
        ("pt", 0, 55), ("cpt", 55, 115)]  # fmt: skip
    assert api.post(url + "stages/1/", {"state": "succeeded"}, format="json").status_code == 200
    assert api.get(url).json()["state"] == "succeeded"
    r = api.post(url + "stages/", {"index": 2, "name": "sft", "start_step": 200}, format="json")
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]
