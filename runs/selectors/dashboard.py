"""Reads for the dashboard pages: run rows with progress, queue contents (the run page's
analysis is ``runs.selectors.analysis``).

Read-only; every function answers in a fixed number of queries.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.utils import timezone

from runs.models import Queue, Run, RunState, StageRun, StageState
from runs.selectors.analysis import DONE_STAGE_STATES
from runs.selectors.runs import run_analysis_summary, run_list
from runs.selectors.teams import team_ids_for


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
        "free_form": run.free_form,
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


def run_rows(*, user, filters: dict, page: int = 1, page_size: int = 25) -> dict[str, Any]:
    """One page of the runs list, filtered and ordered by ``filters`` (``run_list``)."""
    qs = run_list(user=user, filters=filters)
    pages = Paginator(qs, page_size)
    p = pages.get_page(page)
    return {
        "count": pages.count,
        "page": p.number,
        "pages": pages.num_pages,
        "results": [run_row(r) for r in p.object_list],
    }


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
