"""Continual-learning analysis in the UI: the panels' containers render, and the endpoints the
panels read answer with the fields their JS uses (analysis, LR-law fit, what-if, list columns)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from runs.services.ingest import IngestPoint, ingest_points
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = [pytest.mark.django_db]

SETS = ("prose", "code", "docstrings")
BOUNDS = (0, 40, 80, 100)


@pytest.fixture
def c(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _run(team, queue, state="running", name="cl <i>run</i>"):
    from django.utils import timezone

    done = timezone.now() if state in ("succeeded", "failed", "canceled") else None
    return team.runs.create(
        name=name, plan=reduced_lm_plan(), queue=queue, state=state, finished_at=done
    )


def _ingest(run, points):
    # Note: ingest's per-connection temp tables are emptied at COMMIT, which a django_db test
    # never reaches, so these tests send one batch per run.
    ingest_points(run_id=run.pk, points=points, publish=False)


def _evals_at_stage_ends(run):
    """Eval loss of each set at step 0 and each stage end: a set improves while its own stage
    trains and gets worse afterwards (forgetting)."""
    pts = []
    for i, step in enumerate(BOUNDS):
        for j, name in enumerate(SETS):
            value = 5.0 - (1.0 if i == j + 1 else 0.0) + 0.3 * max(0, i - j - 1)
            pts.append(IngestPoint(f"eval/{name}/loss", step, value))
    _ingest(run, pts)


def _train_loss(run, steps):
    from trainers.analysis import lr_law_predict
    from trainers.engine import lr_preview
    from trainers.plan import validate_plan

    lr = [float(x) for x in lr_preview(validate_plan(run.plan))[1:]]
    law = {"L0": 2.0, "A": 1.0, "alpha": 0.4, "C": 5.0}
    loss = lr_law_predict(law, lr, list(steps))
    _ingest(run, [IngestPoint("train/loss", s, v) for s, v in zip(steps, loss, strict=True)])


def test_run_page_renders_the_analysis_and_lr_law_panels(c, team, queue):
    run = _run(team, queue)
    body = c.get(f"/runs/{run.pk}/").content.decode()
    for marker in ['id="analysis-panel"', 'data-role="cards"', 'data-role="inexact"',
                   'data-role="loss-forgetting"', 'id="lr-law-panel"', 'id="lr-law-stage"',
                   'id="chart-lr-law"', 'id="lr-law-params"', 'id="lr-law-message"',
                   'id="chart-matrix"']:  # fmt: skip
        assert marker in body, marker
    assert "<script>" not in body.replace('<script type="module"', "")  # no inline blobs


def test_list_compare_and_editor_pages_have_the_new_columns_and_boxes(c, team, queue):
    runs = c.get("/").content.decode()
    assert all(f">{col}</th>" in runs for col in ("BWT", "FWT", "Avg forg."))
    assert 'id="cl-table"' in c.get("/compare/").content.decode()
    editor = c.get("/pipelines/new/").content.decode()
    for marker in ['id="whatif-panel"', 'id="whatif-run"', 'id="whatif-predict"',
                   'id="whatif-errors"', 'id="chart-whatif"']:  # fmt: skip
        assert marker in editor, marker


def _page_data(html: str) -> dict:
    m = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_whatif_select_lists_only_running_or_finished_runs_of_my_teams(c, team, queue):
    running = _run(team, queue, "running", "r1")
    done = _run(team, queue, "succeeded", "d1")
    _run(team, queue, "queued", "q1")
    other = f.TeamFactory()
    _run(other, queue, "succeeded", "theirs")
    data = _page_data(c.get("/pipelines/new/").content.decode())
    assert {r["id"] for r in data["whatif_runs"]} == {running.pk, done.pk}
    assert {"id", "name", "state"} <= set(data["whatif_runs"][0])


def test_analysis_endpoint_has_what_the_panel_draws(c, team, queue):
    run = _run(team, queue)
    empty = c.get(f"/api/runs/{run.pk}/analysis/").json()
    assert empty["metrics"] is None or empty["metrics"]["bwt"] is None
    _evals_at_stage_ends(run)
    a = c.get(f"/api/runs/{run.pk}/analysis/").json()
    assert a["metric"] == "loss" and a["eval_sets"] == list(SETS) and a["exact"] is True
    m = a["metrics"]
    # L[i][j] = 5 - [i == j] + 0.3 * max(0, i - j): old losses rose by (1.6 + 1.3) / 2, which
    # reads as BWT -1.45 (loss metrics use accuracy's signs: negative = forgetting)
    assert m["bwt"] == pytest.approx(-1.45)
    assert m["fwt"] is not None and m["avg_forgetting"] is not None
    assert len(a["loss_forgetting"]) == 3 and a["loss_forgetting"][0] == [None] * 3
    assert a["wc_acc"] is None  # accuracy-only fields stay null on a loss run


def test_runs_list_rows_and_run_detail_carry_bwt_fwt_forgetting(c, team, queue):
    run = _run(team, queue)
    before = c.get("/api/ui/runs/").json()["results"][0]
    assert before["analysis"] is None
    _evals_at_stage_ends(run)
    row = c.get("/api/ui/runs/").json()["results"][0]
    full = c.get(f"/api/runs/{run.pk}/analysis/").json()["metrics"]
    assert row["analysis"]["metric"] == "loss"
    for k in ("acc", "bwt", "fwt", "avg_forgetting"):
        assert row["analysis"][k] == pytest.approx(full[k])
    detail = c.get(f"/api/runs/{run.pk}/").json()  # what the compare page reads
    assert detail["analysis"]["bwt"] == pytest.approx(full["bwt"])


def test_runs_list_analysis_costs_one_query_per_page(c, team, queue, django_assert_max_num_queries):
    for i in range(3):
        _evals_at_stage_ends(_run(team, queue, name=f"r{i}"))
    c.get("/api/ui/runs/")  # warm the session / content types
    with django_assert_max_num_queries(12):
        rows = c.get("/api/ui/runs/").json()["results"]
    assert all(r["analysis"]["bwt"] is not None for r in rows)


def test_lr_law_panel_reads_a_stage_fit_and_its_observed_loss(c, team, queue):
    # one ingest batch per run: see the note on _ingest
    early = _run(team, queue, name="early")
    _train_loss(early, range(1, 6))
    short = c.get(f"/api/runs/{early.pk}/lr-law/?stage=0")
    assert short.status_code == 400
    assert isinstance(short.json()["detail"], str)  # shown as the panel's message
    run = _run(team, queue)
    _train_loss(run, range(1, 31))  # stage 0 (steps 1..40) is running: 30 points so far
    fit = c.get(f"/api/runs/{run.pk}/lr-law/?stage=0").json()
    # stage 0 warms up over 5 steps: the fit leaves those points out and says so
    assert fit["stage"] == 0 and fit["fitted_steps"] == [6, 30] and fit["final_step"] == 40
    assert fit["points"] == 25
    n = len(fit["steps"])
    assert n > 10 and len(fit["predicted"]) == len(fit["lower"]) == len(fit["upper"]) == n
    assert fit["steps"][-1] == 40  # the extrapolation reaches the stage end
    assert all(lo <= p <= hi for lo, p, hi in zip(fit["lower"], fit["predicted"], fit["upper"],
                                                  strict=True))  # fmt: skip
    assert {"L0", "A", "alpha", "C", "lam"} <= set(fit["params"])  # lawParams draws these
    assert "warning" in fit and isinstance(fit["undetermined"], list)
    obs = c.get(
        f"/api/runs/{run.pk}/series/?keys=train/loss&min_step=1&max_step=40&max_points=1000"
    )
    assert obs.json()["series"]["train/loss"]["steps"] == list(range(1, 31))


def test_what_if_answers_a_curve_or_errors_the_editor_can_show(c, team, queue):
    run = _run(team, queue, "succeeded")
    plan = reduced_lm_plan()
    url = f"/api/runs/{run.pk}/lr-law/what-if/"
    none = c.post(url, {"plan": plan}, content_type="application/json")
    assert none.status_code == 400 and "at least 8" in none.json()["detail"]
    _train_loss(run, range(1, 101))
    plan["stages"][0]["schedule"]["kind"] = "cosine"
    ok = c.post(url, {"plan": plan}, content_type="application/json").json()
    assert len(ok["steps"]) == len(ok["predicted"]) == len(ok["lr"]) > 10
    bad = json.loads(json.dumps(plan))
    bad["stages"][1]["steps"] = -5
    resp = c.post(url, {"plan": bad}, content_type="application/json")
    assert resp.status_code == 400
    assert any(k.startswith("stages.1") for k in json.dumps(resp.json()).split('"')), resp.json()


def test_lr_law_panel_can_fit_the_whole_run(c, team, queue):
    run = _run(team, queue)
    _train_loss(run, range(1, 101))
    whole = c.get(f"/api/runs/{run.pk}/lr-law/?stage=all").json()
    assert whole["stage"] is None and whole["final_step"] == 100  # what the panel's option asks
    assert whole["steps"][0] == 1 and whole["steps"][-1] == 100
    assert c.get(f"/api/runs/{run.pk}/lr-law/").json()["params"] == whole["params"]
    bad = c.get(f"/api/runs/{run.pk}/lr-law/?stage=everything")
    assert bad.status_code == 400


def test_run_page_gap_table_reads_rows_and_folded_counts(c, team, queue):
    """The gap table's endpoint: drop rows for old tasks only, and per boundary the count of
    old tasks without a drop (the page prints "1 task without a drop" instead of rows)."""
    from runs.services.runs import run_submit

    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    values = {  # eval loss; stage bounds 40, 80, 100; tasks prose, code, docstrings
        "prose": {0: 6.0, 40: 3.0, 50: 3.5, 60: 3.0, 80: 3.0, 90: 3.0, 100: 3.0},
        "code": {0: 6.0, 40: 5.0, 50: 4.0, 80: 3.0, 90: 3.2, 100: 3.1},
        "docstrings": {0: 6.0, 40: 5.5, 50: 6.0, 80: 5.0, 90: 4.0, 100: 3.5},
    }
    _ingest(run, [IngestPoint(f"eval/{n}/loss", s, v) for n, pts in values.items()
                  for s, v in pts.items()])  # fmt: skip
    body = c.get(f"/api/ui/runs/{run.pk}/analysis/").json()
    rows = [(g["boundary_step"], g["eval_set"], g["metric"]) for g in body["gaps"]]
    assert rows == [(40, "prose", "loss"), (80, "code", "loss")]
    assert all(g["dropped"] and g["stage_after"] for g in body["gaps"])
    b0, b1 = body["gap_boundaries"]
    assert (b0["boundary_step"], b0["stage_after"], b0["old_tasks"]) == (40, "code-cpt", ["prose"])
    assert (b0["without_drop"], b0["not_measured"]) == (0, [])
    assert b1["old_tasks"] == ["code", "prose"] and b1["dropped"] == ["code"]
    assert (b1["without_drop"], b1["without_drop_sets"]) == (1, ["prose"])
