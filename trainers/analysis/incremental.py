"""Incremental continual-evaluation analysis: O(T) state per eval set, cheap updates.

``ContinualState`` keeps, per eval set (a column), only what the metrics need:

* the newest point (``pending``) — kept apart so that a re-sent point with the same step can
  still replace its value exactly;
* for every boundary i: the (step, value) of the last committed point with step <= boundary
  (matrix entry / stability-gap reference);
* for every stage window (boundaries[i], boundaries[i+1]]: the minimum (min-ACC of the task of
  any stage <= i is the minimum over its windows, so a column may be read as any stage's task);
* for every boundary i <= T-2: the window's extreme (value, earliest step) and the first step
  after the extreme that is back within ``tol`` of the reference (stability-gap recovery).

``snapshot()`` folds the pending points into a copy and returns exactly what the batch
functions return on all points received so far (with ``t`` = the last boundary);
``snapshot(columns)`` does so for a selection of columns in a chosen order (column k read as
eval set k, the task of stage k), ``None`` standing for an eval set without points.

Exactness. Results are exact when, per eval set, points arrive in increasing step order, with
any number of re-sends of the newest point (same step, possibly a different value: last value
wins, like duplicate steps in the batch functions), and with re-sends of older points carrying
their original value (these change nothing). Non-finite values are dropped. An older, not yet
seen point arriving late is folded in; matrix entries, min-ACC and the gap extremes stay exact
(they are order independent), but a gap's recovery step may not be — whenever such a late
point changes anything in the state, ``exact`` becomes ``False`` (reported in the snapshot).
A re-sent older point with a *different* value cannot be detected reliably (the old value is
not stored): the running minimum / extreme may still include the old value.

Boundaries are fixed at construction; ``extended()`` moves the last one and appends later
stages, exactly when no committed point lies after the last boundary. Eval sets can be added
(``add_eval_set``).
``to_dict()`` / ``from_dict()`` round-trip through JSON.
"""

from __future__ import annotations

import numpy as np

from ._util import as_float_or_none, check_boundaries, clean_points
from .continual import combine_avg_min, combine_wc
from .gaps import check_gap_options, gap_record, window_end, within_tol, worse_by
from .matrices import matrix_metrics

# per column: T boundaries (ref_*), T-1 stage windows (the others)
_ARRAYS = ("ref_step", "ref_val", "win_min", "ext_step", "ext_val", "rec_step")
_PER_BOUNDARY = ("ref_step", "ref_val")
_VERSION = 2


def _opt(x) -> float | None:
    """NaN-sentinel float -> float | None."""
    return None if x != x else float(x)


def _opt_int(x) -> int | None:
    return None if x != x else int(x)


def _nan_min(x: np.ndarray) -> float | None:
    x = x[x == x]
    return float(x.min()) if x.size else None


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
        self.max_step = np.nan  # the largest committed step (see ``extended``)
        M, T = self.num_eval_sets, len(self.boundaries)
        for k in _ARRAYS:
            setattr(self, k, np.full((M, T if k in _PER_BOUNDARY else max(T - 1, 0)), np.nan))
        self.pending_step = np.full(M, np.nan)
        self.pending_val = np.full(M, np.nan)
        bnds = self.boundaries
        self._ends = [window_end(bnds, i, self.window) for i in range(T - 1)]

    # ------------------------------------------------------------------ updates
    def add_eval_set(self) -> int:
        """Add an eval set without points; returns its index."""
        for k in (*_ARRAYS, "pending_step", "pending_val"):
            arr = getattr(self, k)
            setattr(self, k, np.concatenate([arr, np.full((1, *arr.shape[1:]), np.nan)]))
        self.num_eval_sets += 1
        return self.num_eval_sets - 1

    def has_points(self, eval_index: int) -> bool:
        """Whether eval set ``eval_index`` received any (finite) point."""
        p = self.pending_step[eval_index]
        return bool(p == p)

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
            self._commit(j, S[:-1], V[:-1])
        self.pending_step[j] = S[-1]
        self.pending_val[j] = V[-1]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _ARRAYS}

    def _commit(self, j: int, S: np.ndarray, V: np.ndarray) -> None:
        self._fold(self._arrays(), j, S, V)
        if not S[-1] <= self.max_step:  # also when max_step is NaN
            self.max_step = float(S[-1])

    def _fold_late(self, j: int, S: np.ndarray, V: np.ndarray) -> None:
        before = [getattr(self, k)[j].copy() for k in _ARRAYS]
        self._commit(j, S, V)
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
        his = np.searchsorted(S, bnds, side="right")  # points <= each boundary
        # matrix entries / references: last point <= boundary, the larger step wins
        for i in range(T):
            k = his[i] - 1
            if k >= 0 and not S[k] < ref_step[i]:
                ref_step[i] = S[k]
                ref_val[i] = V[k]
        ext_step, ext_val, rec_step = a["ext_step"][j], a["ext_val"][j], a["rec_step"][j]
        win_min = a["win_min"][j]
        for i in range(T - 1):
            lo = his[i]
            # the stage window's minimum (min-ACC)
            if his[i + 1] > lo:
                m = V[lo : his[i + 1]].min()
                if not m >= win_min[i]:  # also when win_min[i] is NaN
                    win_min[i] = m
            # the stability-gap window
            hi = his[i + 1] if self.window is None else np.searchsorted(S, self._ends[i], "right")
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

    def extended(self, boundaries) -> ContinualState | None:
        """This state on ``boundaries`` = the current ones with the last one moved and/or
        later stages appended, or ``None`` when that cannot be exact: other boundaries
        changed, or a committed point lies after the old or the new last boundary (a point
        after the last boundary is folded into no stage window). The pending points are
        folded later, on the new boundaries."""
        new = check_boundaries(boundaries)
        T = len(self.boundaries)
        if new == self.boundaries:
            return self
        if len(new) < T or new[: T - 1] != self.boundaries[: T - 1]:
            return None
        if self.max_step > min(self.boundaries[-1], new[T - 1]):
            return None
        base = None if self.baseline is None else self.baseline + [None] * (len(new) - T)
        out = ContinualState(
            self.num_eval_sets, new, self.higher_is_better, self.window, self.tol, base
        )
        out.exact, out.max_step = self.exact, self.max_step
        # Every committed point is <= both last boundaries: the last stage's window holds the
        # same points, the new ones none, and the last point <= any new boundary is the last.
        for k in _ARRAYS:
            old = getattr(self, k)
            getattr(out, k)[:, : old.shape[1]] = old
        out.ref_step[:, T - 1 :] = self.ref_step[:, T - 1 : T]
        out.ref_val[:, T - 1 :] = self.ref_val[:, T - 1 : T]
        out.pending_step[:] = self.pending_step
        out.pending_val[:] = self.pending_val
        return out

    # ------------------------------------------------------------------ results
    def _view(self, columns) -> tuple[dict[str, np.ndarray], int]:
        """Copies of the committed arrays for ``columns`` (``None``: no points) with the
        pending points folded in."""
        M = self.num_eval_sets
        if columns is None:
            idx = np.arange(M)
        else:
            if any(c is not None and not 0 <= int(c) < M for c in columns):
                raise IndexError("column out of range")
            idx = np.array([M if c is None else int(c) for c in columns], dtype=np.int64)

        def pick(arr: np.ndarray) -> np.ndarray:
            pad = np.full((1, *arr.shape[1:]), np.nan)  # row M: an eval set without points
            return np.concatenate([arr, pad])[idx]

        a = {k: pick(getattr(self, k)) for k in _ARRAYS}
        steps, vals = pick(self.pending_step), pick(self.pending_val)
        for r in range(idx.size):
            if steps[r] == steps[r]:
                self._fold(a, r, steps[r : r + 1], vals[r : r + 1])
        return a, int(idx.size)

    def snapshot(self, columns=None, steps: bool = False) -> dict:
        """Current results, identical to the batch functions on all points received.

        ``columns`` selects and orders the eval sets (default: all, in index order); an entry
        ``None`` is an eval set without points. Keys: ``matrix`` (``matrix_from_series``),
        ``metrics`` (``matrix_metrics`` of it, with ``baseline``), ``min_acc_per_task``,
        ``avg_min_acc``, ``wc_acc`` (t = last boundary), ``stability_gaps`` and ``exact``
        (see the module docstring); with ``steps`` also ``matrix_steps``, the step of each
        matrix entry.
        """
        a, M = self._view(columns)
        bnds = self.boundaries
        T = len(bnds)
        matrix = [[_opt(a["ref_val"][j, i]) for j in range(M)] for i in range(T)]
        if steps:
            matrix_steps = [[_opt_int(a["ref_step"][j, i]) for j in range(M)] for i in range(T)]
        out: dict = {
            "matrix": matrix,
            "metrics": None,
            "min_acc_per_task": None,
            "avg_min_acc": None,
            "wc_acc": None,
        }
        if M == T:
            c = T - 1
            # min over (boundaries[j], boundaries[c]] = over the stage windows j..c-1
            mins = [_nan_min(a["win_min"][j, j:c]) if j < c else None for j in range(T)]
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
        if steps:
            out["matrix_steps"] = matrix_steps
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
            "max_step": _opt(self.max_step),
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
        st.max_step = np.nan if d["max_step"] is None else float(d["max_step"])
        for k in (*_ARRAYS, "pending_step", "pending_val"):
            target = getattr(st, k)
            src = np.array(d[k], dtype=np.float64).reshape(target.shape)  # None -> NaN
            target[...] = src
        return st
