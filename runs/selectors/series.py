"""Chart reads: answer from the coarsest rollup level that still gives enough buckets."""

from __future__ import annotations

from django.db import connection

from runs.services.ingest import ROLLUP_LEVELS, bucket_width

MAX_RAW_AFTER = 50_000


def _series_ids(run_id: int, keys: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {k: [] for k in keys}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT key, id FROM runs_series WHERE run_id = %s AND key = ANY(%s)", [run_id, keys]
        )
        for key, sid in cur.fetchall():
            out[key].append(sid)
    return out


def _step_range(ids: list[int], min_step: int | None, max_step: int | None) -> tuple[int, int, int]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT min(first_step), max(last_step), sum(count) FROM runs_series WHERE id = ANY(%s)",
            [ids],
        )
        lo, hi, n = cur.fetchone()
    lo = lo or 0
    hi = hi or 0
    return (max(lo, min_step) if min_step is not None else lo,
            min(hi, max_step) if max_step is not None else hi, n or 0)  # fmt: skip


def series_window(
    *, run_id: int, keys: list[str], min_step: int | None, max_step: int | None, max_points: int
) -> dict[str, dict]:
    """Per key: steps, values and (when downsampled) min/max envelopes, ≤ max_points each."""
    result: dict[str, dict] = {}
    for key, ids in _series_ids(run_id, keys).items():
        if not ids:
            result[key] = {"steps": [], "values": [], "level": None}
            continue
        lo, hi, total = _step_range(ids, min_step, max_step)
        span = max(hi - lo + 1, 1)
        level = None
        # Steps are unique per series, so a span also bounds the number of raw points.
        if min(total, span * len(ids)) > max_points:
            # Fewest buckets that still exceed what raw would need: the finest level whose
            # bucket count over the span fits in max_points.
            for lv in range(ROLLUP_LEVELS):
                if span / bucket_width(lv) + len(ids) <= max_points:
                    level = lv
                    break
            else:
                level = ROLLUP_LEVELS - 1
        result[key] = _read(ids, lo, hi, level, max_points)
    return result


def _read(ids: list[int], lo: int, hi: int, level: int | None, max_points: int) -> dict:
    with connection.cursor() as cur:
        if level is None:
            cur.execute(
                """SELECT step, value FROM runs_metricpoint
                   WHERE series_id = ANY(%s) AND step BETWEEN %s AND %s ORDER BY step LIMIT %s""",
                [ids, lo, hi, max_points],
            )
            rows = cur.fetchall()
            return {"steps": [r[0] for r in rows], "values": [r[1] for r in rows], "level": None}
        w = bucket_width(level)
        cur.execute(
            """SELECT last_step, last_value, min_value, max_value FROM runs_seriesrollup
               WHERE series_id = ANY(%s) AND level = %s AND bucket BETWEEN %s AND %s
               ORDER BY bucket, last_step LIMIT %s""",
            [ids, level, lo // w, hi // w, max_points],
        )
        rows = cur.fetchall()
    return {
        "steps": [r[0] for r in rows],
        "values": [r[1] for r in rows],
        "min": [r[2] for r in rows],
        "max": [r[3] for r in rows],
        "level": level,
        "bucket_steps": w,
    }


def series_after(*, run_id: int, keys: list[str], after_step: int, limit: int) -> dict[str, dict]:
    """Raw points with step > after_step, for live catch-up after a gap or a reconnect."""
    result: dict[str, dict] = {}
    for key, ids in _series_ids(run_id, keys).items():
        with connection.cursor() as cur:
            cur.execute(
                """SELECT step, value FROM runs_metricpoint
                   WHERE series_id = ANY(%s) AND step > %s ORDER BY step LIMIT %s""",
                [ids, after_step, limit],
            )
            rows = cur.fetchall()
        result[key] = {"steps": [r[0] for r in rows], "values": [r[1] for r in rows]}
    return result


def series_keys(*, run_id: int) -> list[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT DISTINCT key FROM runs_series WHERE run_id = %s ORDER BY key", [run_id])
        return [r[0] for r in cur.fetchall()]


def series_raw(
    *, run_id: int, key: str, min_step: int, max_step: int
) -> tuple[list[int], list[float]]:
    with connection.cursor() as cur:
        cur.execute(
            """SELECT p.step, p.value FROM runs_metricpoint p
               JOIN runs_series s ON s.id = p.series_id
               WHERE s.run_id = %s AND s.key = %s AND p.step BETWEEN %s AND %s
               ORDER BY p.step""",
            [run_id, key, min_step, max_step],
        )
        rows = cur.fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]
