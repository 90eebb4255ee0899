"""LR-annealing loss law on stored runs: fit, extrapolate, and what-if for another schedule.

The maths is ``trainers.analysis.lr_law`` (warm-up handling, the fitted lam and the
identifiability test are explained there). Everything here is computed on a bounded grid:
a plan's LR is evaluated at ``plan_lr_curve``'s nodes (a few thousand steps, plus the fitted
and the drawn steps), never per step, so a plan of 10^12 steps costs what one of 10^3 does.
"""

from __future__ import annotations

import math

import numpy as np

from runs.models import Run
from runs.selectors.series import series_raw
from runs.services.plans import plan_limits
from trainers.analysis import fit_lr_law, lr_law_predict
from trainers.analysis.lr_law import plan_lr_curve
from trainers.plan import Plan, PlanError, validate_plan

WHOLE_RUN = "all"
MAX_FIT_POINTS = 5000  # evenly thinned beyond this: the fit's cost stays bounded
DRAWN_POINTS = 400


class LawError(ValueError):
    """Not enough data to fit, or a bad stage index (API: 400 with the reason)."""


def _plan(data: dict, what: str) -> Plan:
    try:
        return validate_plan(data, check_files=False, limits=plan_limits())
    except PlanError as exc:
        first = exc.errors[0] if exc.errors else {"path": "(root)", "message": "invalid"}
        raise LawError(f"{what}: {first['path']}: {first['message']}") from None


def _range(plan: Plan, stage: int | str | None) -> tuple[int, int, int | None]:
    """(first, last step, stage index or None for the whole run)."""
    bounds = plan.stage_bounds()
    if stage is None or stage == WHOLE_RUN:
        return 1, bounds[-1][1], None
    if isinstance(stage, str):
        if not stage.isdigit():
            raise LawError(f"stage must be a stage index or {WHOLE_RUN!r}")
        stage = int(stage)
    if not 0 <= stage < len(bounds):
        raise LawError(f"stage must be between 0 and {len(bounds) - 1}, or {WHOLE_RUN!r}")
    return bounds[stage][0] + 1, bounds[stage][1], stage


def _thin(steps: list[int], loss: list[float]) -> tuple[list[int], list[float]]:
    if len(steps) <= MAX_FIT_POINTS:
        return steps, loss
    keep = np.unique(np.round(np.linspace(0, len(steps) - 1, MAX_FIT_POINTS)).astype(int))
    return [steps[k] for k in keep], [loss[k] for k in keep]


def lr_law_fit(*, run: Run, stage: int | str | None = None) -> dict:
    """Fit the law to the run's training loss, on one stage or on the whole run (``stage``
    None or ``"all"``), and extrapolate to the end of that range with the planned schedule;
    the band is ±2 residual RMS. ``warning`` is set only when the data cannot pin the law
    down (``undetermined``), or when the LR has not decreased yet over the fitted steps but
    does before the end of the range (the annealing term is then a guess)."""
    if run.free_form:
        raise LawError(
            f"run {run.pk} is free-form (logged without a plan): the law extrapolates the "
            "planned LR schedule, so it needs a run logged with plan="
        )
    plan = _plan(run.plan, "the run's plan")
    lo, hi, index = _range(plan, stage)
    steps, loss = series_raw(run_id=run.pk, key="train/loss", min_step=lo, max_step=hi)
    if len(steps) < 8:
        raise LawError("need at least 8 training-loss points in the range to fit the law")
    steps, loss = _thin(steps, loss)
    grid = _grid(lo, hi)
    nodes, lr = plan_lr_curve(plan, include=[*steps, *grid])
    try:
        fit = fit_lr_law(lr, steps, loss, nodes=nodes)
    except ValueError as exc:
        raise LawError(str(exc)) from None
    params = {k: fit[k] for k in ("L0", "A", "alpha", "C", "lam", "sse")}
    predicted = lr_law_predict(fit, lr, grid, nodes=nodes)
    fitted = _fitted_steps(nodes, lr, steps, loss)
    rms = math.sqrt(fit["sse"] / fit["points"])
    reasons = list(fit["undetermined"])
    if not fit["annealing_in_fit"] and _decays_after(nodes, lr, fitted[-1], hi):
        reasons.append(
            "the LR has not decreased yet over the fitted steps, so the annealing term C is "
            "unknown and the predicted drop during the coming decay is a guess"
        )
    return {
        "params": params,
        "se": fit["se"],
        "undetermined": reasons,
        "warning": _warning(reasons),
        "stage": index,
        "fitted_steps": [fitted[0], fitted[-1]],
        "points": fit["points"],
        "rms": rms,
        "steps": grid,
        "predicted": predicted,
        "lower": [None if p is None else p - 2 * rms for p in predicted],
        "upper": [None if p is None else p + 2 * rms for p in predicted],
        "final_step": hi,
        "final_loss": predicted[-1],
    }


def _fitted_steps(nodes: np.ndarray, lr: np.ndarray, steps: list[int], loss: list[float]):
    """The steps the fit used: finite loss, not warm-up (the LR did not rise into the step's
    node; the rule of trainers.analysis.lr_law)."""
    idx = np.searchsorted(nodes, steps)
    prev = np.where(idx > 0, lr[idx - 1], 0.0)
    keep = (lr[idx] <= prev) & np.isfinite(np.asarray(loss, dtype=float))
    return [int(s) for s in np.asarray(steps)[keep]]


def _decays_after(nodes: np.ndarray, lr: np.ndarray, last: int, hi: int) -> bool:
    ahead = lr[(nodes >= last) & (nodes <= hi)]
    return bool(ahead.size > 1 and np.any(np.diff(ahead) < 0))


def _warning(reasons: list[str]) -> str | None:
    if not reasons:
        return None
    return (
        "the points fit, but they cannot pin the law down ("
        + "; ".join(reasons)
        + "): read the extrapolation with care"
    )


def lr_law_what_if(*, run: Run, plan_data: dict, stage: int | str | None = None) -> dict:
    """Fit on ``run`` (one stage or the whole run) and predict the loss curve of another
    plan's schedule, on a grid of at most DRAWN_POINTS steps whatever its budget."""
    fit = lr_law_fit(run=run, stage=stage)
    other = _plan(plan_data, "the plan")
    grid = _grid(1, other.stage_bounds()[-1][1])
    nodes, lr = plan_lr_curve(other, include=grid)
    at_grid = lr[np.searchsorted(nodes, grid)]
    return {
        "params": fit["params"],
        "warning": fit["warning"],
        "steps": grid,
        "predicted": lr_law_predict(fit["params"], lr, grid, nodes=nodes),
        "lr": [float(x) for x in at_grid],
    }


def _grid(lo: int, hi: int, n: int = DRAWN_POINTS) -> list[int]:
    return sorted({int(x) for x in np.linspace(lo, hi, num=min(n, hi - lo + 1))})
