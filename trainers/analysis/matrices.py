"""Accuracy-matrix metrics (ACC, BWT, FWT, forgetting) and loss forgetting.

``R[i][j]`` is the score on eval set j at the end of stage i (T x T); ``b[j]`` is the score of
the untrained model on eval set j. ``None`` (or NaN) entries are missing; any metric that needs
a missing entry is ``None``.
"""

from __future__ import annotations

from ._util import as_float_or_none, as_matrix, mean_or_none, sub_or_none


def _forgetting(R: list[list[float | None]], j: int) -> float | None:
    """max over l <= T-2 of R[l][j] - R[T-1][j] (includes rows before task j was trained)."""
    T = len(R)
    final = R[T - 1][j]
    past = [R[r][j] for r in range(T - 1)]
    if final is None or any(v is None for v in past):
        return None
    return max(past) - final


def matrix_metrics(R, b=None) -> dict:
    """ACC, BWT (Lopez-Paz & Ranzato 2017), FWT and forgetting (Chaudhry et al. 2018).

    * ``acc`` = mean_j R[T-1][j]
    * ``bwt`` = 1/(T-1) sum_{j<=T-2} (R[T-1][j] - R[j][j])
    * ``fwt`` = 1/(T-1) sum_{j>=1} (R[j-1][j] - b[j]); ``None`` without ``b``
    * ``forgetting_per_task[j]`` (j <= T-2) = max_{l<=T-2} R[l][j] - R[T-1][j]; not clipped
    * ``avg_forgetting`` = mean of ``forgetting_per_task``

    With T = 1, ``bwt``, ``fwt``, ``forgetting_per_task`` and ``avg_forgetting`` are ``None``.
    """
    M = as_matrix(R, "R", square=True)
    T = len(M)
    base = None
    if b is not None:
        base = [as_float_or_none(x) for x in b]
        if len(base) != T:
            raise ValueError(f"b must have length {T}, got {len(base)}")
    last = M[T - 1]
    out: dict = {
        "acc": mean_or_none(last),
        "bwt": None,
        "fwt": None,
        "forgetting_per_task": None,
        "avg_forgetting": None,
    }
    if T == 1:
        return out
    out["bwt"] = mean_or_none(sub_or_none(last[j], M[j][j]) for j in range(T - 1))
    if base is not None:
        out["fwt"] = mean_or_none(sub_or_none(M[j - 1][j], base[j]) for j in range(1, T))
    forgetting = [_forgetting(M, j) for j in range(T - 1)]
    out["forgetting_per_task"] = forgetting
    out["avg_forgetting"] = mean_or_none(forgetting)
    return out


def loss_forgetting(L) -> list[list[float | None]]:
    """``LF[i][j] = L[i][j] - min_{l<i} L[l][j]`` for i >= 1; row 0 is all ``None``.

    ``L`` may be rectangular (stages x eval sets). An entry is ``None`` when ``L[i][j]`` or any
    ``L[l][j]`` with l < i is missing.
    """
    M = as_matrix(L, "L")
    n, m = len(M), len(M[0])
    out: list[list[float | None]] = [[None] * m]
    for i in range(1, n):
        row: list[float | None] = []
        for j in range(m):
            past = [M[r][j] for r in range(i)]
            cur = M[i][j]
            if cur is None or any(v is None for v in past):
                row.append(None)
            else:
                row.append(cur - min(past))
        out.append(row)
    return out


def oriented_metrics(matrix, baseline, metric: str) -> dict:
    """``matrix_metrics`` with accuracy's reading for both metrics: for loss it runs on −L, so
    a negative BWT and a positive forgetting mean old tasks got worse; ``acc`` is then the
    mean final loss. ``matrix`` is stages x eval sets (the first T columns are read); FWT
    needs every ``baseline`` value."""
    T = len(matrix)
    sign = 1.0 if metric == "acc" else -1.0

    def flip(x):
        return None if x is None else sign * x

    R = [[flip(x) for x in row[:T]] for row in matrix]
    b = [flip(x) for x in baseline] if all(x is not None for x in baseline) else None
    out = matrix_metrics(R, b)
    out["acc"] = flip(out["acc"])
    return out
