"""Small JSON endpoints shaped for the dashboard pages (frontend/). Read-only except the plan
preview, which validates a posted plan and returns its LR curve without storing anything."""

from __future__ import annotations

import numpy as np
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api import serializers as s
from runs.api.permissions import visible_run
from runs.selectors.dashboard import run_analysis, run_row, run_rows
from runs.services.plans import plan_validate
from trainers.engine import lr_preview

MAX_PREVIEW_POINTS = 2000


class UiRunRows(APIView):
    """The runs list: filters, ordering, page; each row with its progress and ETA."""

    @extend_schema(operation_id="ui_runs_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        g = request.GET
        keys = ("state", "pipeline", "queue", "tag", "search")
        try:
            page = max(int(g.get("page", 1)), 1)
            size = min(max(int(g.get("page_size", 25)), 1), 200)
        except ValueError:
            return Response({"detail": "page and page_size must be integers"}, status=400)
        data = run_rows(
            user=request.user,
            filters={k: g.get(k) for k in keys},
            ordering=g.get("ordering", "-created_at"),
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


class UiPlanPreview(APIView):
    """POST {"plan": {...}} -> the whole pipeline's LR per step, or field-path errors."""

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        plan = request.data.get("plan") if isinstance(request.data, dict) else None
        # a 400 with {"errors": {field path: [reasons]}} through the API's exception handler
        validated = plan_validate(plan)
        lr = lr_preview(validated)
        stride = max(1, int(np.ceil(len(lr) / MAX_PREVIEW_POINTS)))
        steps = np.arange(len(lr))[::stride]
        if steps[-1] != len(lr) - 1:  # always show the last step
            steps = np.append(steps, len(lr) - 1)
        bounds = validated.stage_bounds()
        return Response(
            {
                "steps": steps.tolist(),
                "lr": [float(x) for x in lr[steps]],
                "stages": [
                    {"name": st.name, "start_step": a, "end_step": b}
                    for st, (a, b) in zip(validated.stages, bounds, strict=True)
                ],
            }
        )
