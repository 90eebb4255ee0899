"""The analysis on real curves: the shipped examples trained for real with the engine on CPU.

* LR law: the 3-stage demo (trainers/examples/lm_prose_code_sft.json). Stages 0 and 1 are
  trained as shipped (~1000 tiny-model steps); stage 2 is left out, nothing here reads it.
  A second run trains stage 0 with a cosine schedule of the same peak LR for the what-if.
* Gap table: the 5-stage digits example (trainers/examples/digits_class_incremental.json).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from trainers.analysis import fit_lr_law, lr_law_predict, old_task_gap_table, old_tasks
from trainers.analysis.lr_law import ALPHA_MAX, ALPHA_MIN, plan_lr_curve
from trainers.engine import run_stage
from trainers.plan import validate_plan
from trainers.sinks import MemorySink

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[3] / "trainers" / "examples"


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def _train(plan_data: dict, out: Path, stages) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    plan = validate_plan(plan_data, check_files=False)
    sink = MemorySink()
    for i in stages:
        run_stage(plan, i, out, sink)
    series: dict[str, list] = {}
    for p in sink.all_points:
        series.setdefault(p.key, []).append((p.step, p.value))
    return {k: tuple(np.array(v).T) for k, v in series.items()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    plan = _example("lm_prose_code_sft.json")
    return plan, _train(plan, tmp_path_factory.mktemp("demo"), [0, 1])


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory):
    """Stage 0 of the demo with a cosine schedule: same peak LR, warm-up, floor and budget."""
    plan = _example("lm_prose_code_sft.json")
    plan["stages"] = plan["stages"][:1]
    wsd = plan["stages"][0]["schedule"]
    plan["stages"][0]["schedule"] = {"kind": "cosine", "warmup_steps": wsd["warmup_steps"],
                                     "min_lr": wsd["min_lr"]}  # fmt: skip
    return plan, _train(plan, tmp_path_factory.mktemp("cosine"), [0])


def _stage_fit(plan_data: dict, series, stage: int) -> dict:
    """What runs.services.lr_law does: the run's LR on a bounded grid with the stage's
    logged steps as nodes, global areas, the stage's training-loss points."""
    plan = validate_plan(plan_data, check_files=False)
    lo, hi = plan.stage_bounds()[stage]
    steps, loss = series["train/loss"]
    keep = (steps > lo) & (steps <= hi)
    steps, loss = steps[keep].astype(int), loss[keep]
    nodes, lr = plan_lr_curve(plan, include=steps)
    return fit_lr_law(lr, steps, loss, nodes=nodes)


@pytest.mark.parametrize("stage", [0, 1])
def test_demo_stage_fits_are_physical(demo, stage):
    plan, series = demo
    fit = _stage_fit(plan, series, stage)
    assert fit["L0"] > 0 and fit["A"] > 0 and fit["C"] >= 0, fit
    assert ALPHA_MIN < fit["alpha"] < ALPHA_MAX, fit
    assert fit["annealing_in_fit"] is True  # both stages end with a WSD decay
    if stage == 0:
        assert fit["undetermined"] == [], fit["undetermined"]
    # the fit follows the stage: the predicted mean of its last 20 steps is within 3 %
    steps, loss = series["train/loss"]
    end = validate_plan(plan, check_files=False).stage_bounds()[stage][1]
    last = (steps > end - 20) & (steps <= end)
    nodes, lr = plan_lr_curve(validate_plan(plan, check_files=False), include=steps[last])
    pred = np.mean(lr_law_predict(fit, lr, steps[last].astype(int), nodes=nodes))
    assert abs(pred - loss[last].mean()) < 0.03 * loss[last].mean()


def test_what_if_cosine_from_the_wsd_stage_matches_the_cosine_run(demo, cosine_run):
    plan, series = demo
    fit = _stage_fit(plan, series, 0)
    cos_plan, cos_series = cosine_run
    cos = validate_plan(cos_plan, check_files=False)
    end = cos.stage_bounds()[0][1]
    last = np.arange(end - 19, end + 1)
    nodes, lr = plan_lr_curve(cos, include=last)  # the what-if's bounded grid
    predicted = float(np.mean(lr_law_predict(fit, lr, last, nodes=nodes)))
    steps, loss = cos_series["train/loss"]
    observed = float(loss[np.isin(steps, last)].mean())
    assert abs(predicted - observed) < 0.03 * observed, (predicted, observed)
    # the two schedules really end apart, so this is a prediction, not a coincidence
    wsd_steps, wsd_loss = series["train/loss"]
    wsd_end = float(wsd_loss[np.isin(wsd_steps, last)].mean())
    assert abs(wsd_end - observed) > 0.03 * observed


def test_digits_gap_table_has_one_entry_per_boundary_and_earlier_task(tmp_path):
    plan = _example("digits_class_incremental.json")
    T = len(plan["stages"])
    series = _train(plan, tmp_path, range(T))
    names = [e["name"] for e in plan["eval_sets"]]
    tasks = [s.get("task") for s in plan["stages"]]
    acc = [np.column_stack(series[f"eval/{n}/acc"]) for n in names]
    bounds = validate_plan(plan, check_files=False).stage_bounds()
    boundaries = [end for _, end in bounds]
    old = old_tasks(tasks, names, acc, boundaries)
    table = old_task_gap_table(acc, boundaries, old, higher_is_better=True)
    pairs = []
    for e in table:
        i = e["boundary_index"]
        rows = [r["eval_index"] for r in e["rows"]]
        covered = rows + e["without_drop"] + e["not_measured"]
        assert len(covered) == len(set(covered))  # a pair is a row or counted, never both
        assert e["not_measured"] == []  # every task is evaluated throughout
        new_task = names.index(tasks[i + 1])
        assert new_task not in covered  # never the boundary's own new task ...
        assert all(j <= i for j in covered)  # ... nor a task not trained yet
        pairs += [(i, names[j]) for j in covered]
    assert len(pairs) == 4 + 3 + 2 + 1
    assert sorted(pairs) == sorted((i, names[j]) for i in range(T - 1) for j in range(i + 1))
    # class-incremental learning without replay forgets: the old tasks drop
    assert sum(len(e["rows"]) for e in table) > 0
    json.dumps(copy.deepcopy(table), allow_nan=False)
