"""runs.services.lr_law: per-stage and whole-run fits, the identifiability warning both ways,
and what-if / fits computed on bounded grids whatever the budget."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from runs.services.ingest import IngestPoint, ingest_points
from runs.services.lr_law import LawError, lr_law_fit, lr_law_what_if
from tests.runs.reduced_plan import reduced_lm_plan
from trainers.analysis import lr_law_predict
from trainers.analysis.lr_law import plan_lr_curve
from trainers.plan import PlanLimits, validate_plan

pytestmark = pytest.mark.django_db

BIG = PlanLimits(max_stage_steps=10**13, max_total_steps=10**13)
LAW = {"L0": 2.0, "A": 1.0, "alpha": 0.4, "C": 5.0, "lam": 0.999}


def _run(team, queue, plan=None):
    return team.runs.create(name="r", plan=plan or reduced_lm_plan(), queue=queue,
                            state="running")  # fmt: skip


def _ingest(run, steps, values):
    # one batch per run: ingest's temp tables are emptied at COMMIT, which these tests never reach
    ingest_points(
        run_id=run.pk,
        points=[
            IngestPoint("train/loss", int(s), float(v)) for s, v in zip(steps, values, strict=True)
        ],
        publish=False,
    )


def _law_loss(plan: dict, steps) -> list[float]:
    p = validate_plan(plan, check_files=False, limits=BIG)
    nodes, lr = plan_lr_curve(p, include=steps)
    return lr_law_predict(LAW, lr, list(steps), nodes=nodes)


def test_stage_and_whole_run_fits(team, queue):
    run = _run(team, queue)
    steps = list(range(1, 101))
    _ingest(run, steps, _law_loss(run.plan, steps))
    whole = lr_law_fit(run=run, stage="all")
    assert whole == lr_law_fit(run=run)  # leaving the stage out means the whole run too
    assert whole["stage"] is None and whole["final_step"] == 100
    for k in ("L0", "A", "alpha", "C"):
        assert whole["params"][k] == pytest.approx(LAW[k], rel=1e-3), k
    assert whole["params"]["lam"] == LAW["lam"]
    assert whole["warning"] is None and whole["undetermined"] == []
    # a fit of stage 1 alone (steps 41..80, warm-up 5 steps left out)
    one = lr_law_fit(run=run, stage=1)
    assert one["stage"] == 1 and one["fitted_steps"] == [46, 80] and one["final_step"] == 80
    assert one["params"]["L0"] == pytest.approx(2.0, rel=1e-2)
    for bad in (3, "9", "x", -1):
        with pytest.raises(LawError):
            lr_law_fit(run=run, stage=bad)


def test_warning_only_when_the_data_cannot_pin_the_law_down(team, queue):
    exact = _run(team, queue)
    steps = list(range(1, 41))
    _ingest(exact, steps, _law_loss(exact.plan, steps))
    assert lr_law_fit(run=exact, stage=0)["warning"] is None
    flat = _run(team, queue)
    noise = np.random.default_rng(0).normal(0, 0.05, size=40)
    _ingest(flat, steps, 3.0 + noise)
    fit = lr_law_fit(run=flat, stage=0)
    assert fit["undetermined"] and "cannot pin the law down" in fit["warning"]


def test_warning_when_the_decay_is_still_ahead(team, queue):
    """Stage 0 is WSD (decay from step 32 of 40): fitted on the plateau only, the annealing
    term is unknown and the extrapolated drop cannot come from the data."""
    run = _run(team, queue)
    steps = list(range(1, 31))
    _ingest(run, steps, _law_loss(run.plan, steps))
    fit = lr_law_fit(run=run, stage=0)
    assert fit["final_step"] == 40
    assert len(fit["undetermined"]) == 1 and "not decreased yet" in fit["undetermined"][0]
    assert fit["warning"]


def _huge(steps: int) -> dict:
    plan = reduced_lm_plan()
    plan["stages"][0]["steps"] = steps
    return plan


def test_what_if_and_fit_of_a_1e12_step_plan_are_bounded(api, team, queue, settings):
    settings.STAGEWISE_PLAN_LIMITS = {**settings.STAGEWISE_PLAN_LIMITS,
                                      "max_stage_steps": 10**13, "max_total_steps": 10**13}  # fmt: skip
    run = _run(team, queue)
    steps = list(range(1, 101))
    _ingest(run, steps, _law_loss(run.plan, steps))
    tracemalloc.start()
    t = time.perf_counter()
    try:
        out = lr_law_what_if(run=run, plan_data=_huge(10**12), stage="all")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t < 10
    assert peak < 50e6, peak
    assert len(out["steps"]) == len(out["predicted"]) == len(out["lr"]) <= 400
    assert out["steps"][-1] == 10**12 + 60
    assert all(p is not None for p in out["predicted"])
    r = api.post(f"/api/runs/{run.pk}/lr-law/what-if/", {"plan": _huge(10**12)}, format="json")
    assert r.status_code == 200, r.json()
    # the run's own plan may be that large too: a fit reads only its points' steps
    big = _run(team, queue, plan=_huge(10**12))
    _ingest(big, steps, _law_loss(big.plan, steps))
    tracemalloc.start()
    try:
        fit = lr_law_fit(run=big, stage=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6 and fit["final_step"] == 10**12 and len(fit["steps"]) <= 400
