"""Incremental continual-evaluation analysis: O(T) state per eval set, cheap updates.

``ContinualState`` keeps, per eval set, only what the metrics need:

* the newest point (``pending``) — kept apart so that a re-sent point with the same step can
  still replace its value exactly;
* for every boundary i: the (step, value) of the last committed point with step <= boundary
  (matrix entry / stability-gap reference);
* the running minimum since the eval set's own boundary, up to the last boundary (min-ACC);
* for every boundary i <= T-2: the window's extreme (value, earliest step) and the first step
  after the extreme that is back within ``tol`` of the reference (stability-gap recovery).

``snapshot()`` folds the pending points into a copy and returns exactly what the batch
functions return on all points received so far (with ``t`` = the last boundary).

Exactness. Results are exact when, per eval set, points arrive in increasing step order, with
any number of re-sends of the newest point (same step, possibly a different value: last value
wins, like duplicate steps in the batch functions), and with re-sends of older points carrying
their original value (these change nothing). Non-finite values are dropped. An older, not yet
seen point arriving late is folded in; matrix entries, min-ACC and the gap extremes stay exact
(they are order independent), but a gap's recovery step may not be — whenever such a late
point changes anything in the state, ``exact`` becomes ``False`` (reported in the snapshot).
A re-sent older point with a *different* value cannot be detected reliably (the old value is
not stored): the running minimum / extreme may still include the old value.

Boundaries are fixed at construction. ``to_dict()`` / ``from_dict()`` round-trip through JSON.
"""

from __future__ import annotations

import numpy as np

from ._util import as_float_or_none, check_boundaries, clean_points
from .continual import combine_avg_min, combine_wc
from .gaps import check_gap_options, gap_record, window_end, within_tol, worse_by
from .matrices import matrix_metrics

_ARRAYS = ("ref_step", "ref_val", "min_val", "ext_step", "ext_val", "rec_step")
_VERSION = 1


def _opt(x) -> float | None:
    """NaN-sentinel float -> float | None."""
    return None if x != x else float(x)


def _opt_int(x) -> int | None:
    return None if x != x else int(x)


class ContinualState:
    """Incrementally maintained analysis of continual-evaluation series.

    Args:
        num_eval_sets: number of eval sets M (eval set j is the task of stage j when j < T).
        boundaries: last step of every stage (T values, strictly increasing).
        higher_is_better, window, tol: as in ``stability_gaps``.
        baseline: optional untrained-model scores ``b`` for ``matrix_metrics`` (FWT).

    ``matrix_metrics``, ``min_acc_per_task``, ``avg_min_acc`` and ``wc_acc`` need M == T; for
    other M they are ``None`` in the snapshot (the matrix and the gaps are still reported).
    """

    def __init__(
        self,
        num_eval_sets: int,
        boundaries,
        higher_is_better: bool = True,
        window=None,
        tol: float = 0.0,
        baseline=None,
    ) -> None:
        self.num_eval_sets = int(num_eval_sets)
        if self.num_eval_sets < 0:
            raise ValueError("num_eval_sets must be >= 0")
        self.boundaries = check_boundaries(boundaries)
        self.higher_is_better = bool(higher_is_better)
        self.window, self.tol = check_gap_options(window, tol)
        self.baseline = None if baseline is None else [as_float_or_none(x) for x in baseline]
        if self.baseline is not None and len(self.baseline) != len(self.boundaries):
            raise ValueError("baseline must have one value per stage")
        self.exact = True
        M, T = self.num_eval_sets, len(self.boundaries)
        nan = np.nan
        self.ref_step = np.full((M, T), nan)
        self.ref_val = np.full((M, T), nan)
        self.min_val = np.full(M, nan)
        self.ext_step = np.full((M, max(T - 1, 0)), nan)
        self.ext_val = np.full((M, max(T - 1, 0)), nan)
        self.rec_step = np.full((M, max(T - 1, 0)), nan)
        self.pending_step = np.full(M, nan)
        self.pending_val = np.full(M, nan)
        bnds = self.boundaries
        self._ends = [window_end(bnds, i, self.window) for i in range(T - 1)]

    # ------------------------------------------------------------------ updates
    def update(self, eval_index: int, steps, values) -> None:
        """Add a batch of points (any order inside the batch) for one eval set."""
        j = int(eval_index)
        if not 0 <= j < self.num_eval_sets:
            raise IndexError(f"eval_index {j} out of range")
        S, V = clean_points(steps, values)
        if S.size == 0:
            return
        p = self.pending_step[j]
        if p == p:  # there is a pending point
            late = S < p
            if late.any():
                self._fold_late(j, S[late], V[late])
                S, V = S[~late], V[~late]
                if S.size == 0:
                    return
            if S[0] != p:  # otherwise the batch re-sends (and replaces) the pending point
                S = np.concatenate(([p], S))
                V = np.concatenate(([self.pending_val[j]], V))
        if S.size > 1:
            self._fold(self._arrays(), j, S[:-1], V[:-1])
        self.pending_step[j] = S[-1]
        self.pending_val[j] = V[-1]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _ARRAYS}

    def _fold_late(self, j: int, S: np.ndarray, V: np.ndarray) -> None:
        before = [getattr(self, k)[j].copy() for k in _ARRAYS]
        self._fold(self._arrays(), j, S, V)
        after = [getattr(self, k)[j] for k in _ARRAYS]
        if not all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after, strict=True)
        ):
            self.exact = False

    def _fold(self, a: dict[str, np.ndarray], j: int, S: np.ndarray, V: np.ndarray) -> None:
        """Fold sorted, unique points of eval set j into the committed arrays ``a``."""
        bnds = self.boundaries
        T = len(bnds)
        hib = self.higher_is_better
        ref_step, ref_val = a["ref_step"][j], a["ref_val"][j]
        # matrix entries / references: last point <= boundary, the larger step wins
        ks = np.searchsorted(S, bnds, side="right") - 1
        for i in range(T):
            k = ks[i]
            if k >= 0 and not S[k] < ref_step[i]:
                ref_step[i] = S[k]
                ref_val[i] = V[k]
        # min-ACC of task j at t = last boundary: min over (boundaries[j], boundaries[-1]]
        if j < T - 1:
            lo = np.searchsorted(S, bnds[j], side="right")
            hi = np.searchsorted(S, bnds[-1], side="right")
            if hi > lo:
                m = V[lo:hi].min()
                cur = a["min_val"][j]
                if cur != cur or m < cur:
                    a["min_val"][j] = m
        # stability-gap windows
        ext_step, ext_val, rec_step = a["ext_step"][j], a["ext_val"][j], a["rec_step"][j]
        for i in range(T - 1):
            lo = np.searchsorted(S, bnds[i], side="right")
            hi = np.searchsorted(S, self._ends[i], side="right")
            if hi <= lo:
                continue
            ws, wv = S[lo:hi], V[lo:hi]
            k = int(np.argmin(wv) if hib else np.argmax(wv))
            cs, cv = ws[k], wv[k]
            es, ev = ext_step[i], ext_val[i]
            if es != es or worse_by(ev, cv, hib) > 0 or (cv == ev and cs < es):
                ext_step[i], ext_val[i], rec_step[i] = cs, cv, np.nan
                es = cs
            ref = ref_val[i]
            if ref == ref:
                ok = np.flatnonzero((ws > es) & within_tol(ref, wv, hib, self.tol))
                if ok.size:
                    first = ws[ok[0]]
                    if rec_step[i] != rec_step[i] or first < rec_step[i]:
                        rec_step[i] = first

    # ------------------------------------------------------------------ results
    def snapshot(self) -> dict:
        """Current results, identical to the batch functions on all points received.

        Keys: ``matrix`` (``matrix_from_series``), ``metrics`` (``matrix_metrics`` of it, with
        ``baseline``), ``min_acc_per_task``, ``avg_min_acc``, ``wc_acc`` (t = last boundary),
        ``stability_gaps`` and ``exact`` (see the module docstring).
        """
        a = {k: getattr(self, k).copy() for k in _ARRAYS}
        for j in range(self.num_eval_sets):
            p = self.pending_step[j]
            if p == p:
                self._fold(a, j, np.array([p]), np.array([self.pending_val[j]]))
        bnds = self.boundaries
        T, M = len(bnds), self.num_eval_sets
        matrix = [[_opt(a["ref_val"][j, i]) for j in range(M)] for i in range(T)]
        out: dict = {
            "matrix": matrix,
            "metrics": None,
            "min_acc_per_task": None,
            "avg_min_acc": None,
            "wc_acc": None,
        }
        if M == T:
            c = T - 1
            mins = [_opt(a["min_val"][j]) if j < c else None for j in range(T)]
            avg = combine_avg_min(mins, c)
            out["metrics"] = matrix_metrics(matrix, self.baseline)
            out["min_acc_per_task"] = mins
            out["avg_min_acc"] = avg
            out["wc_acc"] = combine_wc(matrix[c][c], avg, c)
        gaps = []
        for i in range(T - 1):
            for j in range(M):
                rs, rv = a["ref_step"][j, i], a["ref_val"][j, i]
                es, ev = a["ext_step"][j, i], a["ext_val"][j, i]
                ref = None if rs != rs else (int(rs), float(rv))
                ext = None if es != es else (int(es), float(ev))
                rec = _opt_int(a["rec_step"][j, i])
                gaps.append(
                    gap_record(i, bnds[i], j, ref, ext, rec, self.higher_is_better, self.tol)
                )
        out["stability_gaps"] = gaps
        out["exact"] = self.exact
        return out

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """JSON-serialisable state (NaN sentinels become ``None``)."""

        def enc(arr: np.ndarray):
            return (
                [None if x != x else x for x in arr.tolist()]
                if arr.ndim == 1
                else [enc(r) for r in arr]
            )

        d = {
            "version": _VERSION,
            "num_eval_sets": self.num_eval_sets,
            "boundaries": list(self.boundaries),
            "higher_is_better": self.higher_is_better,
            "window": self.window,
            "tol": self.tol,
            "baseline": self.baseline,
            "exact": self.exact,
            "pending_step": enc(self.pending_step),
            "pending_val": enc(self.pending_val),
        }
        for k in _ARRAYS:
            d[k] = enc(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ContinualState:
        if d.get("version") != _VERSION:
            raise ValueError(f"unsupported ContinualState version {d.get('version')!r}")
        st = cls(
            d["num_eval_sets"],
            d["boundaries"],
            higher_is_better=d["higher_is_better"],
            window=d["window"],
            tol=d["tol"],
            baseline=d["baseline"],
        )
        st.exact = bool(d["exact"])
        for k in (*_ARRAYS, "pending_step", "pending_val"):
            target = getattr(st, k)
            src = np.array(d[k], dtype=np.float64).reshape(target.shape)  # None -> NaN
            target[...] = src
        return st
