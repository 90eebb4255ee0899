"""Continual-evaluation metrics (De Lange, van de Ven & Tuytelaars 2023).

``series[j]`` is a list of ``[step, value]`` pairs for eval set j (any order); ``boundaries[i]``
is the last step of stage i; eval set j is the task of stage j.
"""

from __future__ import annotations

import numpy as np

from ._util import as_int, check_boundaries, clean_all, mean_or_none, stage_of, value_at_or_before


def matrix_from_series(series, boundaries) -> list[list[float | None]]:
    """``R[i][j]`` = value of eval set j at its last eval step <= ``boundaries[i]``.

    Rows are boundaries, columns eval sets (``len(boundaries) x len(series)``; any number of
    eval sets is allowed here). ``None`` when eval set j has no point at or before the boundary.
    """
    bnds = check_boundaries(boundaries)
    cleaned = clean_all(series)
    out = []
    for b in bnds:
        row = []
        for steps, values in cleaned:
            hit = value_at_or_before(steps, values, b)
            row.append(None if hit is None else hit[1])
        out.append(row)
    return out


def _resolve(series, boundaries, t):
    bnds = check_boundaries(boundaries)
    cleaned = clean_all(series)
    if len(cleaned) != len(bnds):
        raise ValueError(
            f"need one series per stage: {len(cleaned)} series for {len(bnds)} boundaries"
        )
    t = bnds[-1] if t is None else as_int(t, "t")
    return bnds, cleaned, t, stage_of(t, bnds)


def _min_in(steps: np.ndarray, values: np.ndarray, lo_excl, hi_incl) -> float | None:
    lo = int(np.searchsorted(steps, lo_excl, side="right"))
    hi = int(np.searchsorted(steps, hi_incl, side="right"))
    if hi <= lo:
        return None
    return float(values[lo:hi].min())


def combine_avg_min(mins: list[float | None], c: int) -> float | None:
    """avg-min-ACC from the per-task minima: mean over j < c; ``None`` if c == 0 or any None."""
    if c == 0:
        return None
    return mean_or_none(mins[:c])


def combine_wc(current: float | None, avg_min: float | None, c: int) -> float | None:
    """WC-ACC = a_k/k + (1 - 1/k) avg-min-ACC with k = c + 1; a_1 when k == 1."""
    k = c + 1
    if current is None:
        return None
    if k == 1:
        return current
    if avg_min is None:
        return None
    return current / k + (1.0 - 1.0 / k) * avg_min


def _mins(bnds, cleaned, t, c) -> list[float | None]:
    out: list[float | None] = []
    for j, (steps, values) in enumerate(cleaned):
        out.append(_min_in(steps, values, bnds[j], t) if j < c else None)
    return out


def min_acc_per_task(series, boundaries, t=None) -> list[float | None]:
    """min-ACC of every task j at time t (default: the last boundary).

    Minimum of task j's values at steps s with ``boundaries[j] < s <= t``; defined for j < c
    where c is the stage containing t (first i with ``t <= boundaries[i]``). ``None`` for
    j >= c or when no step qualifies. Raises ``ValueError`` if t is after the last boundary.
    """
    bnds, cleaned, t, c = _resolve(series, boundaries, t)
    return _mins(bnds, cleaned, t, c)


def avg_min_acc(series, boundaries, t=None) -> float | None:
    """Mean of min-ACC over the tasks j < c; ``None`` when c == 0 or any of them is ``None``."""
    bnds, cleaned, t, c = _resolve(series, boundaries, t)
    return combine_avg_min(_mins(bnds, cleaned, t, c), c)


def wc_acc(series, boundaries, t=None) -> float | None:
    """Worst-case accuracy: a_k/k + (1 - 1/k) avg-min-ACC(t), k = c + 1.

    a_k is the current task's (eval set c) value at its last eval step <= t.
    """
    bnds, cleaned, t, c = _resolve(series, boundaries, t)
    hit = value_at_or_before(*cleaned[c], t)
    current = None if hit is None else hit[1]
    return combine_wc(current, combine_avg_min(_mins(bnds, cleaned, t, c), c), c)
