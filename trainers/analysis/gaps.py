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
    dropped = bool(depth > tol)
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
    ok = np.flatnonzero(worse_by(ref[1], after, higher_is_better) <= tol)
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
