"""Reads of a run's continual-learning analysis: the stored ``EvalState`` and the two reports
read from it (``trainers.analysis.reports``).

The state lives in ``RunAnalysis.state`` (``{"eval": EvalState.to_dict(), "inherited_points":
n}``) and is kept up to date at ingest by ``runs.services.analysis``: one ContinualState per
analysed eval metric (loss, acc) over every eval set of the run's line (a fork's ancestors'
points up to its fork step included), on the stage bounds of its StageRun rows. Reading it
costs O(stages x eval sets). Points are read only to build a state no row can serve: a run
without a stored one yet (a new fork: its ancestors' points), or stage bounds changed other
than by stages appended after every point (``line_state``).
"""

from __future__ import annotations

from typing import Any

from runs.models import Run, RunAnalysis, StageRun, StageState
from runs.selectors.eval_series import eval_point_count, lineage_eval_points
from runs.selectors.runs import run_lineage
from trainers.analysis import EvalState, boundary_report, continual_report

DONE_STAGE_STATES = {StageState.SUCCEEDED, StageState.SKIPPED}


def analysis_layout(plan: dict) -> tuple[str, list[str], list[int]]:
    """(metric, eval set names with stage j's own task at index j, stage boundaries) of the
    continual-learning metrics, from the plan."""
    sets = plan.get("eval_sets") or []
    classification = any(e.get("kind") == "classification" for e in sets)
    metric = "acc" if classification else "loss"
    stages = plan.get("stages") or []
    tasks = [s.get("task") for s in stages]
    ordered = [t for t in tasks if t] + [e["name"] for e in sets if e["name"] not in tasks]
    bounds, end = [], 0
    for s in stages:
        end += _stage_steps(s)
        bounds.append(end)
    return metric, ordered, bounds


def _stage_steps(stage: dict) -> int:
    if stage.get("steps"):
        return int(stage["steps"])
    per_step = int(stage.get("batch_size", 16)) * int(stage.get("seq_len", 64))
    return -(-int(stage["tokens"]) // per_step)


def analysis_stages(run_id: int) -> list[StageRun]:
    """The run's stage rows in order, with what the analysis reads of them."""
    qs = StageRun.objects.filter(run_id=run_id).order_by("stage_index")
    return list(qs.only("stage_index", "name", "end_step", "state"))


def stage_bounds(plan: dict, stages: list) -> list[int]:
    """The last step of every stage: the StageRun rows' (a run may declare stages as it
    goes), the plan's for a run without rows."""
    return [sr.end_step for sr in stages] if stages else analysis_layout(plan)[2]


def stored_state(row: RunAnalysis | None) -> tuple[EvalState, int] | None:
    """(state, eval points inherited from fork ancestors) of a row, or ``None`` when it holds
    none in the current format."""
    if row is None or not isinstance(row.state, dict) or "eval" not in row.state:
        return None
    try:
        return EvalState.from_dict(row.state["eval"]), int(row.state.get("inherited_points", 0))
    except (KeyError, TypeError, ValueError):
        return None


def line_state(
    run: Run, stages: list[StageRun], row: RunAnalysis | None
) -> tuple[EvalState, int, bool]:
    """(state on the run's current stage bounds, eval points inherited from ancestors,
    whether it was built from stored points): the row's state, extended when stages were
    appended since; otherwise built from the eval points of the run's line."""
    bounds = stage_bounds(run.plan, stages)
    stored = stored_state(row)
    if stored is not None:
        state = stored[0].extended(bounds)
        if state is not None:
            return state, stored[1], False
    points, inherited = line_eval_points(run_lineage(run))
    return state_from_points(bounds, points), inherited, True


def line_eval_points(
    lineage: list[tuple[int, int | None]],
) -> tuple[dict[str, list[list[float]]], int]:
    """(eval points of a run's line (``run_lineage``) by key, sorted by step; how many came
    from its fork ancestors, up to the fork steps)."""
    ancestors = lineage[1:]
    points = lineage_eval_points(ancestors) if ancestors else {}
    inherited = sum(len(p) for p in points.values())
    for key, pts in lineage_eval_points(lineage[:1]).items():
        # a fork's own steps start at its fork step: the list stays sorted, its point wins
        points.setdefault(key, []).extend(pts)
    return points, inherited


def state_from_points(bounds: list[int], points: dict[str, list[list[float]]]) -> EvalState:
    state = EvalState(bounds)
    state.update({k: ([s for s, _ in pts], [v for _, v in pts]) for k, pts in points.items()})
    return state


def continual_names(plan: dict, state: EvalState, stage_names=()) -> tuple[str, list[str]]:
    """(metric, eval sets with stage j's own task at index j): the plan's; for a run
    without planned eval sets (free-form), the ones it logged, stage j's task being the set
    whose name its name contains ("prose" for "prose-pt"), the others after them."""
    metric, names, _ = analysis_layout(plan)
    if names:
        return metric, names
    metric = "acc" if state.names("acc") else "loss"
    logged, own = state.names(metric), []
    for task in stage_tasks(stage_names, logged):
        if task is None:
            break  # stage j's task must stand at index j
        own.append(task)
    return metric, own + [n for n in logged if n not in own]


def stage_tasks(stage_names, logged: list[str]) -> list[str | None]:
    """Per stage, the logged eval set its name contains (the longest; each set once), for
    runs whose plan names no task: "prose-pt" learns "prose"."""
    tasks: list[str | None] = []
    for stage in stage_names:
        free = [n for n in logged if n in stage and n not in tasks]
        tasks.append(max(free, key=len) if free else None)
    return tasks


def continual_result(plan: dict, state: EvalState, stage_names=()) -> dict[str, Any]:
    """GET /api/runs/{id}/analysis/: the plan's metric, eval set j = the task of stage j."""
    return continual_report(state, *continual_names(plan, state, stage_names))


def page_result(
    run: Run, stages: list[StageRun], state: EvalState, inherited: int
) -> dict[str, Any]:
    """GET /api/ui/runs/{id}/analysis/ (and the live push's ``run_analysis``): the stability
    gaps of old tasks per stage boundary (``gaps`` rows, ``gap_boundaries`` with per boundary
    the old tasks looked at, those without a drop and those not measured yet) and per metric
    the eval-set x stage-end matrix (``matrices``: finished stages; ``boundary_matrices``:
    every stage end). A run without stage rows has none of these."""
    out: dict[str, Any] = {"run": run.pk, "boundaries": [], "gaps": [], "gap_boundaries": [],
                           "matrices": [], "boundary_matrices": []}  # fmt: skip
    if stages:
        plan_stages = run.plan.get("stages") or []
        kinds = {e.get("name"): e.get("kind", "lm") for e in run.plan.get("eval_sets") or []}
        tasks = [(plan_stages[sr.stage_index].get("task") if sr.stage_index < len(plan_stages)
                  else None) for sr in stages]  # fmt: skip
        if not plan_stages:  # stages declared as they happen: named after their tasks
            logged = sorted({n for m in ("loss", "acc") for n in state.names(m)})
            tasks = stage_tasks([sr.name for sr in stages], logged)
        report = boundary_report(
            state,
            stage_names=[sr.name for sr in stages],
            done=[sr.state in DONE_STAGE_STATES for sr in stages],
            kinds=kinds,
            tasks=tasks,
        )
        out.update(report)
    out["eval_points"] = inherited + eval_point_count(run.pk)
    return out


def analysis_get(*, run: Run) -> dict[str, Any]:
    """The run's continual-learning analysis (GET /api/runs/{id}/analysis/): the stored
    result, or one read from the state on stage bounds that changed since it was stored."""
    row = RunAnalysis.objects.filter(run=run).first()
    stages = analysis_stages(run.pk)
    if row is not None and row.result and row.boundaries == stage_bounds(run.plan, stages):
        return row.result
    state, _, _ = line_state(run, stages, row)
    return continual_result(run.plan, state, [sr.name for sr in stages])


def run_analysis(run: Run) -> dict[str, Any]:
    """The run page's stability gaps and matrices (``page_result``), from the stored state."""
    stages = analysis_stages(run.pk)
    state, inherited, _ = line_state(run, stages, RunAnalysis.objects.filter(run=run).first())
    return page_result(run, stages, state, inherited)
