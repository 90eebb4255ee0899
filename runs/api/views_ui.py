"""Small JSON endpoints shaped for the dashboard pages (frontend/). Read-only except the plan
preview, which validates a posted plan and returns its LR curve without storing anything, and
the datasets page's upload (a session-only form POST, a plain Django view)."""

from __future__ import annotations

import numpy as np
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.views.decorators.http import require_POST
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api import serializers as s
from runs.api.permissions import visible_run
from runs.api.views_datasets import upload_fields
from runs.input_checks import int_value
from runs.selectors.analysis import run_analysis
from runs.selectors.dashboard import run_row, run_rows
from runs.selectors.teams import team_ids_for, teams_for, visible_team
from runs.services.datasets import DatasetUploadError, dataset_version_create, max_upload_bytes
from runs.services.plans import plan_validate
from trainers.schedules import lr_at

MAX_PREVIEW_POINTS = 2000
MAX_PAGE = 1_000_000


class UiRunRows(APIView):
    """The runs list: filters, ordering, page; each row with its progress and ETA."""

    @extend_schema(operation_id="ui_runs_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        g = request.GET
        # A bad value is a 400 naming it ({"errors": {field: [reason]}}), never a guess.
        page = int_value(g.get("page") or 1, "page", min_value=1, max_value=MAX_PAGE)
        size = int_value(g.get("page_size") or 25, "page_size", min_value=1, max_value=200)
        data = run_rows(
            user=request.user,
            filters=g,  # the filters and the ordering, checked by run_list as for /api/runs/
            page=page,
            page_size=size,
        )
        return Response(data)


class UiRunSummary(APIView):
    """One run's row (state, stages, progress) plus its checkpoints, for the run page."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, run_id: int):
        run = visible_run(request, run_id)
        ckpts = run.checkpoints.select_related("stage_run").order_by("step")
        return Response(
            {
                **run_row(run),
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "fork_step": run.fork_checkpoint.step if run.fork_checkpoint_id else None,
                "checkpoints": s.CheckpointOut(ckpts, many=True).data,
            }
        )


class UiRunAnalysis(APIView):
    """Stability gaps and the forgetting matrix computed from the stored eval series."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, run_id: int):
        return Response(run_analysis(visible_run(request, run_id)))


def preview_grid(bounds: list[tuple[int, int]], n: int = MAX_PREVIEW_POINTS) -> np.ndarray:
    """At most ``n`` evenly spread global steps plus each stage's first steps and its end
    (where schedules have their corners), whatever the budget: the preview's cost does not
    grow with the number of steps."""
    total = bounds[-1][1]
    grid = np.linspace(0, total, num=min(n, total + 1)).round().astype(np.int64)
    corners = [s for a, b in bounds for s in (a, a + 1, b)]
    return np.unique(np.concatenate([grid, np.asarray(corners, dtype=np.int64)]))


class UiPlanPreview(APIView):
    """POST {"plan": {...}, "team"?: slug} -> the whole pipeline's LR per step, or field-path
    errors. The plan is checked against what ``team`` (default: the user's first) may read."""

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        body = request.data if isinstance(request.data, dict) else {}
        team = visible_team(request.user, body.get("team"))
        # a 400 with {"errors": {field path: [reasons]}} through the API's exception handler
        validated = plan_validate(body.get("plan"), team=team)
        bounds = validated.stage_bounds()
        steps = preview_grid(bounds)
        return Response(
            {
                "steps": steps.tolist(),
                "lr": [float(x) for x in lr_at(validated, steps)],
                "stages": [
                    {"name": st.name, "start_step": a, "end_step": b}
                    for st, (a, b) in zip(validated.stages, bounds, strict=True)
                ],
            }
        )


# ------------------------------------------------------------------ the datasets page's upload
# A page's form POST (session and CSRF token, the login redirect), not the API: API clients
# upload to /api/datasets/. Answers are JSON for the page's progress bar: {"detail", "field"}
# on a refusal, the version on success.


def _upload_refused(upload) -> JsonResponse | None:
    if upload is None:
        return JsonResponse({"detail": "choose a file to upload", "field": "file"}, status=400)
    if upload.size > max_upload_bytes():
        mb = max_upload_bytes() // (1024 * 1024)
        return JsonResponse({"detail": f"file is larger than {mb} MB", "field": "file"}, status=413)
    return None


def _upload_stored(version, created: bool) -> JsonResponse:
    body = {
        "dataset": version.dataset.name,
        "version": version.version,
        "id": version.pk,
        "created": created,
        "sha256": version.content_hash,
        "records": version.records,
        "url": f"/datasets/versions/{version.pk}/",
    }
    return JsonResponse(body, status=201 if created else 200)


@login_required
@require_POST
def dataset_upload(request):
    """The file as the next version of the dataset of that name (default: the file's name) in
    the first team the user may write to."""
    upload = request.FILES.get("file")
    if (refused := _upload_refused(upload)) is not None:
        return refused
    team = teams_for(request.user).filter(pk__in=team_ids_for(request.user, write=True)).first()
    if team is None:
        return JsonResponse({"detail": "your role is read-only (viewer)"}, status=403)
    name = (request.POST.get("name") or "").strip() or upload.name
    try:
        # The fields training will read are checked now, not when a stage starts.
        version, created = dataset_version_create(
            team=team, name=name, upload=upload, filename=upload.name, user=request.user,
            **upload_fields(request.POST),
        )  # fmt: skip
    except (DatasetUploadError, ValidationError) as exc:
        msg = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        return JsonResponse({"detail": msg, "field": getattr(exc, "field", "file")}, status=400)
    return _upload_stored(version, created)
