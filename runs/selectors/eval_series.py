"""Reads of a run's eval series (``eval/<set>/<metric>``) along its fork line, for the
continual-learning analysis (``runs.services.analysis``, ``runs.selectors.analysis``)."""

from __future__ import annotations

from collections import defaultdict

from django.db import connection
from django.db.models import Sum

from runs.models import Series


def lineage_eval_points(
    run_ids_steps: list[tuple[int, int | None]], keys: list[str] | None = None
) -> dict[str, list[list[float]]]:
    """``eval/*`` points (or only ``keys``) of (run, up to step) pairs, as ``run_lineage``
    gives them, merged by key and ordered by step (one query per run of the line)."""
    out: dict[str, list[list[float]]] = defaultdict(list)
    with connection.cursor() as cur:
        for run_id, upto in run_ids_steps:
            cur.execute(
                """SELECT s.key, p.step, p.value FROM runs_metricpoint p
                   JOIN runs_series s ON s.id = p.series_id
                   WHERE s.run_id = %s AND s.key LIKE 'eval/%%'
                     AND (%s::text[] IS NULL OR s.key = ANY(%s::text[]))
                     AND (%s::bigint IS NULL OR p.step <= %s::bigint)
                   ORDER BY p.step""",
                [run_id, keys, keys, upto, upto],
            )
            for key, step, value in cur.fetchall():
                out[key].append([step, value])
    for pts in out.values():
        pts.sort(key=lambda p: p[0])
    return out


def eval_point_count(run_id: int) -> int:
    """How many eval points the run itself stores (the series' counts: one query, whatever
    the number of points)."""
    n = Series.objects.filter(run_id=run_id, key__startswith="eval/").aggregate(n=Sum("count"))
    return int(n["n"] or 0)
