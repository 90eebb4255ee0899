"""Chart reads: answer from the coarsest rollup level that still gives enough buckets."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from runs.models import Run
from runs.models.metrics import ROLLUP_LEVELS, bucket_width
from runs.selectors.runs import run_lineage
from runs.selectors.teams import team_ids_for

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
    return _rollup_answer(rows, level)


def _rollup_answer(rows: list[tuple], level: int) -> dict:
    """(last_step, last_value, min, max) rows of one level → the API's downsampled shape."""
    return {
        "steps": [r[0] for r in rows],
        "values": [r[1] for r in rows],
        "min": [r[2] for r in rows],
        "max": [r[3] for r in rows],
        "level": level,
        "bucket_steps": bucket_width(level),
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


# ---------------------------------------------------------------- a fork's whole history
# A fork stores only the points after its fork step; the steps before live in its ancestors
# (``run_lineage``). With ``lineage`` the reads below stitch them into one line per key.

Source = tuple[int, int | None]  # (run id, last step taken from it; None: all its points)


@dataclass(frozen=True, slots=True)
class _Segment:
    """One source's part of a key's line: its series and the steps taken from them."""

    ids: list[int]
    lo: int
    hi: int
    cut: bool  # an ancestor: its points after ``hi`` are another line's, never this one's


def lineage_sources(*, run: Run, user) -> list[Source]:
    """``run_lineage(run)`` up to the first ancestor outside the user's teams: a run forked
    into another team shows only the history its readers may see."""
    sources = run_lineage(run)
    teams = dict(Run.objects.filter(pk__in=[r for r, _ in sources]).values_list("pk", "team_id"))
    allowed = set(team_ids_for(user))
    out: list[Source] = []
    for run_id, upto in sources:
        if teams.get(run_id) not in allowed:
            break
        out.append((run_id, upto))
    return out


def _lineage_segments(
    sources: list[Source], keys: list[str], min_step: int | None, max_step: int | None
) -> dict[str, tuple[list[_Segment], int | None]]:
    """Per key: disjoint segments in step order (oldest ancestor first) and the run's own
    first step. Walking from the run outwards, each older source stops below the first step
    of the younger ones, so a point re-sent at the fork step is the fork's, never both."""
    by_source: dict[tuple[int, str], tuple[list[int], int | None, int | None]] = {}
    with connection.cursor() as cur:
        cur.execute(
            """SELECT run_id, key, array_agg(id), min(first_step), max(last_step) FROM runs_series
               WHERE run_id = ANY(%s) AND key = ANY(%s) GROUP BY run_id, key""",
            [[r for r, _ in sources], keys],
        )
        for run_id, key, ids, first, last in cur.fetchall():
            by_source[(run_id, key)] = (ids, first, last)
    out: dict[str, tuple[list[_Segment], int | None]] = {}
    for key in keys:
        segments: list[_Segment] = []
        own_from: int | None = None
        ceiling: int | None = None  # first step of the younger sources' points
        for i, (run_id, upto) in enumerate(sources):
            ids, first, last = by_source.get((run_id, key), ([], None, None))
            if first is None or last is None:
                continue
            if i == 0:
                own_from = first
            hi = last if upto is None else min(last, upto)
            if ceiling is not None:
                hi = min(hi, ceiling - 1)
            ceiling = first if ceiling is None else min(ceiling, first)
            lo = first if min_step is None else max(first, min_step)
            hi = hi if max_step is None else min(hi, max_step)
            if lo <= hi:
                segments.append(_Segment(ids, lo, hi, cut=i > 0))
        out[key] = (segments[::-1], own_from)
    return out


def _raw_rows(seg: _Segment, lo: int, limit: int) -> list[tuple[int, float]]:
    with connection.cursor() as cur:
        cur.execute(
            """SELECT step, value FROM runs_metricpoint
               WHERE series_id = ANY(%s) AND step BETWEEN %s AND %s ORDER BY step LIMIT %s""",
            [seg.ids, max(lo, seg.lo), seg.hi, limit],
        )
        return cur.fetchall()


def _raw_lineage(segments: list[_Segment], lo: int, limit: int) -> list[tuple[int, float]]:
    """Raw points with step >= lo across the segments, in step order, at most ``limit``."""
    rows: list[tuple[int, float]] = []
    for seg in segments:
        if len(rows) >= limit:
            break
        if seg.hi >= lo:
            rows += _raw_rows(seg, lo, limit - len(rows))
    return rows


def _rollup_rows(seg: _Segment, level: int) -> list[tuple]:
    """(last_step, last_value, min, max) per bucket of one segment. An ancestor's last
    bucket also holds its points after the cut (the other branch), so that one is
    aggregated from the raw points up to the cut instead."""
    w = bucket_width(level)
    top = seg.hi // w if seg.cut else seg.hi // w + 1
    with connection.cursor() as cur:
        cur.execute(
            """SELECT last_step, last_value, min_value, max_value FROM runs_seriesrollup
               WHERE series_id = ANY(%s) AND level = %s AND bucket >= %s AND bucket < %s
               ORDER BY bucket, last_step""",
            [seg.ids, level, seg.lo // w, top],
        )
        rows = cur.fetchall()
        if seg.cut:
            cur.execute(
                """SELECT p.step, p.value, a.lo, a.hi
                   FROM (SELECT min(value) AS lo, max(value) AS hi FROM runs_metricpoint
                         WHERE series_id = ANY(%(ids)s) AND step BETWEEN %(a)s AND %(b)s) a,
                        LATERAL (SELECT step, value FROM runs_metricpoint
                                 WHERE series_id = ANY(%(ids)s) AND step BETWEEN %(a)s AND %(b)s
                                 ORDER BY step DESC LIMIT 1) p""",
                {"ids": seg.ids, "a": max(seg.lo, top * w), "b": seg.hi},
            )
            rows += cur.fetchall()
    return rows


def _lineage_window(segments: list[_Segment], max_points: int) -> dict:
    # Raw when the points fit: reading at most max_points + 1 of them is the exact count.
    raw = _raw_lineage(segments, 0, max_points + 1)
    if len(raw) <= max_points:
        return {"steps": [r[0] for r in raw], "values": [r[1] for r in raw], "level": None}
    # The finest level whose buckets over all segments fit (as series_window, summed).
    level = ROLLUP_LEVELS - 1
    for lv in range(ROLLUP_LEVELS):
        w = bucket_width(lv)
        if sum((s.hi - s.lo + 1) / w + len(s.ids) for s in segments) <= max_points:
            level = lv
            break
    rows = [row for seg in segments for row in _rollup_rows(seg, level)][:max_points]
    return _rollup_answer(rows, level)


def series_window_lineage(
    *,
    sources: list[Source],
    keys: list[str],
    min_step: int | None,
    max_step: int | None,
    max_points: int,
) -> dict[str, dict]:
    """``series_window`` over a run's whole history: the ancestors' points up to their cut-off
    steps, then the run's own, ≤ max_points per key. ``own_from_step``: the run's first own
    step (earlier steps are inherited), None when the run has no point of its own."""
    result: dict[str, dict] = {}
    for key, (segments, own_from) in _lineage_segments(sources, keys, min_step, max_step).items():
        result[key] = {**_lineage_window(segments, max_points), "own_from_step": own_from}
    return result


def series_after_lineage(
    *, sources: list[Source], keys: list[str], after_step: int, limit: int
) -> dict[str, dict]:
    """``series_after`` over a run's whole history (see ``series_window_lineage``)."""
    result: dict[str, dict] = {}
    for key, (segments, own_from) in _lineage_segments(sources, keys, None, None).items():
        rows = _raw_lineage(segments, after_step + 1, limit)
        result[key] = {
            "steps": [r[0] for r in rows],
            "values": [r[1] for r in rows],
            "own_from_step": own_from,
        }
    return result
