"""Pages. Each view renders a template with the little data the page needs up front (passed
with ``json_script``); the page's JS module reads everything else from the JSON API."""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import BadRequest, ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from frontend.views_fork import builder_data
from runs.input_checks import id_value
from runs.models import Pipeline, Queue
from runs.models.runs import RunState
from runs.selectors.dashboard import queue_overview_for, runs_using_version
from runs.selectors.datasets import dataset_list, dataset_version_list
from runs.selectors.pipelines import example_plan, pipeline_list
from runs.selectors.queues import queues_for_teams
from runs.selectors.runs import run_choices, run_get, whatif_runs
from runs.selectors.teams import team_ids_for, teams_for
from runs.selectors.workers import devices_wait, queue_device_capacity, stage_devices, worker_list
from runs.services.datasets import max_upload_bytes
from runs.services.queues import queue_consumer_counts, queue_set_paused

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def plotly_js(request, version: str = ""):
    """Plotly.js from the installed ``plotly`` package (no CDN). The URL carries the version,
    so the file can be cached for a year."""
    resp = FileResponse(open(PLOTLY_JS, "rb"), content_type="text/javascript")  # noqa: SIM115
    resp["Cache-Control"] = "public, max-age=31536000, immutable"
    return resp


def _queues_for(user) -> list[dict]:
    return [{"name": q.name, "paused": q.paused} for q in queues_for_teams(team_ids_for(user))]


@login_required
def runs_page(request):
    return render(
        request,
        "frontend/runs.html",
        {
            "pipelines": pipeline_list(user=request.user),
            "queues": _queues_for(request.user),
            "states": RunState.choices,
            "f": request.GET,
        },
    )


@login_required
def run_page(request, run_id: int):
    run = run_get(user=request.user, run_id=run_id)
    if run is None:
        raise Http404("run not found")
    data = {
        "id": run.pk,
        "name": run.name,
        "eval_sets": [e["name"] for e in run.plan.get("eval_sets", [])],
        "can_write": run.team_id in team_ids_for(request.user, write=True),
        "queues": _queues_for(request.user),
        # A fork stores only points after its fork step; the page draws the parent's prefix.
        "parent": run.parent_id,
        "parent_name": run.parent.name if run.parent_id else None,
        "fork_step": run.fork_checkpoint.step if run.fork_checkpoint_id else None,
    }
    return render(request, "frontend/run.html", {"run": run, "page_data": data})


@login_required
def compare_page(request):
    choices = run_choices(user=request.user)
    return render(request, "frontend/compare.html", {"page_data": {"runs": choices}})


@login_required
def pipelines_page(request):
    return render(
        request, "frontend/pipelines.html", {"pipelines": pipeline_list(user=request.user)}
    )


def _visible_pipeline(request, pipeline_id: int) -> Pipeline:
    return get_object_or_404(pipeline_list(user=request.user), pk=pipeline_id)


def _new_pipeline_plan(request) -> dict | None:
    """The plan a new pipeline starts from: a copy of ``?from=<id>``'s, the example
    ``?example=<name>``, or none."""
    if request.GET.get("from"):
        try:
            source_id = id_value(request.GET["from"], "from")
        except ValidationError:
            raise BadRequest("?from= must be a pipeline id (a positive integer)") from None
        source = _visible_pipeline(request, source_id)
        return {**source.plan, "name": f"{source.name}-copy"}
    if request.GET.get("example"):
        plan = example_plan(request.GET["example"])
        if plan is None:
            name = Path(request.GET["example"]).name
            raise Http404(f"there is no example plan named {name[:100]!r}")
        return plan
    return None


@login_required
def pipeline_edit(request, pipeline_id: int | None = None):
    pipeline = None if pipeline_id is None else _visible_pipeline(request, pipeline_id)
    data = {
        "pipeline": pipeline.pk if pipeline else None,
        "plan": pipeline.plan if pipeline else _new_pipeline_plan(request),
        "queues": _queues_for(request.user),
        "teams": [t.slug for t in teams_for(request.user)],
        "whatif_runs": whatif_runs(user=request.user, pipeline_id=pipeline_id),
        **builder_data(request.user),  # the plan schema and the sources a stage may pick
    }
    return render(request, "frontend/pipeline_edit.html", {"pipeline": pipeline, "page_data": data})


@login_required
def datasets_page(request):
    max_bytes = max_upload_bytes()
    context = {
        "datasets": dataset_list(user=request.user),
        "page_data": {"max_bytes": max_bytes},
        "max_mb": max_bytes // (1024 * 1024),
    }
    return render(request, "frontend/datasets.html", context)


@login_required
def dataset_version_page(request, version_id: int):
    from runs.services.datasets import dataset_preview

    version = get_object_or_404(dataset_version_list(user=request.user), pk=version_id)
    try:
        preview, preview_error = dataset_preview(version), ""
    except Exception as exc:  # an unreadable file is shown as a message, not a 500
        preview, preview_error = [], f"cannot read the file: {exc}"
    used_by = runs_using_version(version_id=version.pk, team_ids=team_ids_for(request.user))
    return render(
        request,
        "frontend/dataset_version.html",
        {"v": version, "preview": preview, "preview_error": preview_error, "used_by": used_by},
    )


QUEUES_CONSUMED_CACHE_KEY = "stagewise:queues-consumed"
QUEUES_CONSUMED_CACHE_SECONDS = 10


def _queues_consumed() -> dict[str, int] | None:
    """Workers consuming each queue, or None when the broker cannot be asked. Asking the
    workers takes about 1 s (a broadcast waiting for replies), so it is asked once per page
    view, and the answer is kept in Django's cache for a few seconds: reloading the page or
    several users looking at once do not each wait for it."""
    cached = cache.get(QUEUES_CONSUMED_CACHE_KEY)
    if cached is not None:
        return cached["counts"]
    counts = queue_consumer_counts()
    cache.set(QUEUES_CONSUMED_CACHE_KEY, {"counts": counts}, QUEUES_CONSUMED_CACHE_SECONDS)
    return counts


@login_required
def queues_page(request):
    queues = queue_overview_for(request.user)  # other teams' runs only as counts
    counts = _queues_consumed()
    capacity = queue_device_capacity()
    for item in queues:
        workers = None if counts is None else counts.get(item["queue"].name, 0)
        item["workers"] = workers
        item["listening"] = None if workers is None else workers > 0
        for sr in item["queued"]:  # a stage with devices: N waits for a worker with N
            need = stage_devices(sr.run.plan, sr.stage_index)
            sr.devices_wait = devices_wait(need=need, queue=item["queue"].name, capacity=capacity)
    workers = worker_list(user=request.user)
    return render(request, "frontend/queues.html", {"queues": queues, "workers": workers})


@staff_member_required
@require_POST
def queue_toggle(request, queue_id: int):
    get_object_or_404(Queue, pk=queue_id)
    queue_set_paused(
        queues=Queue.objects.filter(pk=queue_id), paused=request.POST.get("paused") == "1"
    )
    return redirect("queues")
