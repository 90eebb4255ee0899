"""Reads for the dashboard pages: run rows with progress, eval-curve analysis, queue contents.

Read-only; every function answers in a fixed number of queries.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.db import connection
from django.utils import timezone

from runs.models import Queue, Run, RunState, StageRun, StageState
from runs.selectors.runs import run_analysis_summary, run_lineage, run_list
from runs.selectors.teams import team_ids_for
from trainers.analysis import matrix_from_series, old_task_gap_table, old_tasks

RUN_ORDERINGS = ("-created_at", "created_at", "name", "-name", "state", "-state", "priority",
                 "-priority")  # fmt: skip
DONE_STAGE_STATES = {StageState.SUCCEEDED, StageState.SKIPPED}
# metric suffix -> higher is better
GAP_METRICS = {"loss": False, "acc": True}


def run_progress(run: Run) -> dict[str, Any]:
    """Current stage, global step of the total budget and an ETA from the observed step rate.

    Uses the run's prefetched ``stage_runs`` (``run_list`` prefetches them)."""
    stages: list[StageRun] = list(run.stage_runs.all())
    if not stages:
        return {"step": 0, "total": 0, "fraction": 0.0, "stage_index": None, "stage_name": "",
                "eta_seconds": None}  # fmt: skip
    total = stages[-1].end_step
    step = 0
    for sr in stages:
        if sr.state in DONE_STAGE_STATES:
            step = max(step, sr.end_step)
        elif sr.last_step is not None:
            step = max(step, sr.last_step)
    current = next((sr for sr in stages if sr.state not in DONE_STAGE_STATES), stages[-1])
    if run.state == RunState.SUCCEEDED:
        step, current = total, stages[-1]
    eta = None
    own = [sr for sr in stages if sr.state != StageState.SKIPPED]
    started = min((sr.started_at for sr in own if sr.started_at), default=None)
    if run.state == RunState.RUNNING and started and own:
        done = step - own[0].start_step
        elapsed = (timezone.now() - started).total_seconds()
        if done > 0 and elapsed > 0:
            eta = round((total - step) * elapsed / done, 1)
    return {
        "step": step,
        "total": total,
        "fraction": round(step / total, 4) if total else 0.0,
        "stage_index": current.stage_index,
        "stage_name": current.name,
        "stage_count": len(stages),
        "eta_seconds": eta,
    }


DEFAULT_STALE_SECONDS = 600


def external_stale_seconds() -> int:
    """Seconds without a report after which a running external run is flagged stale."""
    return int(getattr(settings, "STAGEWISE_EXTERNAL_STALE_SECONDS", DEFAULT_STALE_SECONDS))


def external_report_status(run: Run, now: datetime | None = None) -> dict[str, Any]:
    """``last_report_at`` (ISO or None), ``last_report_age`` (whole seconds since the last
    report, or since the run started if it never reported; None for worker-run runs) and
    ``stale``: a running external run silent for longer than the stale threshold."""
    if not run.external:
        return {"last_report_at": None, "last_report_age": None, "stale": False}
    now = now or timezone.now()
    since = run.last_report_at or run.started_at or run.created_at
    age = max(0, int((now - since).total_seconds())) if since else None
    stale = run.state == RunState.RUNNING and age is not None and age > external_stale_seconds()
    return {
        "last_report_at": run.last_report_at.isoformat() if run.last_report_at else None,
        "last_report_age": age,
        "stale": stale,
    }


def run_row(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "name": run.name,
        "state": run.state,
        "team": run.team.slug,
        "pipeline": run.pipeline_id,
        "pipeline_name": run.pipeline.name if run.pipeline else None,
        "queue": run.queue.name,
        "priority": run.priority,
        "tags": list(run.tags),
        "parent": run.parent_id,
        "parent_name": run.parent.name if run.parent else None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error[:300],
        "external": run.external,
        **external_report_status(run),  # last_report_at, last_report_age, stale
        "stages": [
            {
                "index": sr.stage_index,
                "name": sr.name,
                "state": sr.state,
                "start_step": sr.start_step,
                "end_step": sr.end_step,
                "last_step": sr.last_step,
            }
            for sr in run.stage_runs.all()
        ],  # fmt: skip
        "progress": run_progress(run),
        "analysis": run_analysis_summary(run),
    }


def run_rows(
    *, user, filters: dict, ordering: str = "-created_at", page: int = 1, page_size: int = 25
) -> dict[str, Any]:
    if ordering not in RUN_ORDERINGS:
        ordering = "-created_at"
    qs = run_list(user=user, filters=filters).order_by(ordering, "-pk")
    pages = Paginator(qs, page_size)
    p = pages.get_page(page)
    return {
        "count": pages.count,
        "page": p.number,
        "pages": pages.num_pages,
        "results": [run_row(r) for r in p.object_list],
    }


def lineage_eval_points(
    run_ids_steps: list[tuple[int, int | None]], keys: list[str] | None = None
) -> dict[str, list[list[float]]]:
    """``eval/*`` points (or only ``keys``) of (run, up to step) pairs, as ``run_lineage``
    gives them, merged by key and ordered by step."""
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


def run_analysis(run: Run) -> dict[str, Any]:
    """Stability gaps of old tasks per stage boundary and the eval-set x stage-end matrix,
    from the eval series in the database (a fork includes its ancestors' history up to the
    fork points, which it shares).

    ``gaps`` holds one row per (boundary, task learned before it) whose metric dropped by
    more than the tolerance; ``gap_boundaries`` has, per boundary, the old tasks looked at and
    those without a drop (``without_drop``, a count for the page) or not measured yet. See
    ``gap_table``."""
    stages = list(run.stage_runs.all())
    points = lineage_eval_points(run_lineage(run))
    boundaries = [sr.end_step for sr in stages]
    done = [sr.end_step for sr in stages if sr.state in DONE_STAGE_STATES]
    by_metric: dict[str, dict[str, list]] = defaultdict(dict)
    for key, pts in points.items():
        parts = key.split("/")
        if len(parts) == 3:
            by_metric[parts[2]][parts[1]] = pts
    matrices = []
    for metric, hib in GAP_METRICS.items():
        sets = sorted(by_metric.get(metric, {}))
        if sets and done:
            series = [by_metric[metric][name] for name in sets]
            matrices.append(
                {
                    "metric": metric,
                    "higher_is_better": hib,
                    "eval_sets": sets,
                    "stages": [sr.name for sr in stages if sr.end_step in done],
                    "values": matrix_from_series(series, done),
                }
            )
    gaps, gap_boundaries = gap_table(run.plan, stages, by_metric)
    return {
        "run": run.pk,
        "boundaries": boundaries,
        "gaps": gaps,
        "gap_boundaries": gap_boundaries,
        "matrices": matrices,
        "eval_points": sum(len(v) for v in points.values()),
    }


def gap_table(
    plan: dict, stages: list[StageRun], by_metric: dict[str, dict[str, list]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, per-boundary summary) of the stability-gap table (trainers.analysis
    ``old_tasks`` / ``old_task_gap_table``).

    Each eval set is read in one metric, the one its kind is judged by: accuracy for a
    classification set, loss otherwise (the other one when only that was reported). A
    boundary looks only at the tasks learned before it: the stages' ``task`` up to it, minus
    the next stage's own; when no stage names a task, every eval set measured before it."""
    boundaries = [sr.end_step for sr in stages]
    if len(boundaries) < 2:
        return [], []
    kinds = {e.get("name"): e.get("kind", "lm") for e in plan.get("eval_sets") or []}
    names, metrics, series = [], [], []
    for name in sorted({n for sets in by_metric.values() for n in sets}):
        first = "acc" if kinds.get(name) == "classification" else "loss"
        metric = next((m for m in (first, *GAP_METRICS) if name in by_metric.get(m, {})), None)
        if metric is None:
            continue  # only ppl (or another metric) was reported for it
        names.append(name)
        metrics.append(metric)
        series.append(by_metric[metric][name])
    plan_stages = plan.get("stages") or []
    tasks = [(plan_stages[sr.stage_index].get("task") if sr.stage_index < len(plan_stages)
              else None) for sr in stages]  # fmt: skip
    old = old_tasks(tasks, names, series, boundaries)
    hib = [GAP_METRICS[m] for m in metrics]
    rows, summary = [], []
    for entry in old_task_gap_table(series, boundaries, old, higher_is_better=hib):
        i = entry["boundary_index"]
        after = stages[i + 1].name
        for rec in entry["rows"]:
            j = rec["eval_index"]
            rows.append({**rec, "metric": metrics[j], "eval_set": names[j], "stage_after": after})
        summary.append(
            {
                "boundary_index": i,
                "boundary_step": entry["boundary_step"],
                "stage_after": after,
                "old_tasks": [names[j] for j in old[i]],
                "dropped": [names[r["eval_index"]] for r in entry["rows"]],
                "without_drop": len(entry["without_drop"]),
                "without_drop_sets": [names[j] for j in entry["without_drop"]],
                "not_measured": [names[j] for j in entry["not_measured"]],
            }
        )
    return rows, summary


def queue_overview() -> list[dict[str, Any]]:
    """Every queue with its running and queued stage runs, in dispatch order. External runs'
    stages are left out of both: they run on their own machines and take none of the queue's
    slots; the external runs that are running only group under the queue (``external``)."""
    queues = list(Queue.objects.order_by("-priority", "name"))
    active = (
        StageRun.objects.filter(
            state__in=[StageState.RUNNING, StageState.QUEUED], run__external=False
        )
        .select_related("run", "run__team", "lease")
        .order_by("-run__priority", "queued_at", "pk")
    )
    by_queue: dict[int, dict[str, list]] = defaultdict(
        lambda: {"running": [], "queued": [], "external": []}
    )
    for sr in active:
        by_queue[sr.run.queue_id][sr.state].append(sr)
    for run in Run.objects.filter(external=True, state=RunState.RUNNING).order_by("name", "pk"):
        by_queue[run.queue_id]["external"].append(run)
    return [{"queue": q, **by_queue[q.pk]} for q in queues]


def runs_using_version(*, version_id: int, team_ids: list[int]) -> list[Run]:
    """Runs that trained on a dataset version (recorded at submit: ``RunDatasetVersion``)."""
    return list(
        Run.objects.filter(team_id__in=team_ids, dataset_uses__dataset_version_id=version_id)
        .distinct()
        .order_by("-created_at")[:50]
    )


def queue_overview_for(user) -> list[dict]:
    """The queues page's ``queue_overview`` as ``user`` may see it: the stage runs and external
    runs of the user's teams, each queued one with its place in the whole queue (1 = next),
    and the other teams' work only as counts (``others``: running, queued, external). Staff
    see everything."""
    items = queue_overview()
    for item in items:
        for place, sr in enumerate(item["queued"], start=1):
            sr.place = place
        for place, sr in enumerate(item["running"], start=1):
            sr.place = place
        item["others"] = {"running": 0, "queued": 0, "external": 0}
    if user.is_staff:
        return items
    mine = set(team_ids_for(user))
    for item in items:
        for kind in ("running", "queued", "external"):
            runs = [x.run if kind != "external" else x for x in item[kind]]
            kept = [x for x, run in zip(item[kind], runs, strict=True) if run.team_id in mine]
            item["others"][kind] = len(item[kind]) - len(kept)
            item[kind] = kept
    return items
