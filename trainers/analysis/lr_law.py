"""Loss law under learning-rate annealing (Tissue et al. 2024).

    L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)

With ``lr[i]`` the learning rate used at step i+1 (steps are 1-based):

* S1(s) = sum_{i<=s} eta_i                         (forward area)
* m_1 = 0, m_i = lam * m_{i-1} + (eta_{i-1} - eta_i)
* S2(s) = sum_{i<=s} m_i                           (annealing area, lam = 0.999 by default)

``fit_lr_law`` solves (L0, A, C) >= 0 exactly by linear least squares for a given alpha and
searches alpha (log-spaced grid, then golden-section refinement around the best grid point).
"""

from __future__ import annotations

import math

import numpy as np

ALPHA_MIN = 1e-3
ALPHA_MAX = 5.0
_GRID = 121
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _check_lam(lam) -> float:
    lam = float(lam)
    if not (0.0 <= lam <= 1.0):
        raise ValueError("lam must be in [0, 1]")
    return lam


def _decay_filter(d: np.ndarray, lam: float) -> np.ndarray:
    """m_i = lam * m_{i-1} + d_i (m_0 = 0), vectorised in blocks (no overflow)."""
    n = d.size
    if lam == 0.0 or n == 0:
        return d.copy()
    if lam == 1.0:
        return np.cumsum(d)
    # block length such that lam**-B <= 1e4 keeps the rescaled cumulative sums well conditioned
    B = int(min(4096, max(1, math.floor(math.log(1e4) / -math.log(lam)))))
    r = np.arange(B, dtype=np.float64)
    pw = lam**r
    ipw = lam**-r
    pw1 = pw * lam
    out = np.empty(n)
    carry = 0.0
    for s0 in range(0, n, B):
        blk = d[s0 : s0 + B]
        k = blk.size
        out[s0 : s0 + k] = np.cumsum(blk * ipw[:k]) * pw[:k] + carry * pw1[:k]
        carry = out[s0 + k - 1]
    return out


def _areas(lr, lam) -> tuple[np.ndarray, np.ndarray]:
    eta = np.asarray(lr, dtype=np.float64).ravel()
    if not np.all(np.isfinite(eta)):
        raise ValueError("lr must be finite")
    lam = _check_lam(lam)
    d = np.zeros_like(eta)
    d[1:] = eta[:-1] - eta[1:]
    return np.cumsum(eta), np.cumsum(_decay_filter(d, lam))


def lr_areas(lr, lam=0.999) -> tuple[list[float], list[float]]:
    """``(S1, S2)`` for every step s = 1..len(lr), as lists indexed s - 1."""
    s1, s2 = _areas(lr, lam)
    return s1.tolist(), s2.tolist()


def _steps_index(steps, n: int) -> np.ndarray:
    s = np.asarray(steps, dtype=np.float64).ravel()
    if s.size and (not np.all(s == np.floor(s)) or s.min() < 1 or s.max() > n):
        raise ValueError(f"steps must be integers in [1, {n}] (1-based, len(lr) = {n})")
    return s.astype(np.int64) - 1


_SUPPORTS = [  # every subset of (L0, A, C) that may be non-zero, largest first
    [j for j in range(3) if mask >> j & 1] for mask in (7, 6, 5, 3, 4, 2, 1, 0)
]


def _solve_linear(alpha: float, log_s1: np.ndarray, s2: np.ndarray, y: np.ndarray):
    """Least-squares (L0, A, C) >= 0 for a fixed alpha; returns (coef, sse).

    The law's terms have signs: L0 is the loss floor (>= 0 for a cross-entropy), A scales
    the power-law decrease and C the annealing drop. Unconstrained, a short or flat stretch
    makes L0 and A trade off into huge opposite values (L0 = -7400, A = +7400) that fit the
    points but mean nothing and extrapolate badly. With three unknowns the non-negative
    optimum is found exactly by solving every support and keeping the best feasible one."""
    X = np.column_stack([np.ones_like(y), np.exp(-alpha * log_s1), -s2])
    scale = np.sqrt((X * X).sum(axis=0))
    scale[scale == 0] = 1.0
    Xs = X / scale
    best_coef, best_sse = np.zeros(3), float(y @ y)
    for support in _SUPPORTS[:-1]:
        sub, *_ = np.linalg.lstsq(Xs[:, support], y, rcond=None)
        if np.any(sub < 0):
            continue
        coef = np.zeros(3)
        coef[support] = sub
        resid = y - Xs @ coef
        sse = float(resid @ resid)
        if sse < best_sse * (1 - 1e-12):
            best_coef, best_sse = coef, sse
    return best_coef / scale, best_sse


def fit_lr_law(lr, steps, loss, lam=0.999) -> dict:
    """Fit ``L0, A, alpha, C`` by least squares on the given (1-based) steps.

    Returns ``{"L0", "A", "alpha", "C", "sse"}`` as floats, with L0, A, C >= 0. alpha is
    searched in [1e-3, 5]. Points with a missing / non-finite loss are ignored.
    """
    s1, s2 = _areas(lr, lam)
    idx = _steps_index(steps, s1.size)
    y = np.asarray(loss, dtype=np.float64).ravel()
    if y.shape != idx.shape:
        raise ValueError("steps and loss must have the same length")
    keep = np.isfinite(y)
    idx, y = idx[keep], y[keep]
    if idx.size < 4:
        raise ValueError("need at least 4 finite loss points to fit 4 parameters")
    x1, x2 = s1[idx], s2[idx]
    if np.any(x1 <= 0):
        raise ValueError("S1 (cumulative LR) must be > 0 at every fitted step")
    log_s1 = np.log(x1)

    def sse(log_alpha: float) -> float:
        return _solve_linear(math.exp(log_alpha), log_s1, x2, y)[1]

    grid = np.linspace(math.log(ALPHA_MIN), math.log(ALPHA_MAX), _GRID)
    values = [sse(g) for g in grid]
    k = int(np.argmin(values))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, _GRID - 1)]
    # golden-section search on [lo, hi] (log alpha)
    c = hi - _GOLDEN * (hi - lo)
    d = lo + _GOLDEN * (hi - lo)
    fc, fd = sse(c), sse(d)
    for _ in range(80):
        if hi - lo < 1e-10:
            break
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - _GOLDEN * (hi - lo)
            fc = sse(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + _GOLDEN * (hi - lo)
            fd = sse(d)
    candidates = [(values[k], grid[k]), (fc, c), (fd, d)]
    _, best = min(candidates)
    alpha = math.exp(best)
    coef, err = _solve_linear(alpha, log_s1, x2, y)
    return {
        "L0": float(coef[0]),
        "A": float(coef[1]),
        "alpha": float(alpha),
        "C": float(coef[2]),
        "sse": float(err),
    }


def lr_law_predict(params: dict, lr, steps, lam=0.999) -> list[float | None]:
    """Predicted loss at the given 1-based steps; ``None`` where S1(s) <= 0."""
    s1, s2 = _areas(lr, lam)
    idx = _steps_index(steps, s1.size)
    x1, x2 = s1[idx], s2[idx]
    L0, A, alpha, C = (float(params[k]) for k in ("L0", "A", "alpha", "C"))
    out: list[float | None] = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pred = L0 + A * np.power(np.where(x1 > 0, x1, 1.0), -alpha) - C * x2
    for ok, p in zip((x1 > 0).tolist(), pred.tolist(), strict=True):
        out.append(float(p) if ok and math.isfinite(p) else None)
    return out
