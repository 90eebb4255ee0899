"""Pages. Each view renders a template with the little data the page needs up front (passed
with ``json_script``); the page's JS module reads everything else from the JSON API."""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import BadRequest, ValidationError
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from runs.input_checks import id_value
from runs.models import Dataset, DatasetVersion, Pipeline, Queue
from runs.models.runs import RunState
from runs.selectors.dashboard import queue_overview_for, runs_using_version
from runs.selectors.pipelines import pipeline_list
from runs.selectors.runs import run_get, run_list
from runs.selectors.teams import team_ids_for, teams_for
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
    ids = set(team_ids_for(user))
    out = []
    for q in Queue.objects.prefetch_related("allowed_teams").order_by("-priority", "name"):
        allowed = {t.pk for t in q.allowed_teams.all()}
        if not allowed or allowed & ids:
            out.append({"name": q.name, "paused": q.paused})
    return out


@login_required
def runs_page(request):
    pipelines = Pipeline.objects.filter(team_id__in=team_ids_for(request.user)).order_by("name")
    return render(
        request,
        "frontend/runs.html",
        {
            "pipelines": pipelines,
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
    runs = run_list(user=request.user).order_by("-created_at")[:200]
    choices = [
        {"id": r.pk, "name": r.name, "state": r.state, "parent": r.parent_id,
         "pipeline": r.pipeline.name if r.pipeline else None}
        for r in runs
    ]  # fmt: skip
    return render(request, "frontend/compare.html", {"page_data": {"runs": choices}})


@login_required
def pipelines_page(request):
    return render(
        request, "frontend/pipelines.html", {"pipelines": pipeline_list(user=request.user)}
    )


def _visible_pipeline(request, pipeline_id: int) -> Pipeline:
    return get_object_or_404(pipeline_list(user=request.user), pk=pipeline_id)


WHATIF_STATES = (RunState.RUNNING, RunState.SUCCEEDED)


def _whatif_runs(user, pipeline: Pipeline | None, limit: int = 100) -> list[dict]:
    """Runs whose training loss the what-if box can fit the law on: running or finished runs
    of the user's teams, this pipeline's runs first, newest first."""
    runs = run_list(user=user).filter(state__in=WHATIF_STATES).order_by("-created_at")[:limit]
    rows = [{"id": r.pk, "name": r.name, "state": r.state, "pipeline": r.pipeline_id} for r in runs]
    if pipeline is not None:
        rows.sort(key=lambda r: r["pipeline"] != pipeline.pk)  # stable: keeps newest first
    return rows


@login_required
def pipeline_edit(request, pipeline_id: int | None = None):
    pipeline, plan = None, None
    if pipeline_id is not None:
        pipeline = _visible_pipeline(request, pipeline_id)
        plan = pipeline.plan
    elif request.GET.get("from"):
        try:
            source_id = id_value(request.GET["from"], "from")
        except ValidationError:
            raise BadRequest("?from= must be a pipeline id (a positive integer)") from None
        source = _visible_pipeline(request, source_id)
        plan = {**source.plan, "name": f"{source.name}-copy"}
    elif request.GET.get("example"):
        from runs.services.demo import EXAMPLES_DIR

        name = Path(request.GET["example"]).name
        path = EXAMPLES_DIR / f"{name}.json"
        # listed, not stat'ed: a 300-character name made is_file() raise (a 500)
        if path not in EXAMPLES_DIR.glob("*.json"):
            raise Http404(f"there is no example plan named {name[:100]!r}")
        if path.is_file():
            import json

            plan = json.loads(path.read_text())
    data = {
        "pipeline": pipeline.pk if pipeline else None,
        "plan": plan,
        "queues": _queues_for(request.user),
        "teams": [t.slug for t in teams_for(request.user)],
        "whatif_runs": _whatif_runs(request.user, pipeline),
    }
    return render(request, "frontend/pipeline_edit.html", {"pipeline": pipeline, "page_data": data})


@login_required
def datasets_page(request):
    datasets = (
        Dataset.objects.filter(team_id__in=team_ids_for(request.user))
        .select_related("team")
        .prefetch_related("versions")
        .order_by("name")
    )
    return render(
        request,
        "frontend/datasets.html",
        {
            "datasets": datasets,
            "page_data": {"max_bytes": max_upload_bytes()},
            "max_mb": max_upload_bytes() // (1024 * 1024),
        },
    )


@login_required
@require_POST
def dataset_upload(request):
    from runs.services.datasets import DatasetUploadError, dataset_version_create

    f = request.FILES.get("file")
    name = (request.POST.get("name") or "").strip()
    if f is None:
        return JsonResponse({"detail": "choose a file to upload", "field": "file"}, status=400)
    if f.size > max_upload_bytes():
        mb = max_upload_bytes() // (1024 * 1024)
        return JsonResponse({"detail": f"file is larger than {mb} MB", "field": "file"}, status=413)
    teams = list(teams_for(request.user).filter(pk__in=team_ids_for(request.user, write=True)))
    if not teams:
        return JsonResponse({"detail": "your role is read-only (viewer)"}, status=403)
    try:
        # The fields training will read are checked now, not when a stage starts.
        version, created = dataset_version_create(
            team=teams[0], name=name or f.name, upload=f, filename=f.name, user=request.user,
            text_field=request.POST.get("text_field") or "text",
            prompt_field=request.POST.get("prompt_field") or "",
            response_field=request.POST.get("response_field") or "",
        )  # fmt: skip
    except (DatasetUploadError, ValidationError) as exc:
        msg = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        field = getattr(exc, "field", "file")
        return JsonResponse({"detail": msg, "field": field}, status=400)
    return JsonResponse(
        {
            "dataset": version.dataset.name,
            "version": version.version,
            "id": version.pk,
            "created": created,
            "sha256": version.content_hash,
            "records": version.records,
            "url": f"/datasets/versions/{version.pk}/",
        },
        status=201 if created else 200,
    )


@login_required
def dataset_version_page(request, version_id: int):
    from runs.services.datasets import dataset_preview

    qs = DatasetVersion.objects.filter(dataset__team_id__in=team_ids_for(request.user))
    version = get_object_or_404(qs.select_related("dataset"), pk=version_id)
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
    for item in queues:
        workers = None if counts is None else counts.get(item["queue"].name, 0)
        item["workers"] = workers
        item["listening"] = None if workers is None else workers > 0
    return render(request, "frontend/queues.html", {"queues": queues})


@staff_member_required
@require_POST
def queue_toggle(request, queue_id: int):
    get_object_or_404(Queue, pk=queue_id)
    queue_set_paused(
        queues=Queue.objects.filter(pk=queue_id), paused=request.POST.get("paused") == "1"
    )
    return redirect("queues")
