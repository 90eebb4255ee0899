"""Batched, idempotent metric ingest (DESIGN.md "Metrics: the hot path").

One batch = one transaction. The batch's series rows are created if needed and locked in one
statement (so concurrent batches of one series queue up instead of rebuilding rollups from
each other's uncommitted points). A small batch of new steps only (a live run logging every
step: the common case, ``ARRAY_POINTS`` points at most) is then stored by one more round trip
that reads the points and their rollups from array parameters; any other batch goes into a
temporary table with a binary COPY and from there into ``runs_metricpoint``. A live batch
costs three round trips in all (the upsert, the store, the commit) instead of ten: under load
every round trip is a wait for a busy CPU, so their number, not the rows, sets the latency.

* a series whose points in this batch all come after its stored ``last_step`` takes a plain
  INSERT, and its rollup buckets are aggregated from the batch
  (``append_rollups``) and merged into the stored ones (min, max, count, later last point);
* any other series (a re-sent or out-of-order point) takes INSERT .. ON CONFLICT (series_id,
  step) DO UPDATE -- a re-sent point replaces, never duplicates -- and its touched buckets
  are rebuilt level by level from the level below, so they stay exact when a value changes.

The same transaction folds the batch's eval points into the run's stored analysis
(``runs.services.analysis``). After commit, one message per batch goes to the run's channel
group, carrying the points and, when the analysis changed, both of its reports.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from runs.models.metrics import MAX_KEY_LENGTH, ROLLUP_FANOUT, ROLLUP_LEVELS, bucket_width
from runs.services.ingest_batch import (
    Batch,
    IngestError,
    IngestPoint,
    PointColumns,
    StepRange,
    append_rollups,
    batch_from_points,
    copy_binary,
)

__all__ = [
    "MAX_KEY_LENGTH",
    "ROLLUP_LEVELS",
    "IngestError",
    "IngestPoint",
    "PointColumns",
    "StepRange",
    "bucket_width",
    "ingest_points",
    "parse_points",
]

# Created once per connection and emptied at commit: creating and dropping temp tables per
# batch bloats the system catalogs and made ingest slower and slower over a long run. Every
# column is 8 bytes wide, as copy_binary writes them.
_TMP = """
CREATE TEMP TABLE IF NOT EXISTS ingest_points (
    series_id bigint NOT NULL, step bigint NOT NULL, value double precision NOT NULL,
    wall_time double precision NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_rollups (
    series_id bigint NOT NULL, level bigint NOT NULL, bucket bigint NOT NULL,
    min_value double precision NOT NULL, max_value double precision NOT NULL,
    last_step bigint NOT NULL, last_value double precision NOT NULL, count bigint NOT NULL
) ON COMMIT DELETE ROWS;
-- Normally already empty (ON COMMIT DELETE ROWS); not so when the caller's outer
-- transaction holds an earlier batch of this connection.
DELETE FROM ingest_points;
DELETE FROM ingest_rollups
"""
_ASYNC_COMMIT = """
-- Metrics trade the last fraction of a second on an OS crash for half the commit cost;
-- a resumed stage re-sends everything after its checkpoint anyway.
SET LOCAL synchronous_commit TO OFF"""


def _rebuild_rollups_sql(level: int) -> str:
    """Rebuild one level's touched buckets of the series in %(ids)s. Each bucket is a LATERAL
    lookup on the primary key of the level below (raw points for level 0), so the cost
    depends on the batch, never on how long the series already is."""
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
        FROM (SELECT DISTINCT series_id, step / {w} AS b FROM ingest_points
              WHERE series_id = ANY(%(ids)s)) t
        CROSS JOIN LATERAL ({below}) AS a(mn, mx, ls, lv, n)
        ON CONFLICT (series_id, level, bucket) DO UPDATE SET
            min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
            last_step = EXCLUDED.last_step, last_value = EXCLUDED.last_value,
            count = EXCLUDED.count"""


_REBUILD_ROLLUPS = [_rebuild_rollups_sql(level) for level in range(ROLLUP_LEVELS)]

ARRAY_POINTS = 2_000  # up to this many points of new steps: arrays, not COPY (see above)

_POINTS_FROM_ARRAYS = """unnest(%(p_sid)s::bigint[], %(p_step)s::bigint[],
    %(p_value)s::float8[], %(p_time)s::float8[]) AS p(series_id, step, value, wall_time)"""
_ROLLUPS_FROM_ARRAYS = """unnest(%(r_sid)s::bigint[], %(r_level)s::bigint[],
    %(r_bucket)s::bigint[], %(r_min)s::float8[], %(r_max)s::float8[], %(r_last_step)s::bigint[],
    %(r_last_value)s::float8[], %(r_count)s::bigint[])
    AS t(series_id, level, bucket, min_value, max_value, last_step, last_value, count)"""

_MERGE_ROLLUPS = """
INSERT INTO runs_seriesrollup AS r
    (series_id, level, bucket, min_value, max_value, last_step, last_value, count)
SELECT series_id, level, bucket, min_value, max_value, last_step, last_value, count
FROM {src}
ON CONFLICT (series_id, level, bucket) DO UPDATE SET
    min_value = LEAST(r.min_value, EXCLUDED.min_value),
    max_value = GREATEST(r.max_value, EXCLUDED.max_value),
    last_step = EXCLUDED.last_step, last_value = EXCLUDED.last_value,
    count = r.count + EXCLUDED.count"""

# Creates the missing series and locks them all (ON CONFLICT DO UPDATE locks the row it
# finds, as FOR UPDATE would), in key order so that concurrent batches cannot deadlock.
_UPSERT_LOCK_SERIES = """
INSERT INTO runs_series AS s (run_id, key, count)
SELECT %s, k, 0 FROM unnest(%s::text[]) AS k ORDER BY k
ON CONFLICT (run_id, key) DO UPDATE SET key = EXCLUDED.key
RETURNING s.id, s.key, s.last_step"""


def ingest_points(
    *,
    run_id: int,
    points: Sequence[IngestPoint] | PointColumns,
    step_range: StepRange | None = None,
    publish: bool = True,
) -> int:
    """Store a batch of points of one run; a point is identified by (run, key, step), so a
    re-sent one replaces the stored one. ``step_range`` (the writer's stage, or the whole
    run) refuses points outside it with an IngestError naming the first. Returns the number
    accepted. Who may write is the callers' business (``runs.services.points``)."""
    received = len(points.keys) if isinstance(points, PointColumns) else len(points)
    if not received:
        return 0
    batch = batch_from_points(points, time.time(), step_range)
    with transaction.atomic(), connection.cursor() as cur:
        sync = settings.STAGEWISE_INGEST_SYNC_COMMIT
        cur.execute(
            _UPSERT_LOCK_SERIES + ("" if sync else ";" + _ASYNC_COMMIT), [run_id, batch.keys]
        )
        stored = {key: (sid, last) for sid, key, last in cur.fetchall()}
        ids = np.array([stored[k][0] for k in batch.keys], dtype=np.int64)
        series_id = ids[batch.code]
        appended, replaced = _split_appended(batch, stored, ids)
        if replaced or len(batch) > ARRAY_POINTS:
            cur.execute(_TMP)
            with cur.copy("COPY ingest_points FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(copy_binary([series_id, batch.step, batch.value, batch.time]))
            if appended:
                _store_appended(cur, batch, series_id, appended, replaced)
            if replaced:
                _store_replaced(cur, replaced)
        else:
            _store_appended_from_arrays(cur, batch, series_id)
        from runs.services.analysis import analysis_ingest

        per_key = batch.per_key()
        analysis = analysis_ingest(run_id=run_id, series=per_key)
        if publish:
            # the batch's points, and with eval points the updated analysis ("analysis",
            # "run_analysis"): the run page renders what it is sent, it re-reads nothing
            message = {**_batch_message(run_id, per_key), **(analysis or {})}
            transaction.on_commit(lambda: _publish(run_id, message))
    return received


def _split_appended(batch: Batch, stored: dict, ids: np.ndarray) -> tuple[list[int], list[int]]:
    """Series ids whose batch points all come after their stored last step, and the rest."""
    appended, replaced = [], []
    firsts = batch.step[batch.starts[:-1]]
    for i, key in enumerate(batch.keys):
        last = stored[key][1]
        (appended if last is None or firsts[i] > last else replaced).append(int(ids[i]))
    return appended, replaced


def _store_appended(cur, batch: Batch, series_id, appended: list[int], replaced: list[int]):
    """New steps only: plain INSERT (no conflict is possible while the series rows are
    locked) and rollups merged from the batch's own aggregates."""
    only = "" if not replaced else " WHERE series_id = ANY(%(ids)s)"
    cur.execute(
        "INSERT INTO runs_metricpoint (series_id, step, value, wall_time)"
        " SELECT series_id, step, value, wall_time FROM ingest_points" + only,
        {"ids": appended},
    )
    mask = np.isin(series_id, appended) if replaced else slice(None)
    rollups = append_rollups(series_id[mask], batch.step[mask], batch.value[mask])
    with cur.copy("COPY ingest_rollups FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(copy_binary(rollups.columns()))
    cur.execute(_MERGE_ROLLUPS.format(src="ingest_rollups"))
    cur.execute(_UPDATE_TOTALS, _series_totals(batch, series_id, appended))


_UPDATE_TOTALS = """
UPDATE runs_series s
   SET first_step = COALESCE(s.first_step, u.first_step), last_step = u.last_step,
       count = s.count + u.n
  FROM unnest(%(t_id)s::bigint[], %(t_first)s::bigint[], %(t_last)s::bigint[], %(t_n)s::bigint[])
       AS u(id, first_step, last_step, n)
 WHERE s.id = u.id"""

_STORE_FROM_ARRAYS = ";".join(
    [
        "INSERT INTO runs_metricpoint (series_id, step, value, wall_time)"
        f" SELECT series_id, step, value, wall_time FROM {_POINTS_FROM_ARRAYS}",
        _MERGE_ROLLUPS.format(src=_ROLLUPS_FROM_ARRAYS),
        _UPDATE_TOTALS,
    ]
)


def _store_appended_from_arrays(cur, batch: Batch, series_id: np.ndarray) -> None:
    """A small batch of new steps only: its points, rollups and totals in one round trip
    (three statements, their rows as array parameters)."""
    rollups = append_rollups(series_id, batch.step, batch.value)
    r = rollups.columns()
    every = np.unique(series_id).tolist()
    cur.execute(
        _STORE_FROM_ARRAYS,
        {
            "p_sid": _array_literal(series_id),
            "p_step": _array_literal(batch.step),
            "p_value": _array_literal(batch.value),
            "p_time": _array_literal(batch.time),
            **dict(zip(_ROLLUP_PARAMS, map(_array_literal, r), strict=True)),
            **_series_totals(batch, series_id, every),
        },
    )


def _array_literal(column: np.ndarray) -> str:
    """A column as PostgreSQL's array text (``{1,2.5}``), cast by the statement. psycopg's
    list adapter checks every element on the way (a third of a 1,000-point batch's time);
    str() of a Python int or float is exact (the shortest repr that round-trips)."""
    return "{" + ",".join(map(str, column.tolist())) + "}"


_ROLLUP_PARAMS = ("r_sid", "r_level", "r_bucket", "r_min", "r_max", "r_last_step",
                  "r_last_value", "r_count")  # fmt: skip


def _series_totals(batch: Batch, series_id: np.ndarray, only: list[int]) -> dict[str, list]:
    starts = batch.starts
    sids = series_id[starts[:-1]]
    keep = np.isin(sids, only)
    first = batch.step[starts[:-1]][keep]
    last = batch.step[starts[1:] - 1][keep]
    n = np.diff(starts)[keep]
    return {"t_id": sids[keep].tolist(), "t_first": first.tolist(), "t_last": last.tolist(),
            "t_n": n.tolist()}  # fmt: skip


def _store_replaced(cur, replaced: list[int]) -> None:
    """Some steps may be stored already: upsert them, rebuild the touched buckets, and take
    the series totals from the top level."""
    cur.execute(
        """INSERT INTO runs_metricpoint (series_id, step, value, wall_time)
           SELECT series_id, step, value, wall_time FROM ingest_points
           WHERE series_id = ANY(%(ids)s)
           ON CONFLICT (series_id, step) DO UPDATE
             SET value = EXCLUDED.value, wall_time = EXCLUDED.wall_time""",
        {"ids": replaced},
    )
    for sql in _REBUILD_ROLLUPS:
        cur.execute(sql, {"ids": replaced})
    cur.execute(
        """
        UPDATE runs_series s
           SET first_step = LEAST(s.first_step, t.first_step), last_step = r.last_step,
               count = r.n
        FROM (SELECT series_id, min(step) AS first_step FROM ingest_points
              WHERE series_id = ANY(%(ids)s) GROUP BY series_id) t,
             (SELECT series_id, max(last_step) AS last_step, sum(count) AS n
              FROM runs_seriesrollup WHERE level = %(top)s AND series_id = ANY(%(ids)s)
              GROUP BY series_id) r
        WHERE s.id = t.series_id AND s.id = r.series_id
        """,
        {"ids": replaced, "top": ROLLUP_LEVELS - 1},
    )


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


def parse_points(raw: object, *, limit: int) -> PointColumns:
    """JSON points from an API client → columns (no object per point); a malformed point
    is named by its index here, bad values by ingest_points, with the same indexes."""
    if not isinstance(raw, list) or not raw:
        raise IngestError(0, "points", "must be a non-empty list") from None
    if len(raw) > limit:
        raise IngestError(limit, "points", f"at most {limit} points per request")
    try:
        return PointColumns(
            [p["key"] for p in raw],
            [p["step"] for p in raw],
            [p["value"] for p in raw],
            [p.get("time") for p in raw],
        )
    except (TypeError, KeyError, AttributeError):
        pass  # find and name the first bad point
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            raise IngestError(i, "(point)", "must be an object with key, step, value")
        for field in ("key", "step", "value"):
            if field not in p:
                raise IngestError(i, field, "is required")
    raise AssertionError("unreachable: every point is an object with key, step, value")
