"""Continual-learning analysis kept up to date at ingest (trainers.analysis does the maths).

A run's ``RunAnalysis`` row holds its ``EvalState`` (every analysed eval series of its fork
line, see ``runs.selectors.analysis``) and the API's result. Each batch with eval points
locks the row, folds the batch in, stores both and returns the two reports for the live push
(the continual metrics and the run page's gaps and matrices): the cost per batch is
O(stages x eval sets), whatever the number of stored points. Points are read only when no
stored state can serve (``line_state``): a run's first eval batch or a new fork (its
ancestors' points up to the fork step), or stage bounds changed other than by appending.
"""

from __future__ import annotations

from runs.models import Run, RunAnalysis
from runs.selectors.analysis import (
    analysis_stages,
    continual_names,
    line_state,
    page_result,
    stage_bounds,
)
from trainers.analysis import EvalState, continual_report, eval_key


def analysis_fields(plan: dict, state: EvalState, inherited: int, stage_names=()) -> dict:
    """The stored fields of a run's analysis row for ``state`` (``stage_names``: the run's
    stages, in order; they name the tasks of a run without planned eval sets)."""
    metric, names = continual_names(plan, state, stage_names)
    base = state.baseline.get(metric, {})
    return {
        "metric": metric,
        "eval_sets": names,
        "boundaries": list(state.boundaries),
        "baseline": {str(j): base[n] for j, n in enumerate(names) if n in base},
        "state": {"eval": state.to_dict(), "inherited_points": inherited},
        "result": continual_report(state, metric, names),
    }


def _store(row: RunAnalysis, plan: dict, state: EvalState, inherited: int, stages) -> None:
    names = [sr.name for sr in stages]
    for field, value in analysis_fields(plan, state, inherited, names).items():
        setattr(row, field, value)
    row.save()


def analysis_seed_fork(run: Run) -> None:
    """Store a new fork's analysis right away when its ancestors have eval points, so lists
    and comparisons show the shared history before the fork's first evaluation."""
    if not run.parent_id:
        return
    stages = analysis_stages(run.pk)
    if not stage_bounds(run.plan, stages):
        return
    state, inherited, _ = line_state(run, stages, None)
    if state.has_points():
        _store(RunAnalysis(run=run), run.plan, state, inherited, stages)


def analysis_ingest(
    *, run_id: int, series: dict[str, tuple[list[int], list[float]]]
) -> dict | None:
    """Fold a batch's eval points (key -> steps, values, sorted by step) into the run's
    analysis, inside the ingest transaction (the batch is stored already). Returns the live
    push's part when the batch had analysed eval points: ``analysis`` (the continual
    metrics, as GET /api/runs/{id}/analysis/) and ``run_analysis`` (the run page's gaps and
    matrices, as GET /api/ui/runs/{id}/analysis/)."""
    if not any(eval_key(key) for key in series):
        return None
    row = (
        RunAnalysis.objects.select_for_update(of=("self",))
        .select_related("run__fork_checkpoint")
        .filter(run_id=run_id)
        .first()
    )
    run = row.run if row else Run.objects.select_related("fork_checkpoint").get(pk=run_id)
    stages = analysis_stages(run_id)
    if not stage_bounds(run.plan, stages):
        return None
    state, inherited, rebuilt = line_state(run, stages, row)
    if not rebuilt:  # a state built from the stored points has this batch already
        state.update(series)
    row = row or RunAnalysis(run=run)
    _store(row, run.plan, state, inherited, stages)
    return {"analysis": row.result, "run_analysis": page_result(run, stages, state, inherited)}
