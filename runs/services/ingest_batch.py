"""One ingest batch as sorted columns (no database here).

``batch_from_points`` validates a batch with a few C-speed passes (``zip``, ``map(type)``,
numpy), falling back to a per-point pass only to name the first bad point or to normalise
unusual but valid types (numpy scalars). The batch comes out sorted by (key, step) with
duplicates removed (the last sent wins), which is what the live push, the analysis and the
rollups need. ``append_rollups`` aggregates the points of series whose batch starts after
everything already stored, so their buckets can be merged instead of rebuilt;
``copy_binary`` encodes columns as PostgreSQL's binary COPY format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from runs.models.metrics import (  # the storage geometry, shared with the reads
    MAX_KEY_LENGTH,
    ROLLUP_BASE,
    ROLLUP_FANOUT,
    ROLLUP_LEVELS,
)
from trainers.plan import MAX_STEP


class StepRange(NamedTuple):
    """The steps a writer may send (inclusive), and what to call them in an error."""

    lo: int
    hi: int
    what: str


class IngestPoint(NamedTuple):
    key: str
    step: int
    value: float
    time: float | None = None


class PointColumns(NamedTuple):
    """A batch as four equally long columns (what the API parser builds: no object per
    point). ``times`` entries may be None (= now)."""

    keys: Sequence
    steps: Sequence
    values: Sequence
    times: Sequence


class IngestError(ValueError):
    """A bad point; ``index`` is its position in the batch."""

    def __init__(self, index: int, field: str, reason: str):
        self.index, self.field, self.reason = index, field, reason
        super().__init__(f"points[{index}].{field}: {reason}")


@dataclass(slots=True)
class Batch:
    """Points sorted by (key index, step), each (key, step) once."""

    keys: list[str]  # distinct keys; ``code`` indexes this list
    code: np.ndarray  # int64 per point
    step: np.ndarray  # int64
    value: np.ndarray  # float64
    time: np.ndarray  # float64
    starts: np.ndarray  # index of each key's first point (len(keys) + 1 entries, last = n)

    def __len__(self) -> int:
        return len(self.step)

    def key_slice(self, i: int) -> slice:
        return slice(int(self.starts[i]), int(self.starts[i + 1]))

    def per_key(self) -> dict[str, tuple[list[int], list[float]]]:
        """key -> (steps, values) as Python lists, for the live push and the analysis."""
        steps, values = self.step.tolist(), self.value.tolist()
        out = {}
        for i, key in enumerate(self.keys):
            lo, hi = int(self.starts[i]), int(self.starts[i + 1])
            out[key] = (steps[lo:hi], values[lo:hi])
        return out


_SIMPLE_KEY_TYPES = {str}
_SIMPLE_STEP_TYPES = {int}
_SIMPLE_NUMBER_TYPES = ({float}, {int}, {float, int})


def batch_from_points(
    points: Sequence[IngestPoint] | PointColumns, now: float, step_range: StepRange | None = None
) -> Batch:
    """Validate, sort and de-duplicate. The first bad point raises IngestError. Steps are at
    most ``MAX_STEP`` and within ``step_range`` when given."""
    step_range = step_range or StepRange(0, MAX_STEP, "the allowed steps")
    if isinstance(points, PointColumns):
        keys, steps, values, times = points
        simple = len(keys) == len(steps) == len(values) == len(times)
    else:
        try:
            keys, steps, values, times = zip(*points, strict=True)
            simple = True
        except (TypeError, ValueError):  # not all 4-tuples
            simple = False
    columns = None
    if simple and (
        set(map(type, keys)) == _SIMPLE_KEY_TYPES
        and set(map(type, steps)) == _SIMPLE_STEP_TYPES
        and set(map(type, values)) in _SIMPLE_NUMBER_TYPES
    ):
        time_types = set(map(type, times))
        if type(None) in time_types:
            times = [now if t is None else t for t in times]
            time_types.discard(type(None))
            time_types.add(float)
        if time_types in _SIMPLE_NUMBER_TYPES:
            try:
                columns = _columns(keys, steps, values, times, step_range)
            except (OverflowError, ValueError):
                pass
    if columns is None:
        if isinstance(points, PointColumns):
            points = list(zip(*points, strict=True))
        columns = _columns(*_checked_columns(points, now, step_range), step_range)
    return _sorted(*columns)


def _columns(keys, steps, values, times, step_range: StepRange):
    n = len(keys)
    distinct = list(dict.fromkeys(keys))
    for k in distinct:
        if not k or len(k) > MAX_KEY_LENGTH or "\x00" in k:
            raise ValueError(k)
    index = {k: i for i, k in enumerate(distinct)}
    code = np.fromiter(map(index.__getitem__, keys), np.int64, n)
    step = np.fromiter(steps, np.int64, n)  # OverflowError past bigint
    value = np.fromiter(values, np.float64, n)  # OverflowError for huge ints
    wall = np.fromiter(times, np.float64, n)
    lo, hi = step_range.lo, step_range.hi
    if (step < lo).any() or (step > hi).any():
        raise ValueError("out of range")
    if not np.isfinite(value).all() or not np.isfinite(wall).all():
        raise ValueError("out of range")
    return distinct, code, step, value, wall


def _sorted(keys, code, step, value, wall) -> Batch:
    order = np.lexsort((step, code))  # stable: equal (key, step) keep their order
    code, step, value, wall = code[order], step[order], value[order], wall[order]
    n = len(step)
    if n > 1:
        # Of each run of equal (key, step), keep the last one sent.
        keep = np.ones(n, dtype=bool)
        keep[:-1] = (code[1:] != code[:-1]) | (step[1:] != step[:-1])
        if not keep.all():
            code, step, value, wall = code[keep], step[keep], value[keep], wall[keep]
    starts = np.searchsorted(code, np.arange(len(keys) + 1))
    return Batch(keys, code, step, value, wall, starts)


def _checked_columns(points: Sequence, now: float, step_range: StepRange):
    """The per-point pass: names the first bad point, or returns normalised columns."""
    keys, steps, values, times = [], [], [], []
    for i, p in enumerate(points):
        try:
            key, step, value, t = p
        except (TypeError, ValueError):
            raise IngestError(i, "(point)", "must be (key, step, value, time)") from None
        if not isinstance(key, str) or not key:
            raise IngestError(i, "key", "must be a non-empty string")
        if len(key) > MAX_KEY_LENGTH:
            raise IngestError(i, "key", f"longer than {MAX_KEY_LENGTH} characters")
        if "\x00" in key:
            raise IngestError(i, "key", "must not contain NUL characters")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise IngestError(i, "step", "must be a non-negative integer")
        if step > MAX_STEP:
            raise IngestError(i, "step", f"must be below 2**53 ({MAX_STEP + 1})")
        if not step_range.lo <= step <= step_range.hi:
            lo, hi, what = step_range
            raise IngestError(i, "step", f"step {step} is outside {what} (steps {lo} to {hi})")
        keys.append(key)
        steps.append(int(step))
        values.append(_number(i, "value", value, "must be finite"))
        times.append(
            now if t is None else _number(i, "time", t, "must be a finite number of unix seconds")
        )
    return keys, steps, values, times


def _number(i: int, field: str, x, reason: str) -> float:
    """x as a finite float (ints and float subclasses accepted, bools refused) or IngestError."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise IngestError(i, field, "must be a number" if field == "value" else reason)
    try:
        x = float(x)
    except OverflowError:
        raise IngestError(i, field, reason) from None
    if not math.isfinite(x):
        raise IngestError(i, field, reason)
    return x


# ------------------------------------------------------------------ rollups of appended points


@dataclass(slots=True)
class Rollups:
    series_id: np.ndarray
    level: np.ndarray
    bucket: np.ndarray
    min_value: np.ndarray
    max_value: np.ndarray
    last_step: np.ndarray
    last_value: np.ndarray
    count: np.ndarray

    def columns(self) -> list[np.ndarray]:
        return [getattr(self, f) for f in self.__slots__]


def append_rollups(series_id: np.ndarray, step: np.ndarray, value: np.ndarray) -> Rollups:
    """Every level's buckets of these points alone (sorted by series, step). Merged into the
    stored buckets with min/max/sum and the later last point, this is exact as long as no
    point of the batch was stored before, which the caller guarantees."""
    # Level 0 from the points, each higher level from the level below.
    sid, bucket = series_id, step // ROLLUP_BASE
    mn = mx = value
    last_step, last_value, count = step, value, np.ones(len(step), dtype=np.int64)
    levels = []
    for level in range(ROLLUP_LEVELS):
        if level:
            bucket = bucket // ROLLUP_FANOUT
        n = len(bucket)
        new = np.ones(n, dtype=bool)
        new[1:] = (sid[1:] != sid[:-1]) | (bucket[1:] != bucket[:-1])
        first = np.flatnonzero(new)
        last = np.append(first[1:], n) - 1
        sid, bucket = sid[first], bucket[first]
        mn, mx = np.minimum.reduceat(mn, first), np.maximum.reduceat(mx, first)
        last_step, last_value = last_step[last], last_value[last]
        count = np.add.reduceat(count, first)
        levels.append(
            (sid, np.full(len(first), level), bucket, mn, mx, last_step, last_value, count)
        )
    return Rollups(*(np.concatenate(cols) for cols in zip(*levels, strict=True)))


# ------------------------------------------------------------------ binary COPY

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def copy_binary(columns: Sequence[np.ndarray]) -> bytes:
    """Rows of 8-byte columns (bigint for integer arrays, double precision otherwise) in
    PostgreSQL's binary COPY format, built by numpy in one go instead of a Python loop."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, c in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"col{i}", ">i8" if c.dtype.kind in "iub" else ">f8")]
    rows = np.empty(len(columns[0]), dtype=fields)
    rows["n"] = len(columns)
    for i, c in enumerate(columns):
        rows[f"len{i}"] = 8
        rows[f"col{i}"] = c
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER
