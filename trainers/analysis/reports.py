"""The two reports read from an ``EvalState`` (what the API answers and the run page draws).

* ``continual_report`` — one metric, eval set j = the task of stage j: the stage-end matrix,
  ACC / BWT / FWT / forgetting, min-ACC, avg-min-ACC, WC-ACC (accuracy) or the loss-forgetting
  matrix (loss), and the stability gap of every (boundary, eval set).
* ``boundary_report`` — every eval set in the metric its kind is judged by: the stability-gap
  table of the tasks learned before each boundary (``old_task_gap_table``'s rows and folded
  counts) and, per metric, the eval-set x stage-end matrix.

Both cost O(stages x eval sets).
"""

from __future__ import annotations

from .eval_state import HIGHER_IS_BETTER, EvalState
from .matrices import loss_forgetting, oriented_metrics


def continual_report(state: EvalState, metric: str, names: list[str]) -> dict:
    """``metric`` on the eval sets ``names`` (set j = the task of stage j). ``metrics`` needs
    one set per stage; the accuracy-only fields are ``None`` on loss and the other way round.
    """
    snap = state.snapshot(metric, names)
    T = len(state.boundaries)
    base = state.baseline.get(metric, {})
    baseline = [base.get(names[j]) if j < len(names) else None for j in range(T)]
    higher = HIGHER_IS_BETTER[metric]
    out = {
        "metric": metric,
        "higher_is_better": higher,
        "eval_sets": list(names),
        "boundaries": list(state.boundaries),
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
    if len(names) == T:
        out["metrics"] = oriented_metrics(snap["matrix"], baseline, metric)
    if higher:
        out.update(
            min_acc_per_task=snap["min_acc_per_task"],
            avg_min_acc=snap["avg_min_acc"],
            wc_acc=snap["wc_acc"],
        )
    else:
        out["loss_forgetting"] = loss_forgetting(snap["matrix"])
    return out


def boundary_report(
    state: EvalState, *, stage_names: list[str], done: list[bool], kinds: dict, tasks: list
) -> dict:
    """The stability-gap table and the matrices, one entry of ``stage_names`` / ``done``
    (stage finished) / ``tasks`` (the stage's own eval set, or ``None``) per boundary;
    ``kinds`` maps an eval set to its kind (``classification`` is judged by accuracy).

    ``matrices`` has, per metric with points, the rows of the finished stages;
    ``boundary_matrices`` the same with a row for every stage end (``None`` before a point at
    or before it), so that a page can show a row as soon as it sees the stage finish."""
    snaps = {}
    for metric in HIGHER_IS_BETTER:
        names = state.names(metric)
        if names:
            snaps[metric] = (names, state.snapshot(metric, names, steps=True))
    matrices, boundary_matrices = [], []
    rows = [i for i, d in enumerate(done) if d]
    for metric, (names, snap) in snaps.items():
        head = {"metric": metric, "higher_is_better": HIGHER_IS_BETTER[metric], "eval_sets": names}
        boundary_matrices.append({**head, "stages": list(stage_names), "values": snap["matrix"]})
        if rows:
            matrices.append({**head, "stages": [stage_names[i] for i in rows],
                             "values": [snap["matrix"][i] for i in rows]})  # fmt: skip
    gaps, gap_boundaries = _gap_table(snaps, state.boundaries, stage_names, kinds, tasks)
    return {
        "boundaries": list(state.boundaries),
        "gaps": gaps,
        "gap_boundaries": gap_boundaries,
        "matrices": matrices,
        "boundary_matrices": boundary_matrices,
    }


def _gap_records(snaps: dict, kinds: dict) -> tuple[list[str], list[str], list]:
    """(eval sets sorted by name, the metric each is read in, ``record``). A set is read in accuracy when it is a classification set,
    in loss otherwise, and in the other one when only that was reported."""
    names = sorted({n for sets, _ in snaps.values() for n in sets})
    metrics = []
    for name in names:
        first = "acc" if kinds.get(name) == "classification" else "loss"
        reported = [m for m in (first, *HIGHER_IS_BETTER) if m in snaps and name in snaps[m][0]]
        metrics.append(reported[0])

    def record(i: int, j: int) -> tuple[dict, int | None]:
        """(gap record after boundary i, the step of the last point at or before it)."""
        sets, snap = snaps[metrics[j]]
        k = sets.index(names[j])
        rec = snap["stability_gaps"][i * len(sets) + k]
        return {**rec, "eval_index": j}, snap["matrix_steps"][i][k]

    return names, metrics, record


def _gap_table(snaps, bnds, stage_names, kinds, tasks) -> tuple[list[dict], list[dict]]:
    """(rows, per-boundary summary), as ``old_tasks`` and ``old_task_gap_table`` give them
    for every eval set in its metric: each boundary looks only at the tasks learned before
    it — the stages' ``task`` up to it, minus the next stage's own; when no stage names a
    task, every eval set measured during training (0 < step <= boundary) before it."""
    if len(bnds) < 2:
        return [], []
    names, metrics, record = _gap_records(snaps, kinds)
    rows, summary = [], []
    for i in range(len(bnds) - 1):
        pairs = [record(i, j) for j in range(len(names))]
        recs = [rec for rec, _ in pairs]
        if any(tasks):
            learned = {t for t in tasks[: i + 1] if t} - {tasks[i + 1]}
            old = [j for j, name in enumerate(names) if name in learned]
        else:
            old = [j for j, (_, step) in enumerate(pairs) if step is not None and step > 0]
        after = stage_names[i + 1]
        dropped = [j for j in old if recs[j]["dropped"]]
        calm = [j for j in old if recs[j]["dropped"] is False]
        for j in dropped:
            rows.append({**recs[j], "metric": metrics[j], "eval_set": names[j],
                         "stage_after": after})  # fmt: skip
        summary.append(
            {
                "boundary_index": i,
                "boundary_step": bnds[i],
                "stage_after": after,
                "old_tasks": [names[j] for j in old],
                "dropped": [names[j] for j in dropped],
                "without_drop": len(calm),
                "without_drop_sets": [names[j] for j in calm],
                "not_measured": [names[j] for j in old if recs[j]["dropped"] is None],
            }
        )
    return rows, summary
