"""Batched, idempotent metric ingest (DESIGN.md "Metrics: the hot path").

One batch = one transaction: COPY the points into a temporary table, create missing series,
INSERT .. ON CONFLICT (series_id, step) DO UPDATE (a re-sent point replaces, never
duplicates), then rebuild the touched rollup buckets level by level from the level below,
so the downsampled levels stay exact even when a value is replaced. After commit, one
message per batch goes to the run's channel group.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

ROLLUP_BASE = 16  # steps per bucket at level 0
ROLLUP_FANOUT = 4  # each level's buckets are 4x wider than the level below
ROLLUP_LEVELS = 10  # level 9 buckets span 16 * 4**9 ≈ 4.2M steps
MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class IngestPoint:
    key: str
    step: int
    value: float
    time: float | None = None


class IngestError(ValueError):
    """A bad point; ``index`` is its position in the batch."""

    def __init__(self, index: int, field: str, reason: str):
        self.index, self.field, self.reason = index, field, reason
        super().__init__(f"points[{index}].{field}: {reason}")


def bucket_width(level: int) -> int:
    return ROLLUP_BASE * ROLLUP_FANOUT**level


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _number(i: int, field: str, x, reason: str) -> float:
    """x as a finite float (ints and float subclasses accepted, bools refused) or IngestError."""
    if type(x) is not float:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise IngestError(i, field, "must be a number" if field == "value" else reason)
        try:
            x = float(x)
        except OverflowError:
            raise IngestError(i, field, reason) from None
    if x - x != 0.0:  # inf - inf and nan - nan are nan: one test for both
        raise IngestError(i, field, reason)
    return x


@dataclass(slots=True)
class _Prepared:
    copy_text: str
    series: dict[str, tuple[list[int], list[float]]]  # key -> (steps, values) for the push


def _prepare(points: Sequence[IngestPoint], now: float) -> _Prepared:
    """Validate every point and build the COPY text and the live message in one pass (three
    separate loops were a third of a 10,000-point batch). The first bad point raises
    IngestError with its index, field and reason."""
    escaped: dict[str, str] = {}
    series: dict[str, tuple[list[int], list[float]]] = {}
    lines = []
    for i, p in enumerate(points):
        key = p.key
        esc = escaped.get(key) if type(key) is str else None
        if esc is None:
            if not isinstance(key, str) or not key:
                raise IngestError(i, "key", "must be a non-empty string")
            if len(key) > MAX_KEY_LENGTH:
                raise IngestError(i, "key", f"longer than {MAX_KEY_LENGTH} characters")
            esc = escaped[key] = key.translate(_COPY_ESCAPES)
            series[key] = ([], [])
        step = p.step
        if type(step) is not int or step < 0:
            raise IngestError(i, "step", "must be a non-negative integer")
        value = _number(i, "value", p.value, "must be finite")
        t = (
            now
            if p.time is None
            else _number(i, "time", p.time, "must be a finite number of unix seconds")
        )
        lines.append(f"{esc}\t{step}\t{value!r}\t{t!r}\n")
        steps, values = series[key]
        steps.append(step)
        values.append(value)
    return _Prepared("".join(lines), series)


# Created once per connection and emptied at commit: creating and dropping a temp table per
# batch bloats the system catalogs and made ingest slower and slower over a long run.
_TMP = """
CREATE TEMP TABLE IF NOT EXISTS ingest_tmp (
    key text NOT NULL, step bigint NOT NULL, value double precision NOT NULL,
    wall_time double precision NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_touched (
    series_id bigint NOT NULL, step bigint NOT NULL, value double precision NOT NULL,
    wall_time double precision NOT NULL
) ON COMMIT DELETE ROWS
"""


def _rollup_sql(level: int) -> str:
    """Rebuild the touched buckets of one level. Each bucket is a LATERAL lookup on the
    primary key of the level below (raw points for level 0), so the cost depends on the
    batch, never on how long the series already is."""
    w = bucket_width(level)
    f = ROLLUP_FANOUT
    if level == 0:
        below = f"""
            SELECT min(p.value), max(p.value), max(p.step),
                   (array_agg(p.value ORDER BY p.step DESC))[1], count(*)
            FROM runs_metricpoint p
            WHERE p.series_id = t.series_id AND p.step >= t.b * {w} AND p.step < (t.b + 1) * {w}"""
    else:
        below = f"""
            SELECT min(r.min_value), max(r.max_value), max(r.last_step),
                   (array_agg(r.last_value ORDER BY r.last_step DESC))[1], sum(r.count)
            FROM runs_seriesrollup r
            WHERE r.series_id = t.series_id AND r.level = {level - 1}
              AND r.bucket >= t.b * {f} AND r.bucket < (t.b + 1) * {f}"""
    return f"""
        INSERT INTO runs_seriesrollup
            (series_id, level, bucket, min_value, max_value, last_step, last_value, count)
        SELECT t.series_id, {level}, t.b, a.mn, a.mx, a.ls, a.lv, a.n
        FROM (SELECT DISTINCT series_id, step / {w} AS b FROM ingest_touched) t
        CROSS JOIN LATERAL ({below}) AS a(mn, mx, ls, lv, n)
        ON CONFLICT (series_id, level, bucket) DO UPDATE SET
            min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
            last_step = EXCLUDED.last_step, last_value = EXCLUDED.last_value,
            count = EXCLUDED.count"""


def ingest_points(
    *, run_id: int, stage_run_id: int | None, points: Sequence[IngestPoint], publish: bool = True
) -> int:
    """Store a batch of points for one run (and stage run). Returns the number accepted."""
    if not points:
        return 0
    now = time.time()
    prepared = _prepare(points, now)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_TMP)
        # Normally already empty (ON COMMIT DELETE ROWS); not so when the caller's outer
        # transaction holds an earlier batch of this connection.
        cur.execute("DELETE FROM ingest_tmp; DELETE FROM ingest_touched")
        if not settings.STAGEWISE_INGEST_SYNC_COMMIT:
            # Metrics trade the last fraction of a second on an OS crash for half the commit
            # cost; a resumed stage re-sends everything after its checkpoint anyway.
            cur.execute("SET LOCAL synchronous_commit TO OFF")
        with cur.copy("COPY ingest_tmp (key, step, value, wall_time) FROM STDIN") as copy:
            copy.write(prepared.copy_text)
        cur.execute(
            """
            INSERT INTO runs_series (run_id, stage_run_id, key, count)
            SELECT DISTINCT %s::bigint, %s::bigint, key, 0 FROM ingest_tmp
            ON CONFLICT (run_id, stage_run_id, key) DO NOTHING
            """,
            [run_id, stage_run_id],
        )
        # Last value wins when a batch repeats a (key, step).
        cur.execute(
            """
            INSERT INTO ingest_touched
            SELECT DISTINCT ON (s.id, t.step) s.id AS series_id, t.step, t.value, t.wall_time
            FROM ingest_tmp t
            JOIN runs_series s ON s.key = t.key AND s.run_id = %s
             AND s.stage_run_id IS NOT DISTINCT FROM %s::bigint
            ORDER BY s.id, t.step
            """,
            [run_id, stage_run_id],
        )
        cur.execute(
            """
            INSERT INTO runs_metricpoint (series_id, step, value, wall_time)
            SELECT series_id, step, value, wall_time FROM ingest_touched
            ON CONFLICT (series_id, step) DO UPDATE
              SET value = EXCLUDED.value, wall_time = EXCLUDED.wall_time
            """
        )
        for level in range(ROLLUP_LEVELS):
            cur.execute(_rollup_sql(level))
        cur.execute(
            """
            UPDATE runs_series s
               SET first_step = LEAST(s.first_step, t.first_step), last_step = r.last_step,
                   count = r.n
            FROM (SELECT series_id, min(step) AS first_step FROM ingest_touched
                  GROUP BY series_id) t,
                 (SELECT series_id, max(last_step) AS last_step, sum(count) AS n
                  FROM runs_seriesrollup WHERE level = %s
                   AND series_id IN (SELECT DISTINCT series_id FROM ingest_touched)
                  GROUP BY series_id) r
            WHERE s.id = t.series_id AND s.id = r.series_id
            """,
            [ROLLUP_LEVELS - 1],
        )
        from runs.services.analysis import analysis_ingest

        analysis = analysis_ingest(run_id=run_id, points=points)
        if publish:
            batch = _batch_message(run_id, prepared.series)
            if analysis is not None:
                batch["analysis"] = analysis
            transaction.on_commit(lambda: _publish(run_id, batch))
    return len(points)


def _batch_message(run_id: int, series: dict[str, tuple[list[int], list[float]]]) -> dict:
    return {
        "type": "run.points",
        "run": run_id,
        "min_step": min(min(steps) for steps, _ in series.values()),
        "max_step": max(max(steps) for steps, _ in series.values()),
        "sent_at": time.time(),
        "series": {k: {"steps": s, "values": v} for k, (s, v) in series.items()},
    }


def _publish(run_id: int, message: dict) -> None:
    from runs.services.realtime import group_send

    group_send(f"run-{run_id}", message)


def parse_points(raw: object, *, limit: int) -> list[IngestPoint]:
    """JSON points from an API client → IngestPoints; the first bad one names its index."""
    if not isinstance(raw, list) or not raw:
        raise IngestError(0, "points", "must be a non-empty list") from None
    if len(raw) > limit:
        raise IngestError(limit, "points", f"at most {limit} points per request")
    out = []
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            raise IngestError(i, "(point)", "must be an object with key, step, value")
        for field in ("key", "step", "value"):
            if field not in p:
                raise IngestError(i, field, "is required")
        out.append(IngestPoint(p["key"], p["step"], p["value"], p.get("time")))
    return out  # values are checked by ingest_points, with the same indexes
