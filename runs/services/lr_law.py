"""LR-annealing loss law on stored runs: fit, extrapolate, and what-if for another schedule."""

from __future__ import annotations

import math

import numpy as np

from runs.models import Run
from runs.selectors.series import series_raw
from trainers.analysis import fit_lr_law, lr_law_predict
from trainers.analysis.lr_law import ALPHA_MAX, ALPHA_MIN
from trainers.engine import lr_preview
from trainers.plan import Plan, validate_plan


class LawError(ValueError):
    """Not enough data to fit, or a bad stage index (API: 400 with the reason)."""


def _lr_used(plan: Plan) -> list[float]:
    # lr_preview(plan)[s] is the LR of global step s; the law indexes lr[i] = LR at step i+1.
    return [float(x) for x in lr_preview(plan)[1:]]


def lr_law_fit(*, run: Run, stage: int | None = None) -> dict:
    """Fit the law to the run's training loss (one stage, or the whole run) and extrapolate
    to the end of that stage with the planned schedule; the band is ±2 residual RMS."""
    plan = validate_plan(run.plan, check_files=False)
    bounds = plan.stage_bounds()
    if stage is not None and not 0 <= stage < len(bounds):
        raise LawError(f"stage must be between 0 and {len(bounds) - 1}")
    lo, hi = (bounds[stage][0] + 1, bounds[stage][1]) if stage is not None else (1, bounds[-1][1])
    steps, loss = series_raw(run_id=run.pk, key="train/loss", min_step=lo, max_step=hi)
    if len(steps) < 8:
        raise LawError("need at least 8 training-loss points in the range to fit the law")
    lr = _lr_used(plan)
    try:
        params = fit_lr_law(lr, steps, loss)
    except ValueError as exc:
        raise LawError(str(exc)) from None
    grid = _grid(lo, hi)
    predicted = lr_law_predict(params, lr, grid)
    rms = math.sqrt(params["sse"] / len(steps))
    return {
        "params": params,
        "warning": _identifiability_warning(params),
        "stage": stage,
        "fitted_steps": [steps[0], steps[-1]],
        "points": len(steps),
        "rms": rms,
        "steps": grid,
        "predicted": predicted,
        "lower": [p - 2 * rms for p in predicted],
        "upper": [p + 2 * rms for p in predicted],
        "final_step": hi,
        "final_loss": predicted[-1],
    }


def _identifiability_warning(params: dict) -> str | None:
    """Say so when the data cannot pin the law down: alpha ran into its search bound, or the
    non-negative fit had to drop the floor L0 or the power-law term A."""
    at_bound = params["alpha"] <= ALPHA_MIN * 1.01 or params["alpha"] >= ALPHA_MAX * 0.99
    if at_bound or params["L0"] == 0.0 or params["A"] == 0.0:
        return (
            "the points fit, but too short or flat a stretch to pin down L0, A and α: "
            "read the extrapolation with care"
        )
    return None


def lr_law_what_if(*, run: Run, plan_data: dict, stage: int | None = None) -> dict:
    """Fit on ``run`` and predict the loss curve of another plan's schedule."""
    fit = lr_law_fit(run=run, stage=stage)
    other = validate_plan(plan_data, check_files=False)
    lr = _lr_used(other)
    grid = _grid(1, len(lr))
    return {
        "params": fit["params"],
        "steps": grid,
        "predicted": lr_law_predict(fit["params"], lr, grid),
        "lr": [lr[s - 1] for s in grid],
    }


def _grid(lo: int, hi: int, n: int = 400) -> list[int]:
    return sorted({int(x) for x in np.linspace(lo, hi, num=min(n, hi - lo + 1))})
