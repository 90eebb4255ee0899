"""Learning-rate schedules as pure, vectorised functions of the step.

Conventions (exact values, tested):
- Inside a stage of T steps, local step t = 1..T is the LR used by the t-th optimizer
  update of that stage; t = 0 is the value "before" the stage (only shown for step 0).
- Warmup of W steps: lr(t) = start + (peak - start) * t / W for t <= W, so lr(W) = peak.
  start = 0 ("zero") or the previous stage's LR at its last step ("previous": re-warming).
- After warmup the progress is p = (t - W) / (T - W), p = 1 at the last step t = T:
    constant: peak
    linear:   peak + (min_lr - peak) * p                        -> lr(T) = min_lr
    cosine:   min_lr + (peak - min_lr) * (1 + cos(pi p)) / 2      -> lr(T) = min_lr
    wsd:      peak until t_d = max(T - round(decay_fraction * T), W) (at least one decay
              step; decay never overlaps warmup); then with q = (t - t_d) / (T - t_d): min_lr + (peak - min_lr) * f(q), f = 1 - q (linear),
              (1 + cos(pi q)) / 2 (cosine), 1 - sqrt(q) (1-sqrt)  -> lr(t_d) = peak, lr(T) = min_lr
    infinite: cosine from peak to plateau_lr over cooldown_steps C after warmup
              (lr(W + C) = plateau), constant plateau, then over the last anneal_steps A
              an anneal with decay_shape from plateau to min_lr (lr(T) = min_lr;
              A = 0 keeps the plateau to the end; the anneal starts no earlier than W).
- Global step s belongs to the stage i with start_i < s <= end_i; lr_at(plan, 0) is the
  first stage's t = 0 value.
"""

from __future__ import annotations

import numpy as np

from trainers.plan import Plan, ScheduleSpec


def warmup(t: np.ndarray, w: int, start: float, peak: float) -> np.ndarray:
    return start + (peak - start) * np.clip(t / max(w, 1), 0.0, 1.0)


def linear_decay(p: np.ndarray, peak: float, min_lr: float) -> np.ndarray:
    return peak + (min_lr - peak) * p


def cosine_decay(p: np.ndarray, peak: float, min_lr: float) -> np.ndarray:
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + np.cos(np.pi * p))


def decay_factor(q: np.ndarray, shape: str) -> np.ndarray:
    """1 at q=0 falling to 0 at q=1."""
    if shape == "linear":
        return 1.0 - q
    if shape == "cosine":
        return 0.5 * (1.0 + np.cos(np.pi * q))
    if shape == "1-sqrt":
        return 1.0 - np.sqrt(q)
    raise ValueError(f"unknown decay shape {shape!r}")


def wsd(
    t: np.ndarray, total: int, w: int, peak: float, min_lr: float, fraction: float, shape: str
) -> np.ndarray:
    t_d = max(total - max(1, round(fraction * total)), min(w, total - 1))  # decay after warmup
    d = total - t_d
    q = np.clip((t - t_d) / d, 0.0, 1.0)
    return min_lr + (peak - min_lr) * decay_factor(q, shape)


def infinite(t: np.ndarray, total: int, w: int, peak: float, s: ScheduleSpec) -> np.ndarray:
    plateau = s.plateau_lr if s.plateau_lr is not None else peak
    c = max(s.cooldown_steps, 1)
    cool = plateau + (peak - plateau) * 0.5 * (1.0 + np.cos(np.pi * np.clip((t - w) / c, 0, 1)))
    if s.anneal_steps == 0:
        return cool
    t_a = max(total - s.anneal_steps, min(w, total - 1))  # anneal never overlaps warmup
    a = total - t_a
    q = np.clip((t - t_a) / a, 0.0, 1.0)
    return np.where(t > t_a, s.min_lr + (plateau - s.min_lr) * decay_factor(q, s.decay_shape), cool)


def stage_lr(t: np.ndarray, total: int, peak: float, s: ScheduleSpec, prev_lr: float) -> np.ndarray:
    """LR at local steps t (0..total) of one stage; see the module docstring."""
    t = np.asarray(t, dtype=np.float64)
    w = min(s.warmup_steps, total)
    start = prev_lr if s.warmup_from == "previous" else 0.0
    p = np.clip((t - w) / max(total - w, 1), 0.0, 1.0)
    if s.kind == "constant":
        body = np.full_like(t, peak)
    elif s.kind == "linear":
        body = linear_decay(p, peak, s.min_lr)
    elif s.kind == "cosine":
        body = cosine_decay(p, peak, s.min_lr)
    elif s.kind == "wsd":
        body = wsd(t, total, w, peak, s.min_lr, s.decay_fraction, s.decay_shape)
    elif s.kind == "infinite":
        body = infinite(t, total, w, peak, s)
    else:
        raise ValueError(f"unknown schedule {s.kind!r}")
    if w == 0:
        return body
    return np.where(t <= w, warmup(t, w, start, peak), body)


def lr_at(plan: Plan, steps: np.ndarray) -> np.ndarray:
    """LR of the whole pipeline at global steps (0 = before training; clamped to the end)."""
    steps = np.asarray(steps, dtype=np.int64)
    bounds = plan.stage_bounds()
    steps = np.clip(steps, 0, bounds[-1][1])
    out = np.zeros(steps.shape, dtype=np.float64)
    prev_lr = 0.0
    for (start, end), st in zip(bounds, plan.stages, strict=True):
        total = end - start
        lo = -1 if start == 0 else start  # stage 0 also owns step 0
        mask = (steps > lo) & (steps <= end)
        peak = st.optimizer.lr
        out[mask] = stage_lr(steps[mask] - start, total, peak, st.schedule, prev_lr)
        prev_lr = float(stage_lr(np.array([total]), total, peak, st.schedule, prev_lr)[0])
    return out


def stage_lr_table(plan: Plan, stage_index: int) -> np.ndarray:
    """LR for every global step of one stage, indexed by step - start (index 0 = start)."""
    start, end = plan.stage_bounds()[stage_index]
    return lr_at(plan, np.arange(start, end + 1))
