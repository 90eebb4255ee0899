"""Loss law under learning-rate annealing ("Scaling Law with Learning Rate Annealing",
Tissue et al. 2024).

    L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)

With eta_s the LR used by step s (steps are 1-based):

* S1(s) = sum_{i<=s} eta_i                                  forward area
* m_1 = 0, m_i = lam * m_{i-1} + max(eta_{i-1} - eta_i, 0)   annealing momentum
* S2(s) = sum_{i<=s} m_i                                     annealing area

**Warm-up (what we chose, following the paper).** The paper counts the warm-up LR in the
forward area S1 but does not count the rising LR as annealing. Without the ``max`` above,
every warm-up step would be *negative* annealing: S2 goes below zero and stays there, and a
fit then needs C = 0 or L0 = 0 to explain a curve that drops fastest exactly while S2 falls
(the shipped demo fitted L0 = 0 on every stage). So:

* S2 counts LR *decreases* only: a per-step rise is clipped at 0. Every schedule Stagewise
  can express rises only during a warm-up (from zero, or re-warming from the previous stage
  at a stage boundary), so for plans this is exactly "warm-up excluded from S2"; any other LR
  curve (an external run's) is read the same way.
* The fit leaves out the loss points of warm-up steps (a step whose LR is above the previous
  step's; the first step rises from 0), as the paper's fits do: there the loss is the
  transient from the initialisation, which the law does not model (S1 -> 0 makes S1^-alpha
  diverge while the real loss is bounded by the untrained model's). S1 still includes the
  warm-up LR.

**lam.** The paper's lam = 0.999 suits runs of 10^4-10^5 steps: the annealing momentum
lasts about 1 / (1 - lam) steps. A small model trained for a few hundred steps follows an LR
drop within tens of steps, and lam = 0.999 then credits a long, slow decay (cosine) with far
more annealing than it gives (on the shipped demo, a WSD fit with lam = 0.999 predicted the
cosine run 21 % too low). So unless ``lam`` is given, ``fit_lr_law`` picks lam from
``LAMBDAS`` by least squares like the other parameters (profile least squares; where the data
cannot tell the candidates apart, e.g. without any decay, the paper's 0.999 is kept), and
``lr_law_predict`` uses the fitted value (``params["lam"]``).

**Solving.** For fixed (alpha, lam) the law is linear in (L0, A, C) >= 0, which is solved
exactly (every support of the non-negative solution is tried); alpha is searched on a
log-spaced grid and refined by golden-section search.

**Bounded grids.** Every function takes the LR either per step (``lr[i]`` = LR of step
i + 1) or at increasing grid steps ``nodes`` starting at 1 (``lr[k]`` = LR of step
``nodes[k]``). Between nodes the LR is taken as linear and S1 / S2 are summed over the steps
in closed form, so a node at every step is exact and ``schedule_nodes`` gives a grid of a
few thousand points for any budget: a 10^12-step plan never needs per-step arrays.

**Identifiability.** ``fit_lr_law`` also says what the data cannot pin down
(``undetermined``): alpha on a search bound, L0 or A forced to 0 by the non-negativity
constraint (the unconstrained optimum has the wrong sign), or a parameter whose approximate
95 % confidence interval, +-2 standard errors from the Gauss-Newton covariance
sigma^2 (J^T J)^-1 at the optimum, reaches zero (the residuals cannot tell its sign). C is
left out of that last test when the LR does not decrease over the fitted steps: there C has
no effect on the fit (``annealing_in_fit`` is False) and only an extrapolation needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

ALPHA_MIN = 1e-3
ALPHA_MAX = 5.0
DEFAULT_LAM = 0.999
# lam candidates of the fit: momentum lifetimes 1 / (1 - lam) from 1 to 1000 steps
LAMBDAS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
PARAMS = ("L0", "A", "alpha", "C")
_GRID = 121
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _check_lam(lam) -> float:
    lam = float(lam)
    if not (0.0 <= lam <= 1.0):
        raise ValueError("lam must be in [0, 1]")
    return lam


# ---------------------------------------------------------------------------- areas


def _curve(lr, nodes) -> tuple[np.ndarray, np.ndarray]:
    """(node steps, LR at the nodes) as float64 arrays; per-step LR when ``nodes`` is None."""
    eta = np.asarray(lr, dtype=np.float64).ravel()
    if not np.all(np.isfinite(eta)):
        raise ValueError("lr must be finite")
    if nodes is None:
        return np.arange(1, eta.size + 1, dtype=np.float64), eta
    g = np.asarray(nodes, dtype=np.float64).ravel()
    if g.shape != eta.shape:
        raise ValueError("nodes and lr must have the same length")
    if g.size and (g[0] != 1 or not np.all(g == np.floor(g)) or np.any(np.diff(g) <= 0)):
        raise ValueError("nodes must be strictly increasing integer steps starting at 1")
    return g, eta


def _linear_recurrence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x_k = a_k * x_{k-1} + b_k (x_{-1} = 0) for 0 <= a_k <= 1, vectorised in blocks.

    Within a block x_{s0+t} = P_t * (a_{s0} x_{s0-1} + sum_{j<=t} b_{s0+j} / P_j) with P the
    running product of a after the block's first index; a block ends before P falls below
    1e-6, which keeps the rescaled sums well conditioned and never divides by zero."""
    n = b.size
    if n == 0 or not np.any(a):
        return b.copy()
    x = np.empty(n)
    carry, s0 = 0.0, 0
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
    while s0 < n:
        logp = np.concatenate([[0.0], np.cumsum(log_a[s0 + 1 : s0 + 4096])])
        k = max(1, int(np.searchsorted(-logp, -math.log(1e-6), side="right")))
        p = np.exp(logp[:k])
        x[s0 : s0 + k] = p * (a[s0] * carry + np.cumsum(b[s0 : s0 + k] / p))
        carry = x[s0 + k - 1]
        s0 += k
    return x


def _areas_at_nodes(g: np.ndarray, eta: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 at every node, the LR being linear between consecutive nodes.

    Over the w steps from node k-1 to node k the LR changes by the same amount every step,
    so the per-step decrease d = max(eta_{k-1} - eta_k, 0) / w is constant and, with
    G(w) = sum_{j<w} lam^j,
        S1 += w * eta_{k-1} + (eta_k - eta_{k-1}) * (w + 1) / 2
        m_k = lam^w * m_{k-1} + d * G(w)
        S2 += m_{k-1} * lam * G(w) + d * (w - lam * G(w)) / (1 - lam)   (w(w+1)/2 if lam = 1)
    which is the per-step recursion summed exactly (w = 1 gives it back)."""
    n = g.size
    s1, s2 = np.empty(n), np.empty(n)
    if n == 0:
        return s1, s2
    w = np.diff(g)
    d = np.maximum(eta[:-1] - eta[1:], 0.0) / w  # a rise (warm-up) is not annealing
    s1[0] = eta[0]
    s1[1:] = eta[0] + np.cumsum(w * eta[:-1] + (eta[1:] - eta[:-1]) * (w + 1) / 2)
    if lam == 1.0:
        pw, gw, within = np.ones_like(w), w, d * w * (w + 1) / 2
    else:
        with np.errstate(under="ignore"):
            pw = lam**w
        gw = (1 - pw) / (1 - lam)
        within = d * (w - lam * gw) / (1 - lam)
    m = np.zeros(n)
    m[1:] = _linear_recurrence(pw, d * gw)
    s2[0] = 0.0
    s2[1:] = np.cumsum(m[:-1] * lam * gw + within)
    return s1, s2


def lr_areas(lr, lam=DEFAULT_LAM, nodes=None) -> tuple[list[float], list[float]]:
    """``(S1, S2)`` at every step s = 1..len(lr), or at every node when ``nodes`` is given."""
    g, eta = _curve(lr, nodes)
    s1, s2 = _areas_at_nodes(g, eta, _check_lam(lam))
    return s1.tolist(), s2.tolist()


def _node_index(g: np.ndarray, steps) -> np.ndarray:
    s = np.asarray(steps, dtype=np.float64).ravel()
    idx = np.searchsorted(g, s)
    ok = idx < g.size
    ok[ok] = g[idx[ok]] == s[ok]
    if not np.all(ok):
        n = int(g[-1]) if g.size else 0
        raise ValueError(f"steps must be integer steps of the LR curve (1..{n}, on its nodes)")
    return idx


def _rising(eta: np.ndarray) -> np.ndarray:
    """Whether the LR rose into each node (a warm-up step); the first step rises from 0."""
    return eta > np.concatenate([[0.0], eta[:-1]])


def schedule_nodes(
    total: int, breakpoints: Iterable[int] = (), include: Iterable[int] = (), n: int = 4096
) -> np.ndarray:
    """About ``n`` grid steps in [1, total] (plus ``include``) to compute the areas on.

    Every segment between consecutive breakpoints (stage bounds, warm-up ends: where the LR
    may have a kink) gets a node at each end, log-spaced nodes crowding both ends (a warm-up
    or a final anneal is short next to a long segment) and evenly spaced ones in between; a
    segment short enough gets a node at every step, which makes its areas exact. ``include``
    adds steps that must be nodes (fitted or requested steps)."""
    total = int(total)
    if total < 1:
        raise ValueError("total must be >= 1")
    cuts = sorted({1, total, *(int(b) for b in breakpoints if 1 <= int(b) <= total)})
    per = max(16, n // max(1, len(cuts) - 1))
    parts = [np.asarray(cuts, dtype=np.int64)]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        span = hi - lo
        if span <= per:
            parts.append(np.arange(lo, hi + 1, dtype=np.int64))
            continue
        k = per // 3
        off = np.unique(np.round(np.geomspace(1, span, k)).astype(np.int64))
        even = np.round(np.linspace(lo, hi, per - 2 * k)).astype(np.int64)
        parts += [lo + off, hi - off, even]
    extra = np.asarray(list(include), dtype=np.int64).ravel()
    parts.append(extra[(extra >= 1) & (extra <= total)])
    return np.unique(np.concatenate(parts))


def plan_lr_curve(plan, include: Iterable[int] = (), n: int = 4096):
    """(grid steps, LR at them) of a ``trainers.plan.Plan``, on ``schedule_nodes``.

    Breakpoints are every stage's last step, first step and warm-up end (where the LR jumps
    or has a kink), so warm-ups and stage boundaries are exact; ``include`` adds steps that
    must be nodes. The LR comes from ``trainers.schedules.lr_at`` at the nodes only (imported
    here: the rest of this module needs nothing but numpy)."""
    from trainers.schedules import lr_at

    bounds = plan.stage_bounds()
    breaks = []
    for (start, end), st in zip(bounds, plan.stages, strict=True):
        breaks += [start, start + 1, end, start + min(st.schedule.warmup_steps, end - start)]
    nodes = schedule_nodes(bounds[-1][1], breaks, include, n=n)
    return nodes, lr_at(plan, nodes)


# ---------------------------------------------------------------------------- fit


_SUPPORTS = [  # every non-empty subset of (L0, A, C) that may be non-zero, largest first
    [j for j in range(3) if mask >> j & 1] for mask in (7, 6, 5, 3, 4, 2, 1)
]


def _solve_linear(alpha: float, log_s1: np.ndarray, s2: np.ndarray, y: np.ndarray):
    """Least-squares (L0, A, C) >= 0 for a fixed alpha (and lam); returns (coef, sse).

    The law's terms have signs: L0 is the loss floor (>= 0 for a cross-entropy), A scales
    the power-law decrease and C the annealing drop. Unconstrained, a short or flat stretch
    makes L0 and A trade off into huge opposite values (L0 = -7400, A = +7400) that fit the
    points but mean nothing and extrapolate badly. With three unknowns the non-negative
    optimum is found exactly by solving every support and keeping the best feasible one; one
    QR of the column-scaled design turns each support into a 3-row problem."""
    X = np.column_stack([np.ones_like(y), np.exp(-alpha * log_s1), -s2])
    scale = np.sqrt((X * X).sum(axis=0))
    scale[scale == 0] = 1.0
    Q, R = np.linalg.qr(X / scale)
    qy = Q.T @ y
    rest = max(float(y @ y) - float(qy @ qy), 0.0)  # the part of y no support can explain
    best_coef, best_sse = np.zeros(3), float(y @ y)
    for support in _SUPPORTS:
        sub, *_ = np.linalg.lstsq(R[:, support], qy, rcond=None)
        if np.any(sub < 0):
            continue
        coef = np.zeros(3)
        coef[support] = sub
        r = qy - R @ coef
        sse = float(r @ r) + rest
        if len(support) == 3:  # the unconstrained optimum is feasible: nothing beats it
            return coef / scale, sse
        if sse < best_sse * (1 - 1e-12):
            best_coef, best_sse = coef, sse
    return best_coef / scale, best_sse


def _fit_alpha(log_s1: np.ndarray, s2: np.ndarray, y: np.ndarray):
    """(alpha, (L0, A, C), sse): grid search on log alpha, then golden-section refinement."""

    def sse(log_alpha: float) -> float:
        return _solve_linear(math.exp(log_alpha), log_s1, s2, y)[1]

    grid = np.linspace(math.log(ALPHA_MIN), math.log(ALPHA_MAX), _GRID)
    values = [sse(g) for g in grid]
    k = int(np.argmin(values))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, _GRID - 1)]
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
    _, best = min([(values[k], grid[k]), (fc, c), (fd, d)])
    alpha = math.exp(best)
    coef, err = _solve_linear(alpha, log_s1, s2, y)
    return alpha, coef, err


def _standard_errors(params: dict, log_s1, s2, y, sse: float) -> dict[str, float | None]:
    """Gauss-Newton standard errors sqrt(diag(sigma^2 (J^T J)^-1)) of the free parameters.

    ``inf`` where J^T J is singular in that parameter's direction; ``None`` for a parameter
    held at 0 (and for alpha when A = 0: it then does nothing) or when there are no more
    points than free parameters."""
    L0, A, alpha, C = (params[k] for k in PARAMS)
    p = np.exp(-alpha * log_s1)
    cols = {"L0": np.ones_like(y), "A": p, "alpha": -A * log_s1 * p, "C": -s2}
    free = [k for k in PARAMS if params[k] > 0 and not (k == "alpha" and A == 0)]
    out: dict[str, float | None] = dict.fromkeys(PARAMS)
    if not free or y.size <= len(free):
        return out
    J = np.column_stack([cols[k] for k in free])
    norm = np.sqrt((J * J).sum(axis=0))
    norm[norm == 0] = 1.0
    _, sv, vt = np.linalg.svd(J / norm, full_matrices=False)
    sigma2 = sse / (y.size - len(free))
    singular = sv <= sv[0] * 1e-10
    weight = np.where(singular, 0.0, 1.0 / np.where(singular, 1.0, sv) ** 2)
    var = (vt**2 * weight[:, None]).sum(axis=0) * sigma2 / norm**2
    blind = (vt**2 * singular[:, None]).sum(axis=0) > 1e-12  # a flat direction involves it
    for k, v, b in zip(free, var, blind, strict=True):
        out[k] = math.inf if b else float(math.sqrt(v))
    return out


def _undetermined(params: dict, se: dict, annealing: bool) -> list[str]:
    """Why the data cannot pin the law down (empty when they can); see the module docstring."""
    why = []
    alpha = params["alpha"]
    if alpha <= ALPHA_MIN * (1 + 1e-9) or alpha >= ALPHA_MAX * (1 - 1e-9):
        why.append(f"α ran into its search bound ({ALPHA_MIN:g} … {ALPHA_MAX:g})")
    for k, name in (("L0", "the floor L0"), ("A", "the power-law term A")):
        if params[k] == 0:
            why.append(f"{name} had to be held at 0 (its best unconstrained value is negative)")
    for k in PARAMS:
        v, s = params[k], se[k]
        if (k != "C" or annealing) and v > 0 and s is not None and not 2 * s < v:
            label = "α" if k == "alpha" else k
            why.append(f"{label} = {v:.3g} ± {2 * s:.2g} (95 %): the data do not fix it")
    return why


def fit_lr_law(lr, steps, loss, lam: float | None = None, nodes=None) -> dict:
    """Fit ``L0, A, alpha, C`` (and lam unless given) by least squares on the given steps.

    ``lr`` is per step, or at ``nodes`` (see the module docstring); the fitted ``steps`` must
    be steps of that curve. Points with a missing / non-finite loss, and points of warm-up
    steps, are left out. Returns ``{"L0", "A", "alpha", "C", "lam", "sse", "points", "se",
    "annealing_in_fit", "undetermined"}``: L0, A, C >= 0, alpha in [1e-3, 5], ``points`` the
    number of fitted points, ``se`` each parameter's standard error (``None`` where it is
    held at 0), ``annealing_in_fit`` whether the LR decreases over the fitted steps, and
    ``undetermined`` the reasons the data cannot pin the law down (empty when they can).
    """
    g, eta = _curve(lr, nodes)
    idx = _node_index(g, steps)
    y = np.asarray(loss, dtype=np.float64).ravel()
    if y.shape != idx.shape:
        raise ValueError("steps and loss must have the same length")
    keep = np.isfinite(y) & ~_rising(eta)[idx]
    idx, y = idx[keep], y[keep]
    if idx.size < 4:
        raise ValueError("need at least 4 finite loss points after the warm-up to fit the law")
    best = None
    # the paper's 0.999 first: where the data cannot tell lam apart (no decay), it is kept
    for lm in reversed(LAMBDAS) if lam is None else (_check_lam(lam),):
        s1, s2 = _areas_at_nodes(g, eta, lm)
        x1, x2 = s1[idx], s2[idx]
        if np.any(x1 <= 0):
            raise ValueError("S1 (cumulative LR) must be > 0 at every fitted step")
        alpha, coef, err = _fit_alpha(np.log(x1), x2, y)
        if best is None or err < best[0] * (1 - 1e-9):
            best = (err, lm, alpha, coef, np.log(x1), x2)
    err, lm, alpha, coef, log_s1, x2 = best
    params = {"L0": float(coef[0]), "A": float(coef[1]), "alpha": float(alpha),
              "C": float(coef[2])}  # fmt: skip
    se = _standard_errors(params, log_s1, x2, y, err)
    annealing = bool(np.ptp(x2) > 1e-12 * max(1.0, float(np.max(np.abs(x2)))))
    return {
        **params,
        "lam": float(lm),
        "sse": float(err),
        "points": int(y.size),
        "se": se,
        "annealing_in_fit": annealing,
        "undetermined": _undetermined(params, se, annealing),
    }


def lr_law_predict(params: dict, lr, steps, lam: float | None = None, nodes=None) -> list:
    """Predicted loss at the given steps of the LR curve (per step, or at ``nodes``);
    ``None`` where S1(s) <= 0. lam is ``params["lam"]`` unless given (0.999 if neither)."""
    g, eta = _curve(lr, nodes)
    idx = _node_index(g, steps)
    lm = lam if lam is not None else params.get("lam", DEFAULT_LAM)
    s1, s2 = _areas_at_nodes(g, eta, _check_lam(lm))
    x1, x2 = s1[idx], s2[idx]
    L0, A, alpha, C = (float(params[k]) for k in PARAMS)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pred = L0 + A * np.power(np.where(x1 > 0, x1, 1.0), -alpha) - C * x2
    return [
        float(p) if ok and math.isfinite(p) else None
        for ok, p in zip((x1 > 0).tolist(), pred.tolist(), strict=True)
    ]
