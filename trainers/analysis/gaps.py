"""Stability gap around stage boundaries (De Lange, van de Ven & Tuytelaars 2023).

For every boundary i <= T-2 and every eval set j (ordered by i, then j):

* reference = value at the last eval step <= b (b = ``boundaries[i]``)
* window = eval steps s with b < s <= end, end = ``boundaries[i+1]`` or ``b + window`` when a
  window length is given (not capped at the next boundary)
* extreme = the window's minimum (maximum when lower is better), earliest step on ties
* ``drop_depth`` = reference - extreme (extreme - reference when lower is better), signed
* ``time_to_drop`` = extreme step - b
* ``dropped`` = extreme is worse than the reference by more than ``tol``
* ``recovery_step`` = the extreme step when not dropped; otherwise the first eval step after the
  extreme (and <= end) whose value is worse than the reference by at most ``tol`` (being better
  than the reference counts as recovered); ``None`` if there is none
* ``time_to_recover`` = recovery step - b

All fields except ``boundary_index``, ``boundary_step`` and ``eval_index`` are ``None`` when
there is no reference or the window is empty.

"Worse by at most ``tol``" is decided with a relative slack of 1e-9 of the values compared
(``within_tol``): metrics are floats, and 0.80 -> 0.75 is 0.05000000000000004 worse in binary,
which with ``tol = 0.05`` must count as recovered, as the user reads it.

``stability_gaps`` answers for every (boundary, eval set) pair. The table users read is
``old_task_gap_table``: a stability gap is the drop of a task *already learned*, so each
boundary only looks at the eval sets of earlier tasks (``old_tasks``), and the pairs with no
drop are counted instead of listed.
"""

from __future__ import annotations

import math

import numpy as np

from ._util import check_boundaries, clean_all, value_at_or_before

VALUE_FIELDS = (
    "reference_step",
    "reference_value",
    "extreme_step",
    "extreme_value",
    "drop_depth",
    "time_to_drop",
    "dropped",
    "recovery_step",
    "time_to_recover",
)


def check_gap_options(window, tol) -> tuple[float | None, float]:
    if window is not None:
        window = float(window)
        if not math.isfinite(window) or window < 0:
            raise ValueError("window must be a finite number >= 0")
    tol = float(tol)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError("tol must be a finite number >= 0")
    return window, tol


def window_end(bnds: list[int], i: int, window: float | None) -> float:
    return bnds[i + 1] if window is None else bnds[i] + window


def worse_by(reference, value, higher_is_better: bool):
    """How much worse ``value`` is than ``reference`` (works on floats and arrays)."""
    return reference - value if higher_is_better else value - reference


REL_EPS = 1e-9


def within_tol(reference, value, higher_is_better: bool, tol: float):
    """Whether ``value`` is worse than ``reference`` by at most ``tol`` (floats or arrays).

    The slack ``REL_EPS * max(|reference|, |value|, tol)`` absorbs the rounding of the
    subtraction (0.80 - 0.75 > 0.05 in binary) and nothing a user could see."""
    if isinstance(reference, float) and isinstance(value, float):  # the same sums, 10x faster
        scale = max(abs(reference), abs(value), tol)
        return worse_by(reference, value, higher_is_better) <= tol + REL_EPS * scale
    scale = np.maximum(np.maximum(np.abs(reference), np.abs(value)), tol)
    return worse_by(reference, value, higher_is_better) <= tol + REL_EPS * scale


def gap_record(
    i: int,
    b: int,
    j: int,
    ref: tuple[int, float] | None,
    ext: tuple[int, float] | None,
    rec_after_ext: int | None,
    higher_is_better: bool,
    tol: float,
) -> dict:
    """Assemble one record from the reference, the extreme and the first recovering step."""
    rec: dict = {"boundary_index": i, "boundary_step": b, "eval_index": j}
    rec.update(dict.fromkeys(VALUE_FIELDS))
    if ref is None or ext is None:
        return rec
    depth = float(worse_by(ref[1], ext[1], higher_is_better))
    dropped = not bool(within_tol(ref[1], ext[1], higher_is_better, tol))
    recovery = rec_after_ext if dropped else ext[0]
    rec.update(
        reference_step=int(ref[0]),
        reference_value=float(ref[1]),
        extreme_step=int(ext[0]),
        extreme_value=float(ext[1]),
        drop_depth=depth,
        time_to_drop=int(ext[0]) - b,
        dropped=dropped,
        recovery_step=None if recovery is None else int(recovery),
        time_to_recover=None if recovery is None else int(recovery) - b,
    )
    return rec


def _one_gap(steps, values, b, end, higher_is_better, tol):
    ref = value_at_or_before(steps, values, b)
    lo = int(np.searchsorted(steps, b, side="right"))
    hi = int(np.searchsorted(steps, end, side="right"))
    if ref is None or hi <= lo:
        return ref, None, None
    w = values[lo:hi]
    k = int(np.argmin(w) if higher_is_better else np.argmax(w))  # first occurrence = earliest
    ext = (int(steps[lo + k]), float(w[k]))
    after = w[k + 1 :]
    ok = np.flatnonzero(within_tol(ref[1], after, higher_is_better, tol))
    rec = int(steps[lo + k + 1 + ok[0]]) if ok.size else None
    return ref, ext, rec


def stability_gaps(series, boundaries, higher_is_better=True, window=None, tol=0.0) -> list[dict]:
    """One stability-gap record per boundary i <= T-2 and eval set j (see module docstring)."""
    bnds = check_boundaries(boundaries)
    window, tol = check_gap_options(window, tol)
    cleaned = clean_all(series)
    hib = bool(higher_is_better)
    out = []
    for i in range(len(bnds) - 1):
        b = bnds[i]
        end = window_end(bnds, i, window)
        for j, (steps, values) in enumerate(cleaned):
            ref, ext, rec = _one_gap(steps, values, b, end, hib, tol)
            out.append(gap_record(i, b, j, ref, ext, rec, hib, tol))
    return out


def old_tasks(stage_tasks, names, series, boundaries) -> list[list[int]]:
    """For every boundary i <= T-2, the eval indices of the tasks learned before it.

    ``stage_tasks[k]`` is stage k's ``task`` (an eval set name, or ``None``), ``names[j]`` the
    name of eval set j. When some stage names a task, the tasks learned before boundary i are
    those of stages 0..i, minus the task of stage i+1 (being trained again, it is the new task
    there, not an old one). When no stage names one, nothing says which eval set is whose
    task, so every eval set measured during training before the boundary (a point with
    0 < step <= boundary; a step-0 baseline is taken before anything is learned) counts."""
    bnds = check_boundaries(boundaries)
    tasks = list(stage_tasks)
    if len(tasks) != len(bnds):
        raise ValueError("stage_tasks needs one entry per stage (boundary)")
    out = []
    if any(tasks):
        for i in range(len(bnds) - 1):
            learned = {t for t in tasks[: i + 1] if t} - {tasks[i + 1]}
            out.append([j for j, name in enumerate(names) if name in learned])
        return out
    cleaned = clean_all(series)
    for i in range(len(bnds) - 1):
        b = bnds[i]
        out.append([j for j, (st, _) in enumerate(cleaned) if np.any((st > 0) & (st <= b))])
    return out


def old_task_gap_table(
    series, boundaries, old, higher_is_better=True, window=None, tol=0.0
) -> list[dict]:
    """The stability-gap table of old tasks: one entry per boundary i <= T-2.

    ``old[i]`` lists the eval indices to look at after boundary i (``old_tasks``);
    ``higher_is_better`` is one flag or one per eval set (accuracy and loss sets may mix).
    Each entry is ``{"boundary_index", "boundary_step", "rows", "without_drop",
    "not_measured"}``: ``rows`` the ``stability_gaps`` records of the eval sets that dropped
    by more than ``tol``, ``without_drop`` the eval indices that did not, ``not_measured``
    those without a reference or a point in the window yet. Every (boundary, old task) pair is
    in exactly one of the three."""
    bnds = check_boundaries(boundaries)
    window, tol = check_gap_options(window, tol)
    cleaned = clean_all(series)
    hib = (
        [bool(h) for h in higher_is_better]
        if isinstance(higher_is_better, (list, tuple))
        else [bool(higher_is_better)] * len(cleaned)
    )
    if len(hib) != len(cleaned) or len(old) != len(bnds) - 1:
        raise ValueError("need one higher_is_better per eval set and one old list per boundary")
    table = []
    for i in range(len(bnds) - 1):
        b, end = bnds[i], window_end(bnds, i, window)
        entry = {"boundary_index": i, "boundary_step": b, "rows": [], "without_drop": [],
                 "not_measured": []}  # fmt: skip
        for j in old[i]:
            steps, values = cleaned[j]
            rec = gap_record(i, b, j, *_one_gap(steps, values, b, end, hib[j], tol), hib[j], tol)
            if rec["dropped"] is None:
                entry["not_measured"].append(j)
            elif rec["dropped"]:
                entry["rows"].append(rec)
            else:
                entry["without_drop"].append(j)
        table.append(entry)
    return table
