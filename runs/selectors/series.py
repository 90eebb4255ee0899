"""Chart reads over a run's history, the one read path for series.

A run's history is a lineage: ``(run id, last step taken from it)`` sources, the run itself
first (``runs.selectors.runs.run_lineage``). A fork stores only the points after its fork step,
the steps before live in its ancestors; a plain run is a lineage of one, ``[(run id, None)]``.
Every read below stitches a lineage into one line per key. A window is answered raw when its
points fit, else from the coarsest rollup level that still gives enough buckets
(``rollup_level``)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from runs.models import Run
from runs.models.metrics import ROLLUP_LEVELS, bucket_width
from runs.selectors.runs import run_lineage
from runs.selectors.teams import team_ids_for

MAX_RAW_AFTER = 50_000

Source = tuple[int, int | None]  # (run id, last step taken from it; None: all its points)


@dataclass(frozen=True, slots=True)
class _Segment:
    """One source's part of a key's line: its series and the steps taken from them."""

    ids: list[int]
    lo: int
    hi: int
    cut: bool  # an ancestor: its points after ``hi`` are another line's, never this one's
    count: int = 0  # points in its series: exact for the segment when ``whole``, else a bound
    whole: bool = False  # the segment spans its series' first to last step


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


def rollup_level(spans: list[tuple[int, int]], max_points: int) -> int:
    """The finest rollup level whose buckets over ``spans`` ((step count, series count) per
    segment; a segment's series may each start a bucket) fit in ``max_points``, else the
    coarsest level."""
    for level in range(ROLLUP_LEVELS):
        if sum(steps / bucket_width(level) + n for steps, n in spans) <= max_points:
            return level
    return ROLLUP_LEVELS - 1


SeriesIndex = dict[tuple[int, str], tuple[list[int], int | None, int | None, int]]


def _series_index(run_ids: list[int], keys: list[str]) -> SeriesIndex:
    """(run id, key) -> (series ids, first step, last step, point count), in one query."""
    with connection.cursor() as cur:
        cur.execute(
            """SELECT run_id, key, array_agg(id), min(first_step), max(last_step), sum(count)
               FROM runs_series WHERE run_id = ANY(%s) AND key = ANY(%s) GROUP BY run_id, key""",
            [run_ids, keys],
        )
        return {(r, k): (ids, first, last, int(n)) for r, k, ids, first, last, n in cur}


def _segments(
    sources: list[Source],
    keys: list[str],
    min_step: int | None,
    max_step: int | None,
    index: SeriesIndex | None = None,
) -> dict[str, tuple[list[_Segment], int | None]]:
    """Per key: disjoint segments in step order (oldest ancestor first) and the run's own
    first step. Walking from the run outwards, each older source stops below the first step
    of the younger ones, so a point re-sent at the fork step is the fork's, never both.
    ``index``: the sources' series read already (``_series_index``), else read here."""
    if index is None:
        index = _series_index([r for r, _ in sources], keys)
    out: dict[str, tuple[list[_Segment], int | None]] = {}
    for key in keys:
        segments: list[_Segment] = []
        own_from: int | None = None
        ceiling: int | None = None  # first step of the younger sources' points
        for i, (run_id, upto) in enumerate(sources):
            ids, first, last, count = index.get((run_id, key), ([], None, None, 0))
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
                whole = lo == first and hi == last
                segments.append(_Segment(ids, lo, hi, cut=i > 0, count=count, whole=whole))
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


def _raw(segments: list[_Segment], lo: int, limit: int) -> list[tuple[int, float]]:
    """Raw points with step >= lo across the segments, in step order, at most ``limit``."""
    rows: list[tuple[int, float]] = []
    for seg in segments:
        if len(rows) >= limit:
            break
        if seg.hi >= lo:
            rows += _raw_rows(seg, lo, limit - len(rows))
    return rows


def _rollup_rows(seg: _Segment, level: int, limit: int) -> list[tuple]:
    """(last_step, last_value, min, max) per bucket of one segment, at most ``limit``. An
    ancestor's last bucket also holds its points after the cut (the other branch), so that
    one is aggregated from the raw points up to the cut instead."""
    w = bucket_width(level)
    top = seg.hi // w if seg.cut else seg.hi // w + 1
    with connection.cursor() as cur:
        cur.execute(
            """SELECT last_step, last_value, min_value, max_value FROM runs_seriesrollup
               WHERE series_id = ANY(%s) AND level = %s AND bucket >= %s AND bucket < %s
               ORDER BY bucket, last_step LIMIT %s""",
            [seg.ids, level, seg.lo // w, top, limit],
        )
        rows = cur.fetchall()
        if seg.cut and len(rows) < limit:
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


def _raw_line(rows: list[tuple], at: int = 0) -> dict:
    """A raw line from (step, value) rows (from column ``at`` on)."""
    return {"steps": [r[at] for r in rows], "values": [r[at + 1] for r in rows], "level": None}


def _rollup_line(rows: list[tuple], level: int, at: int = 0) -> dict:
    """A downsampled line from (last_step, last_value, min, max) rows (from column ``at``)."""
    return {
        "steps": [r[at] for r in rows],
        "values": [r[at + 1] for r in rows],
        "min": [r[at + 2] for r in rows],
        "max": [r[at + 3] for r in rows],
        "level": level,
        "bucket_steps": bucket_width(level),
    }


def _line_level(segments: list[_Segment], max_points: int) -> int:
    return rollup_level([(s.hi - s.lo + 1, len(s.ids)) for s in segments], max_points)


def _may_fit(segments: list[_Segment], max_points: int) -> bool:
    """Whether the segments' raw points may fit in ``max_points``: by the stored counts for
    whole series, else by the counts of the rollup buckets strictly inside the window (a
    lower bound; a level with at most ~64 of them, one small query per segment)."""
    if all(seg.whole for seg in segments):
        return sum(seg.count for seg in segments) <= max_points
    inside = 0
    with connection.cursor() as cur:
        for seg in segments:
            level = rollup_level([(seg.hi - seg.lo + 1, 1)], 64)  # at most ~64 buckets
            w = bucket_width(level)
            cur.execute(
                """SELECT coalesce(sum(count), 0) FROM runs_seriesrollup WHERE series_id = ANY(%s)
                   AND level = %s AND bucket > %s AND bucket < %s""",
                [seg.ids, level, seg.lo // w, seg.hi // w],
            )
            inside += cur.fetchone()[0]
    return inside <= max_points


def _window(segments: list[_Segment], max_points: int) -> dict:
    # Raw when the points fit: the stored counts say so for whole series; otherwise reading
    # at most max_points + 1 of them is the exact count (never for whole series that do not
    # fit: that probe would scan them all).
    if _may_fit(segments, max_points):
        raw = _raw(segments, 0, max_points + 1)
        if len(raw) <= max_points:
            return _raw_line(raw)
    level = _line_level(segments, max_points)
    rows: list[tuple] = []
    for seg in segments:
        if len(rows) < max_points:
            rows += _rollup_rows(seg, level, max_points - len(rows))
    return _rollup_line(rows, level)


def series_window(
    *,
    run_id: int,
    keys: list[str],
    min_step: int | None = None,
    max_step: int | None = None,
    max_points: int,
    lineage: list[Source] | None = None,
) -> dict[str, dict]:
    """Per key: steps, values and (when downsampled) min/max envelopes, ≤ max_points each.
    ``lineage`` (``lineage_sources``): the run's whole history, its ancestors' points up to
    their cut-off steps then its own, and each key's ``own_from_step`` (the run's first own
    step, earlier ones are inherited; None when it has no point of its own). Without it: the
    run's own points, the lineage of one."""
    segments = _segments(lineage or [(run_id, None)], keys, min_step, max_step)
    return {
        key: _with_own_from(_window(segs, max_points), own_from, lineage)
        for key, (segs, own_from) in segments.items()
    }


def series_after(
    *,
    run_id: int,
    keys: list[str],
    after_step: int,
    limit: int,
    lineage: list[Source] | None = None,
) -> dict[str, dict]:
    """Raw points with step > after_step, ≤ limit per key, for live catch-up after a gap or a
    reconnect; over ``lineage`` as ``series_window``."""
    segments = _segments(lineage or [(run_id, None)], keys, None, None)
    out: dict[str, dict] = {}
    for key, (segs, own_from) in segments.items():
        rows = _raw(segs, after_step + 1, limit)
        line = {"steps": [r[0] for r in rows], "values": [r[1] for r in rows]}
        out[key] = _with_own_from(line, own_from, lineage)
    return out


def _with_own_from(line: dict, own_from: int | None, lineage: list[Source] | None) -> dict:
    return line if lineage is None else {**line, "own_from_step": own_from}


def series_read(
    *,
    run: Run,
    user,
    keys: list[str],
    lineage: bool,
    max_points: int,
    after_step: int | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
) -> dict[str, dict]:
    """GET /api/runs/{id}/series/: with ``after_step`` the points after it (≤ max_points per
    key; the window is ignored), else the window; ``lineage``: over the run's history as its
    reader may see it (``lineage_sources``)."""
    sources = lineage_sources(run=run, user=user) if lineage else None
    if after_step is not None:
        return series_after(
            run_id=run.pk, keys=keys, after_step=after_step, limit=max_points, lineage=sources
        )
    return series_window(
        run_id=run.pk,
        keys=keys,
        min_step=min_step,
        max_step=max_step,
        max_points=max_points,
        lineage=sources,
    )


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


# ------------------------------------------------------------------ many runs and keys at once
#
# GET /api/series/: the lines ``series_window`` gives, for every (run, key) of a request, in a
# fixed number of queries whatever the number of runs and keys: the visible runs, their
# lineages (one query per fork generation), one ``_series_index`` for every source, then one
# query of raw points for the lines that may fit raw and one of rollup buckets (and one for
# the cut ancestors' last buckets) for the others. Each (segment, series) pair is one row of
# an ``unnest`` driving a LATERAL read on the primary key, so each reads only its own limit.

MAX_BULK_RUNS = 50
MAX_BULK_KEYS = 20
MAX_BULK_POINTS = 1_000_000  # every line of one answer together

LineKey = tuple[int, str]  # (run id, key)


def bulk_max_points(*, runs: int, keys: int, asked: int) -> int:
    """Points per line of a bulk read: the ``asked`` ones, within the answer's budget of
    ``MAX_BULK_POINTS`` over all ``runs`` x ``keys`` lines (never under 2)."""
    return max(2, min(asked, MAX_BULK_POINTS // max(1, runs * keys)))


def _visible_lineage(run_id: int, nodes: dict, allowed: set[int]) -> list[Source]:
    """``lineage_sources`` of one run from ``nodes`` (id -> (team, parent, fork step))."""
    out: list[Source] = []
    upto: int | None = None
    node: int | None = run_id
    seen: set[int] = set()
    while node is not None and node not in seen:
        team, parent, step = nodes.get(node, (None, None, None))
        if team not in allowed:
            break
        out.append((node, upto))
        seen.add(node)
        if parent is None or step is None:
            break
        upto = step if upto is None else min(upto, step)
        node = parent
    return out


def lineages_for(*, run_ids: list[int], allowed: set[int]) -> dict[int, list[Source]]:
    """``lineage_sources`` of every run, reading one generation of ancestors per query."""
    nodes: dict[int, tuple[int, int | None, int | None]] = {}
    frontier = set(run_ids)
    while frontier:
        rows = Run.objects.filter(pk__in=frontier).values_list(
            "pk", "team_id", "parent_id", "fork_checkpoint__step"
        )
        for pk, team, parent, step in rows:
            nodes[pk] = (team, parent, step)
        frontier = {p for _, p, s in nodes.values() if p is not None and s is not None}
        frontier -= nodes.keys()
    return {r: _visible_lineage(r, nodes, allowed) for r in run_ids}


def _by_index(rows, n: int) -> list[list[tuple]]:
    """Rows whose first column is a segment's index -> the rows of each segment, in the order
    of their next columns (step, or last step): a segment of several series merges
    theirs, and one series' rows come presorted (a linear check)."""
    out: list[list[tuple]] = [[] for _ in range(n)]
    for row in rows:
        out[row[0]].append(row)
    for part in out:
        part.sort()
    return out


def _flat(lines: dict[LineKey, list[_Segment]]) -> list[tuple[LineKey, _Segment]]:
    return [(k, seg) for k, segs in lines.items() for seg in segs]


def _bulk_raw(lines: dict[LineKey, list[_Segment]], limit: int) -> dict[LineKey, list[tuple]]:
    """``_raw(segments, 0, limit)`` of every line, in one query."""
    segs = _flat(lines)
    out: dict[LineKey, list[tuple]] = {k: [] for k in lines}
    if not segs:
        return out
    pairs = [(i, sid, seg.lo, seg.hi) for i, (_, seg) in enumerate(segs) for sid in seg.ids]
    with connection.cursor() as cur:
        cur.execute(
            """SELECT q.i, p.step, p.value
               FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[]) AS q(i, sid, lo, hi)
               CROSS JOIN LATERAL (SELECT step, value FROM runs_metricpoint
                   WHERE series_id = q.sid AND step BETWEEN q.lo AND q.hi
                   ORDER BY step LIMIT %s) p""",
            [*map(list, zip(*pairs, strict=True)), limit],
        )
        per_seg = _by_index(cur.fetchall(), len(segs))  # (i, step, value)
    for (k, _), rows in zip(segs, per_seg, strict=True):
        out[k] += rows[: limit - len(out[k])]
    return out


def _bulk_rollup_rows(segs: list[tuple[LineKey, _Segment]], levels: dict, limit: int):
    """Per segment: its rollup buckets at its line's level (``_rollup_rows`` before the cut
    row), at most ``limit``, as (i, last_step, last_value, min, max): a series' buckets in
    last-step order are in bucket order, so they merge like ``_rollup_rows`` orders them."""
    pairs = []
    for i, (k, seg) in enumerate(segs):
        w = bucket_width(levels[k])
        top = seg.hi // w if seg.cut else seg.hi // w + 1
        pairs += [(i, sid, levels[k], seg.lo // w, top) for sid in seg.ids]
    with connection.cursor() as cur:
        cur.execute(
            """SELECT q.i, r.last_step, r.last_value, r.min_value, r.max_value
               FROM unnest(%s::int[], %s::bigint[], %s::int[], %s::bigint[], %s::bigint[])
                    AS q(i, sid, lvl, lo, top)
               CROSS JOIN LATERAL (SELECT last_step, last_value, min_value, max_value
                   FROM runs_seriesrollup
                   WHERE series_id = q.sid AND level = q.lvl AND bucket >= q.lo AND bucket < q.top
                   ORDER BY bucket LIMIT %s) r""",
            [*map(list, zip(*pairs, strict=True)), limit],
        )
        return [part[:limit] for part in _by_index(cur.fetchall(), len(segs))]


def _bulk_cut_rows(segs: list[tuple[LineKey, _Segment]], levels: dict) -> dict[int, list]:
    """Per cut segment: its last bucket aggregated from the raw points up to the cut (the
    cut row of ``_rollup_rows``), [] when it has no point there."""
    pairs = []
    for i, (k, seg) in enumerate(segs):
        if seg.cut:
            w = bucket_width(levels[k])
            pairs += [(i, sid, max(seg.lo, seg.hi // w * w), seg.hi) for sid in seg.ids]
    out: dict[int, list] = {}
    if not pairs:
        return out
    with connection.cursor() as cur:
        cur.execute(
            """SELECT q.i, p.step, p.value, a.lo, a.hi
               FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[]) AS q(i, sid, a, b)
               CROSS JOIN LATERAL (SELECT min(value) AS lo, max(value) AS hi FROM runs_metricpoint
                   WHERE series_id = q.sid AND step BETWEEN q.a AND q.b) a
               CROSS JOIN LATERAL (SELECT step, value FROM runs_metricpoint
                   WHERE series_id = q.sid AND step BETWEEN q.a AND q.b
                   ORDER BY step DESC LIMIT 1) p""",
            [list(c) for c in zip(*pairs, strict=True)],
        )
        for i, step, value, lo, hi in cur.fetchall():  # several series: one merged row
            prev = out[i][0] if i in out else None  # (i, step, value, lo, hi)
            last = (step, value) if not prev or step > prev[1] else prev[1:3]
            lo, hi = (lo, hi) if not prev else (min(lo, prev[3]), max(hi, prev[4]))
            out[i] = [(i, *last, lo, hi)]
    return out


def _bulk_rollup(lines: dict[LineKey, list[_Segment]], max_points: int) -> dict[LineKey, dict]:
    """``_window``'s downsampled answer of every line, in two queries."""
    levels = {k: _line_level(segs, max_points) for k, segs in lines.items()}
    segs = _flat(lines)
    rows_of: dict[LineKey, list[tuple]] = {k: [] for k in lines}
    if segs:
        buckets = _bulk_rollup_rows(segs, levels, max_points)
        cuts = _bulk_cut_rows(segs, levels)
        for i, (k, seg) in enumerate(segs):
            room = max_points - len(rows_of[k])
            if room <= 0:
                continue
            part = buckets[i][:room]
            if seg.cut and len(part) < room:
                part += cuts.get(i, [])
            rows_of[k] += part
    return {k: _rollup_line(rows_of[k], levels[k], at=1) for k in lines}


def _bulk_windows(lines: dict[LineKey, list[_Segment]], max_points: int) -> dict[LineKey, dict]:
    """``_window`` of every line. A line known from its series' counts to hold more than
    ``max_points`` skips the raw probe; the others are probed in one query, as ``_window``
    does (max_points + 1 points read is the exact answer to "do they fit")."""
    known_over = {
        k for k, segs in lines.items() if sum(s.count for s in segs if s.whole) > max_points
    }
    probe = {k: segs for k, segs in lines.items() if k not in known_over}
    raw = _bulk_raw(probe, max_points + 1)
    out = {k: _raw_line(rows, at=1) for k, rows in raw.items() if len(rows) <= max_points}
    out.update(_bulk_rollup({k: s for k, s in lines.items() if k not in out}, max_points))
    return out


def series_bulk(
    *, user, run_ids: list[int], keys: list[str], max_points: int, lineage: bool
) -> dict:
    """GET /api/series/: per run asked (in the asked order, each once) that the user may see,
    ``{"run": id, "series": {key: line}}`` with the lines ``series_read`` gives for the same
    run, keys, ``max_points`` and ``lineage``; the runs the user cannot see (or that do not
    exist: the same answer) are left out and listed in ``missing``."""
    allowed = set(team_ids_for(user))
    asked = list(dict.fromkeys(run_ids))
    visible = set(
        Run.objects.filter(pk__in=asked, team_id__in=allowed).values_list("pk", flat=True)
    )
    shown = [r for r in asked if r in visible]
    sources = lineages_for(run_ids=shown, allowed=allowed) if lineage else {}
    lineage_of = {r: sources.get(r) or [(r, None)] for r in shown}
    index = _series_index(sorted({r for src in lineage_of.values() for r, _ in src}), keys)
    lines: dict[LineKey, tuple[list[_Segment], int | None]] = {}
    for r in shown:
        for key, segs_own in _segments(lineage_of[r], keys, None, None, index).items():
            lines[(r, key)] = segs_own
    windows = _bulk_windows({k: segs for k, (segs, _) in lines.items()}, max_points)
    runs = [
        {"run": r, "series": {key: _with_own_from(windows[(r, key)], lines[(r, key)][1],
                                                  sources.get(r)) for key in keys}}
        for r in shown
    ]  # fmt: skip
    return {"runs": runs, "missing": [r for r in asked if r not in visible]}


def series_keys_many(*, user, run_ids: list[int]) -> dict[int, list[str]]:
    """Per run: its series keys and those of its visible ancestors (a fork's curves include
    their history), sorted, in three queries or so whatever the number of runs."""
    allowed = set(team_ids_for(user))
    sources = lineages_for(run_ids=run_ids, allowed=allowed)
    keys_of: dict[int, set[str]] = {}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT run_id, key FROM runs_series WHERE run_id = ANY(%s)",
            [sorted({r for src in sources.values() for r, _ in src})],
        )
        for run_id, key in cur.fetchall():
            keys_of.setdefault(run_id, set()).add(key)
    return {
        r: sorted(set().union(*(keys_of.get(s, set()) for s, _ in src)))
        for r, src in sources.items()
    }
