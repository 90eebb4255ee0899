"""Continual-learning analysis kept up to date at ingest (trainers.analysis does the maths).

Each batch touches only the run's small ContinualState row: the cost per batch does not
grow with the number of stored points.
"""

from __future__ import annotations

from runs.models import Run, RunAnalysis
from runs.selectors.dashboard import lineage_eval_points
from runs.selectors.runs import run_lineage
from trainers.analysis import ContinualState, loss_forgetting, matrix_metrics


def analysis_layout(plan: dict) -> tuple[str, list[str], list[int]]:
    """(metric, eval set names with stage j's own task at index j, stage boundaries)."""
    sets = plan.get("eval_sets") or []
    classification = any(e.get("kind") == "classification" for e in sets)
    metric = "acc" if classification else "loss"
    tasks = [s.get("task") for s in plan["stages"]]
    ordered = [t for t in tasks if t] + [e["name"] for e in sets if e["name"] not in tasks]
    bounds, end = [], 0
    for s in plan["stages"]:
        end += _stage_steps(s)
        bounds.append(end)
    return metric, ordered, bounds


def _stage_steps(stage: dict) -> int:
    if stage.get("steps"):
        return int(stage["steps"])
    per_step = int(stage.get("batch_size", 16)) * int(stage.get("seq_len", 64))
    return -(-int(stage["tokens"]) // per_step)


def _new_analysis(run: Run) -> tuple[RunAnalysis, ContinualState, bool]:
    """A fresh analysis row and state. A fork's start from its ancestors' eval points up to
    the fork step (the history it shares), so its matrix and gaps cover the whole line; the
    flag says whether any such point was folded in."""
    metric, names, bounds = analysis_layout(run.plan)
    state = ContinualState(len(names), bounds, higher_is_better=metric == "acc")
    row = RunAnalysis(run=run, metric=metric, eval_sets=names, boundaries=bounds, state={})
    inherited = False
    ancestors = run_lineage(run)[1:]
    if ancestors:
        keys = [f"eval/{name}/{metric}" for name in names]
        points = lineage_eval_points(ancestors, keys)
        series = {k: ([s for s, _ in pts], [v for _, v in pts]) for k, pts in points.items()}
        inherited = _fold(row, state, series)
    row.state = state.to_dict()
    return row, state, inherited


def _fold(row: RunAnalysis, state: ContinualState, series: dict) -> bool:
    """Feed key -> (steps, values), sorted by step, of the analysed metric into ``state``.
    Returns whether any key was one of the run's eval sets."""
    index = {f"eval/{name}/{row.metric}": j for j, name in enumerate(row.eval_sets)}
    per_set = {index[k]: pts for k, pts in series.items() if k in index}
    for j, (steps, values) in per_set.items():
        state.update(j, steps, values)
        if steps and steps[0] == 0:
            row.baseline[str(j)] = values[0]
    return bool(per_set)


def analysis_seed_fork(run: Run) -> None:
    """Store a new fork's analysis right away when its ancestors have eval points, so lists
    and comparisons show the shared history before the fork's first evaluation."""
    if not run.parent_id or not run.plan.get("stages"):
        return
    row, state, inherited = _new_analysis(run)
    if inherited:
        row.result = _result(row, state)
        row.save()


def analysis_ingest(
    *, run_id: int, series: dict[str, tuple[list[int], list[float]]]
) -> dict | None:
    """Fold a batch's eval points (key -> steps, values, sorted by step) into the run's
    analysis, inside the ingest transaction. Returns the new result when the batch changed
    it, for the live push."""
    if not any(key.startswith("eval/") for key in series):
        return None
    row = RunAnalysis.objects.select_for_update().filter(run_id=run_id).first()
    if row is None:
        run = Run.objects.select_related("fork_checkpoint").get(pk=run_id)
        if not run.plan.get("stages"):
            return None
        row, state, _ = _new_analysis(run)
    else:
        state = ContinualState.from_dict(row.state)
    if not _fold(row, state, series):
        return None
    row.state = state.to_dict()
    row.result = _result(row, state)
    row.save()
    return row.result


def _result(row: RunAnalysis, state: ContinualState) -> dict:
    snap = state.snapshot()
    T = len(row.boundaries)
    baseline = [row.baseline.get(str(j)) for j in range(T)]
    square = len(row.eval_sets) == T
    out = {
        "metric": row.metric,
        "higher_is_better": row.metric == "acc",
        "eval_sets": row.eval_sets,
        "boundaries": row.boundaries,
        "matrix": snap["matrix"],
        "baseline": baseline,
        "stability_gaps": snap["stability_gaps"],
        "exact": snap["exact"],
        "metrics": None,
        "min_acc_per_task": None,
        "avg_min_acc": None,
        "wc_acc": None,
        "loss_forgetting": None,
    }
    if square:
        out["metrics"] = oriented_metrics(snap["matrix"], baseline, row.metric)
    if row.metric == "acc":
        out.update(
            min_acc_per_task=snap["min_acc_per_task"],
            avg_min_acc=snap["avg_min_acc"],
            wc_acc=snap["wc_acc"],
        )
    else:
        out["loss_forgetting"] = loss_forgetting(snap["matrix"])
    return out


def oriented_metrics(matrix: list, baseline: list, metric: str) -> dict:
    """matrix_metrics with accuracy's reading for both metrics: for loss it runs on −L, so a
    negative BWT and a positive forgetting mean old tasks got worse; ``acc`` is then the mean
    final loss."""
    T = len(matrix)
    sign = 1.0 if metric == "acc" else -1.0

    def flip(x):
        return None if x is None else sign * x

    R = [[flip(x) for x in row[:T]] for row in matrix]
    b = [flip(x) for x in baseline] if all(x is not None for x in baseline) else None
    out = matrix_metrics(R, b)
    out["acc"] = flip(out["acc"])
    return out


def analysis_get(*, run: Run) -> dict:
    row = RunAnalysis.objects.filter(run=run).first()
    if row is None:
        row, state, _ = _new_analysis(run)
        return _result(row, state)
    return row.result
