import random

import pytest

from runs.selectors.analysis import analysis_get
from runs.services.ingest import IngestPoint, ingest_points
from runs.services.runs import run_submit
from tests.runs.analysis_offline import offline_analysis
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db


def _synthetic_rows(names, bounds, seed=0):
    rng = random.Random(seed)
    rows = []
    for step in range(0, bounds[-1] + 1, 5):
        for n in names:
            rows.append({"key": f"eval/{n}/loss", "step": step, "value": rng.uniform(1, 6)})
        rows.append({"key": "train/loss", "step": step, "value": rng.uniform(1, 6)})
    return rows


def test_incremental_analysis_equals_offline_functions_over_random_batches(team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    rows = _synthetic_rows(["prose", "code", "docstrings"], [40, 80, 100])
    i = 0
    rng = random.Random(1)
    while i < len(rows):
        n = rng.randint(1, 40)
        batch = rows[i : i + n]
        ingest_points(
            run_id=run.pk,
            points=[IngestPoint(r["key"], r["step"], r["value"]) for r in batch],
            publish=False,
        )
        i += n
    served = analysis_get(run=run)
    expected = offline_analysis(rows, run.plan)
    for key, value in expected.items():
        assert served[key] == value, key
    assert served["metric"] == "loss" and served["eval_sets"] == ["prose", "code", "docstrings"]
    assert len(served["stability_gaps"]) == 2 * 3


def test_analysis_api_before_any_point_has_the_shape_and_no_values(api, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    body = api.get(f"/api/runs/{run.pk}/analysis/").json()
    assert body["boundaries"] == [40, 80, 100]
    assert body["matrix"] == [[None] * 3] * 3


def test_lr_law_fit_endpoint_fits_and_refuses_too_little_data(api, team, queue):
    from trainers.analysis import lr_law_predict
    from trainers.engine import lr_preview
    from trainers.plan import validate_plan

    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    r = api.get(f"/api/runs/{run.pk}/lr-law/?stage=0")
    assert r.status_code == 400 and "at least 8" in r.json()["detail"]
    lr = [float(x) for x in lr_preview(validate_plan(run.plan))[1:]]
    true = {"L0": 2.0, "A": 1.0, "alpha": 0.4, "C": 5.0}
    steps = list(range(1, 101))
    loss = lr_law_predict(true, lr, steps)
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint("train/loss", s, v) for s, v in zip(steps, loss, strict=True)],
    )
    body = api.get(f"/api/runs/{run.pk}/lr-law/").json()
    assert body["params"]["L0"] == pytest.approx(2.0, rel=1e-3)
    assert body["warning"] is None  # 100 exact points pin the law down
    assert body["final_step"] == 100
    assert body["final_loss"] == pytest.approx(loss[-1], rel=1e-4)
    assert api.get(f"/api/runs/{run.pk}/lr-law/?stage=9").status_code == 400
    other = reduced_lm_plan()
    other["stages"][0]["schedule"]["kind"] = "cosine"
    what_if = api.post(f"/api/runs/{run.pk}/lr-law/what-if/", {"plan": other}, format="json")
    assert what_if.status_code == 200
    assert len(what_if.json()["predicted"]) == len(what_if.json()["steps"])
    bad = api.post(f"/api/runs/{run.pk}/lr-law/what-if/", {"plan": {"name": "x"}}, format="json")
    assert bad.status_code == 400


def test_loss_metrics_read_like_accuracy_metrics():
    from trainers.analysis import oriented_metrics

    # loss of task 0 rises from 1.0 to 3.0 after stage 1: that is forgetting
    m = oriented_metrics([[1.0, 5.0], [3.0, 2.0]], [6.0, 6.0], "loss")
    assert m["bwt"] == -2.0
    assert m["avg_forgetting"] == 2.0
    assert m["acc"] == 2.5
    assert m["fwt"] == 1.0  # task 1's loss fell from 6 to 5 before its own stage


def _ingest_rows(run, rows):
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint(r["key"], r["step"], r["value"]) for r in rows],
        publish=False,
    )


def test_fork_analysis_folds_in_the_shared_history_of_its_ancestors(
    team, queue, tmp_path, settings
):
    """Parent → fork at the end of stage 1 → fork of the fork at the end of stage 2: each
    stored analysis equals the offline analysis of the points its line actually has."""
    from runs.models import Checkpoint, RunAnalysis
    from runs.services.runs import run_fork

    settings.STAGEWISE_DATA_DIR = tmp_path
    names = ["prose", "code", "docstrings"]
    parent = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    parent_rows = [r for r in _synthetic_rows(names, [40, 80, 100], seed=5) if r["step"] <= 60]
    _ingest_rows(parent, parent_rows)

    def checkpoint(run, stage_index, step):
        path = tmp_path / f"ckpt-{run.pk}-{step}"
        path.mkdir()
        return Checkpoint.objects.create(
            run=run,
            stage_run=run.stage_runs.get(stage_index=stage_index),
            step=step,
            path=str(path),
            stage_end=True,
        )

    fork = run_fork(checkpoint=checkpoint(parent, 0, 40))
    # Stored at fork time from the parent's points up to step 40: stage 1's row is known.
    seeded = RunAnalysis.objects.get(run=fork).result
    shared = [r for r in parent_rows if r["step"] <= 40]
    assert seeded == {**seeded, **offline_analysis(shared, fork.plan)}
    assert seeded["matrix"][0] == [
        next(r["value"] for r in shared if r["key"] == f"eval/{n}/loss" and r["step"] == 40)
        for n in names
    ]

    fork_rows = [r for r in _synthetic_rows(names, [40, 80, 100], seed=6) if 40 < r["step"] <= 80]
    _ingest_rows(fork, fork_rows)
    assert analysis_get(run=fork) == {
        **analysis_get(run=fork),
        **offline_analysis(shared + fork_rows, fork.plan),
    }

    grandchild = run_fork(checkpoint=checkpoint(fork, 1, 80))
    own = [r for r in _synthetic_rows(names, [40, 80, 100], seed=7) if r["step"] > 80]
    _ingest_rows(grandchild, own)
    line = shared + fork_rows + own
    served = analysis_get(run=grandchild)
    assert served == {**served, **offline_analysis(line, grandchild.plan)}
    assert all(v is not None for row in served["matrix"] for v in row)
    assert len(served["stability_gaps"]) == 2 * 3


@pytest.mark.slow
def test_digits_example_gap_table_lists_only_old_tasks(team, queue, tmp_path):
    """The run page's gap table for the shipped 5-stage digits example, trained for real
    (~2 s): exactly one entry per (boundary, earlier task), 4 + 3 + 2 + 1 = 10, each either a
    drop row or counted as without a drop; never the boundary's new task or a later one."""
    import json

    from runs.selectors.analysis import run_analysis
    from runs.services.demo import EXAMPLES_DIR
    from trainers.engine import run_plan
    from trainers.plan import validate_plan
    from trainers.sinks import MemorySink

    plan = json.loads((EXAMPLES_DIR / "digits_class_incremental.json").read_text())
    sink = MemorySink()
    run_plan(validate_plan(plan, check_files=False), tmp_path, sink)
    run = run_submit(team=team, queue=queue, plan=plan)
    _ingest_rows(run, [{"key": p.key, "step": p.step, "value": p.value}
                       for p in sink.all_points if p.key.startswith("eval/")])  # fmt: skip
    body = run_analysis(run)
    tasks = [s["task"] for s in plan["stages"]]
    order = {name: k for k, name in enumerate(tasks)}
    pairs = []
    for b in body["gap_boundaries"]:
        i = b["boundary_index"]
        rows = [g["eval_set"] for g in body["gaps"] if g["boundary_index"] == i]
        assert rows == b["dropped"]
        assert b["without_drop"] == len(b["without_drop_sets"]) and b["not_measured"] == []
        covered = rows + b["without_drop_sets"]
        assert sorted(covered) == sorted(b["old_tasks"])
        assert tasks[i + 1] not in covered  # the boundary's own new task
        assert all(order[name] <= i for name in covered)  # no task not trained yet
        pairs += [(i, name) for name in covered]
    assert len(pairs) == 10 and len(set(pairs)) == 10
    assert set(pairs) == {(i, tasks[j]) for i in range(4) for j in range(i + 1)}
    assert {g["metric"] for g in body["gaps"]} <= {"acc"}  # one metric per eval set
    assert body["gaps"], "class-incremental learning without replay forgets"
    # the rows are stability_gaps' records of those pairs, as the offline analysis has them
    expected = offline_analysis(
        [{"key": p.key, "step": p.step, "value": p.value} for p in sink.all_points], plan
    )["stability_gaps"]
    old = [g for g in expected if g["eval_index"] <= g["boundary_index"]]
    drop = ("metric", "eval_set", "stage_after")
    assert [{k: v for k, v in g.items() if k not in drop} for g in body["gaps"]] == [
        g for g in old if g["dropped"]
    ]
