"""Shared input cleaning and None-aware arithmetic for the analysis package.

Conventions used everywhere in ``trainers.analysis``:

* An undefined value is ``None`` (never NaN). Inputs may use ``None`` *or* NaN for a missing
  entry; both are read as missing.
* A metric that needs a missing entry is ``None`` (strict propagation: no skipping).
* Series are lists of ``[step, value]`` pairs (or an ``(n, 2)`` array). Points whose value is
  missing or not finite are dropped. Steps must be integers; if a step occurs more than once
  the last occurrence wins (the same rule as a re-sent point in ``ContinualState``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

import numpy as np

Number = float | int


def as_float_or_none(x) -> float | None:
    """Return ``float(x)``, or ``None`` for ``None`` / NaN / +-inf."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the values, ``None`` if any of them is ``None`` or there are none."""
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return math.fsum(vals) / len(vals)


def sub_or_none(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return a - b


def as_matrix(m, name: str, square: bool = False) -> list[list[float | None]]:
    """Validate a 2-D table and return it as lists of ``float | None``."""
    if m is None:
        raise ValueError(f"{name} is required")
    rows = [list(r) for r in m]
    if not rows:
        raise ValueError(f"{name} must have at least one row")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError(f"{name} must be rectangular")
    if square and width != len(rows):
        raise ValueError(f"{name} must be square (T x T), got {len(rows)} x {width}")
    return [[as_float_or_none(x) for x in r] for r in rows]


def as_int(x, name: str = "step") -> int:
    if isinstance(x, bool):
        raise ValueError(f"{name} must be an integer, got {x!r}")
    f = float(x)
    if not math.isfinite(f) or f != math.floor(f):
        raise ValueError(f"{name} must be an integer, got {x!r}")
    return int(f)


def check_boundaries(boundaries: Sequence) -> list[int]:
    """Boundaries (last step of each stage) must be a non-empty, strictly increasing int list."""
    b = [as_int(x, "boundary") for x in boundaries]
    if not b:
        raise ValueError("boundaries must not be empty")
    if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
        raise ValueError("boundaries must be strictly increasing")
    return b


def clean_points(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(steps, values)`` as float64 arrays sorted by step, unique, finite values.

    Points with a missing / non-finite value are dropped first; among equal steps the last
    occurrence wins.
    """
    s = np.asarray(steps, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if s.shape != v.shape:
        raise ValueError("steps and values must have the same length")
    if s.size and (not np.all(np.isfinite(s)) or not np.all(s == np.floor(s))):
        raise ValueError("steps must be finite integers")
    keep = np.isfinite(v)
    if not keep.all():
        s, v = s[keep], v[keep]
    if s.size > 1:
        if np.all(s[1:] > s[:-1]):  # fast path: already sorted and unique
            return s, v
        order = np.argsort(s, kind="stable")
        s, v = s[order], v[order]
        last = np.empty(s.size, dtype=bool)
        last[:-1] = s[1:] != s[:-1]
        last[-1] = True
        s, v = s[last], v[last]
    return s, v


def clean_series(points) -> tuple[np.ndarray, np.ndarray]:
    """Clean one series given as ``[[step, value], ...]`` or an ``(n, 2)`` array."""
    if points is None:
        return np.empty(0), np.empty(0)
    if isinstance(points, np.ndarray):
        arr = points.astype(np.float64, copy=False)
    else:
        pts = list(points)
        if not pts:
            return np.empty(0), np.empty(0)
        arr = np.asarray(pts, dtype=np.float64)  # None -> NaN
    if arr.size == 0:
        return np.empty(0), np.empty(0)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError("a series must be a list of [step, value] pairs")
    return clean_points(arr[:, 0], arr[:, 1])


def clean_all(series) -> list[tuple[np.ndarray, np.ndarray]]:
    if series is None:
        raise ValueError("series is required")
    return [clean_series(s) for s in series]


def value_at_or_before(steps: np.ndarray, values: np.ndarray, t) -> tuple[int, float] | None:
    """``(step, value)`` of the last point with step <= t, or ``None``."""
    k = int(np.searchsorted(steps, t, side="right")) - 1
    if k < 0:
        return None
    return int(steps[k]), float(values[k])


def stage_of(t: int, boundaries: list[int]) -> int:
    """Index of the stage containing step t: the first i with t <= boundaries[i]."""
    c = bisect.bisect_left(boundaries, t)
    if c == len(boundaries):
        raise ValueError(f"t={t} is after the last boundary {boundaries[-1]}")
    return c
