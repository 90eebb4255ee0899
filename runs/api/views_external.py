"""REST API of free-form external runs (``runs.services.freeform``): created by the run
submit (external, no plan), their stages declared by the client as they happen."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api import serializers as s
from runs.api.permissions import require_write, visible_run
from runs.services.errors import QueueAccessDenied
from runs.services.freeform import external_stage_declare, freeform_run_create


def free_form_created(request, team, v: dict) -> Response:
    """The answer to a run submit that is external without plan or pipeline."""
    try:
        run = freeform_run_create(
            team=team, queue=v.get("queue"), name=v.get("name", ""), tags=v["tags"],
            config=v.get("config"), user=request.user,
        )  # fmt: skip
    except QueueAccessDenied as exc:
        raise PermissionDenied(str(exc)) from None
    return Response(s.RunDetailOut(run).data, status=status.HTTP_201_CREATED)


class RunStageDeclare(APIView):
    """A free-form external run's client starts its next stage at ``start_step`` (the
    previous stage ends there). Repeating a declaration answers it unchanged; 409 for a run
    with a plan, a finished run or a different stage at that index."""

    @extend_schema(
        operation_id="runs_stage_declare",
        request=s.StageDeclareIn,
        responses={201: s.RunOut, 409: OpenApiResponse(s.ConflictOut)},
    )
    def post(self, request, run_id: int):
        run = visible_run(request, run_id)
        require_write(request, run.team_id)
        data = s.StageDeclareIn(data=request.data)
        data.is_valid(raise_exception=True)
        external_stage_declare(run=run, **data.validated_data)
        return Response(s.RunOut(visible_run(request, run_id)).data, status=status.HTTP_201_CREATED)
