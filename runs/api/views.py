"""REST API. Each view validates input, calls one service or selector, and shapes output."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api import serializers as s
from runs.api.permissions import require_write, team_for_write, visible_run, writable_run
from runs.api.streaming import stream_async
from runs.api.views_external import free_form_created
from runs.models import Checkpoint, Pipeline, Queue, RunState
from runs.selectors.export import export_csv
from runs.selectors.pipelines import pipeline_list
from runs.selectors.runs import (
    NAME_MAX,
    QUEUE_MAX,
    RUN_ORDERING_DEFAULT,
    RUN_ORDERINGS,
    TAG_MAX,
    run_list,
)
from runs.selectors.series import series_keys, series_read
from runs.services import runs as run_services
from runs.services import runs_edit
from runs.services.errors import QueueAccessDenied
from runs.services.external import external_stage_report
from runs.services.ingest import IngestError, parse_points
from runs.services.pipelines import pipeline_delete, pipeline_update
from runs.services.plans import pipeline_upsert_from_plan
from runs.services.points import points_from_client

_STATES = "|".join(RunState.values)
# Bounds as runs/selectors/runs.py checks them (a longer value could not match: a 400).
RUN_LIST_PARAMETERS = [
    OpenApiParameter(
        "state",
        # What choices_value accepts: items split on commas, blank ones skipped, one at least;
        # empty: no filter (as for every filter here).
        {
            "type": "string",
            "pattern": rf"^$|^(\s*,)*\s*({_STATES})\s*(,\s*(({_STATES})\s*)?)*$",
        },
        description="comma-separated run states: " + ", ".join(RunState.values),
    ),
    OpenApiParameter(
        "pipeline",
        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        description="a pipeline id",
    ),
    OpenApiParameter(
        "queue", {"type": "string", "maxLength": QUEUE_MAX}, description="a queue name"
    ),
    OpenApiParameter(
        "tag", {"type": "string", "maxLength": TAG_MAX}, description="runs with this tag"
    ),
    OpenApiParameter(
        "search",
        {"type": "string", "maxLength": NAME_MAX},
        description="in the run's name, its pipeline's name and its tags",
    ),
    OpenApiParameter(
        "ordering",
        {"type": "string", "enum": list(RUN_ORDERINGS)},
        description=f"default: {RUN_ORDERING_DEFAULT}",
    ),
]


class RunListCreate(ListAPIView):
    serializer_class = s.RunOut

    def get_queryset(self):
        # the filters and the ordering, checked: a bad one is a 400 naming it
        return run_list(user=self.request.user, filters=self.request.GET)

    @extend_schema(parameters=RUN_LIST_PARAMETERS)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=s.RunSubmitIn, responses={201: s.RunDetailOut})
    def post(self, request):
        data = s.RunSubmitIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        v = data.validated_data
        team = team_for_write(request, v.get("team"))
        if v.get("pipeline") and v["pipeline"].team_id != team.pk:  # one of the user's others
            raise ValidationError({"pipeline": [f"not a pipeline of team {team.slug!r}"]})
        if v["external"] and "plan" not in v and "pipeline" not in v:
            return free_form_created(request, team, v)
        try:
            run = run_services.run_submit(
                team=team,
                queue=v.get("queue"),
                pipeline=v.get("pipeline"),
                plan=v.get("plan"),
                name=v.get("name", ""),
                overrides=v["overrides"],
                priority=v["priority"],
                tags=v["tags"],
                user=request.user,
                external=v["external"],
            )
        except QueueAccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(s.RunDetailOut(run).data, status=status.HTTP_201_CREATED)


CONFLICT = OpenApiResponse(s.ConflictOut, description="does not fit the current state")


class RunDetail(APIView):
    """GET a run; PATCH its name, tags or notes (members); DELETE a finished, failed or canceled
    run with its points, checkpoints (on disk too) and analysis (members; 409 while it may
    still change or while forks of it exist)."""

    @extend_schema(responses=s.RunDetailOut)
    def get(self, request, run_id: int):
        return Response(s.RunDetailOut(visible_run(request, run_id)).data)

    @extend_schema(request=s.RunUpdateIn, responses=s.RunDetailOut)
    def patch(self, request, run_id: int):
        run = visible_run(request, run_id)
        require_write(request, run.team_id)
        data = s.RunUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        runs_edit.run_update(run=run, **data.validated_data)
        return Response(s.RunDetailOut(visible_run(request, run_id)).data)

    @extend_schema(request=None, responses={204: None, 409: CONFLICT})
    def delete(self, request, run_id: int):
        run = visible_run(request, run_id)
        require_write(request, run.team_id)
        try:
            runs_edit.run_delete(run=run)
        except runs_edit.RunInUse as exc:
            return Response({"detail": str(exc), "runs": exc.runs}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunCancel(APIView):
    @extend_schema(request=None, responses={200: s.RunDetailOut, 409: CONFLICT})
    def post(self, request, run_id: int):
        run = visible_run(request, run_id)
        require_write(request, run.team_id)
        run = run_services.run_cancel(run=run)
        return Response(s.RunDetailOut(visible_run(request, run.pk)).data)


class RunFork(APIView):
    @extend_schema(request=s.RunForkIn, responses={201: s.RunDetailOut})
    def post(self, request, run_id: int):
        parent = visible_run(request, run_id)
        data = s.RunForkIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        team = team_for_write(request, parent.team.slug)
        ckpt = Checkpoint.objects.filter(pk=v["checkpoint"], run=parent).first()
        if ckpt is None:
            raise ValidationError(
                {"checkpoint": f"run {parent.pk} has no checkpoint {v['checkpoint']}"}
            )
        try:
            run = run_services.run_fork(
                checkpoint=ckpt,
                stages=v.get("stages"),
                queue=v.get("queue"),
                name=v.get("name", ""),
                user=request.user,
                team=team,
            )
        except QueueAccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(s.RunDetailOut(run).data, status=status.HTTP_201_CREATED)


class RunCheckpoints(ListAPIView):
    """The run's checkpoints by step (paginated like every list)."""

    serializer_class = s.CheckpointOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request user
            return Checkpoint.objects.none()
        run = visible_run(self.request, self.kwargs["run_id"])
        return run.checkpoints.select_related("stage_run").order_by("step", "pk")


class RunStageReport(APIView):
    """An external run's client reports a stage's state (running, succeeded, failed,
    canceled); 409 for a run our workers execute, an illegal change or a canceled run."""

    @extend_schema(request=s.StageReportIn, responses={200: s.RunOut, 409: CONFLICT})
    def post(self, request, run_id: int, index: int):
        run = visible_run(request, run_id)
        require_write(request, run.team_id)
        data = s.StageReportIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        external_stage_report(
            run=run, stage_index=index, state=v["state"], error=v["error"], traceback=v["traceback"]
        )
        return Response(s.RunOut(visible_run(request, run_id)).data)


class RunMetrics(APIView):
    """POST a batch of up to 50,000 points of an external run (a point is identified by
    (run, key, step): a re-sent one replaces; ``"stage": i`` only narrows the steps allowed
    to stage i's). Steps are integers from 0 to 2**53 - 1 within the run's stages. 409 for a
    run Stagewise's workers execute and for a finished, failed or canceled run. GET lists
    the run's series keys."""

    @extend_schema(
        request=s.MetricsIn,
        responses={
            200: s.MetricsAcceptedOut,
            400: OpenApiResponse(s.IngestErrorOut, description="a bad point, named by index"),
            409: CONFLICT,
        },
    )
    def post(self, request, run_id: int):
        run = writable_run(request, run_id)
        body = request.data if isinstance(request.data, dict) else {}
        stage = body.get("stage")
        if stage is not None and (type(stage) is not int or stage < 0):
            raise DjangoValidationError({"stage": ["must be a stage index (an integer >= 0)"]})
        try:
            points = parse_points(body.get("points"), limit=s.MAX_POINTS_PER_REQUEST)
            n = points_from_client(run=run, points=points, stage_index=stage)
        except IngestError as exc:
            return Response(
                {"detail": str(exc), "index": exc.index, "field": exc.field, "reason": exc.reason},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response({"accepted": n})

    @extend_schema(responses={200: s.SeriesKeysOut})
    def get(self, request, run_id: int):
        run = visible_run(request, run_id)
        return Response({"keys": series_keys(run_id=run.pk)})


class RunExport(APIView):
    """GET the run's raw points as CSV (key, step, value, wall_time, stage), streamed."""

    @extend_schema(
        parameters=[s.ExportQuery],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, run_id: int):
        run = visible_run(request, run_id)
        q = s.ExportQuery(data=request.GET)
        q.is_valid(raise_exception=True)
        chunks = export_csv(run_id=run.pk, keys=q.validated_data.get("keys") or None)
        response = StreamingHttpResponse(stream_async(chunks), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-metrics.csv"'
        return response


class RunSeries(APIView):
    @extend_schema(parameters=[s.SeriesQuery], responses={200: s.SeriesOut})
    def get(self, request, run_id: int):
        run = visible_run(request, run_id)
        q = s.SeriesQuery(data=request.GET)
        q.is_valid(raise_exception=True)
        series = series_read(run=run, user=request.user, **q.validated_data)
        return Response({"run": run.pk, "series": series})


class PipelineListCreate(ListAPIView):
    serializer_class = s.PipelineIO

    def get_queryset(self):
        return pipeline_list(user=self.request.user)

    @extend_schema(request=s.PipelineIn, responses={201: s.PipelineIO})
    def post(self, request):
        data = s.PipelineIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        team = team_for_write(request, v.get("team"))
        with transaction.atomic():
            pipeline = pipeline_upsert_from_plan(
                team=team, plan=v["plan"], user=request.user, replace=v["replace"]
            )
            if v["description"]:
                pipeline.description = v["description"]
                pipeline.save(update_fields=["description"])
        return Response(s.PipelineIO(pipeline).data, status=status.HTTP_201_CREATED)


class PipelineDetail(APIView):
    def _get(self, request, pipeline_id: int) -> Pipeline:
        pipeline = pipeline_list(user=request.user).filter(pk=pipeline_id).first()
        if pipeline is None:
            raise NotFound(f"pipeline {pipeline_id} not found")
        return pipeline

    @extend_schema(responses=s.PipelineIO)
    def get(self, request, pipeline_id: int):
        return Response(s.PipelineIO(self._get(request, pipeline_id)).data)

    @extend_schema(request=s.PipelineUpdateIn, responses=s.PipelineIO)
    def put(self, request, pipeline_id: int):
        pipeline = self._get(request, pipeline_id)
        require_write(request, pipeline.team_id)
        data = s.PipelineUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        pipeline_update(pipeline=pipeline, plan=v["plan"], description=v.get("description"))
        return Response(s.PipelineIO(self._get(request, pipeline_id)).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, pipeline_id: int):
        pipeline = self._get(request, pipeline_id)
        require_write(request, pipeline.team_id)
        pipeline_delete(pipeline=pipeline)
        return Response(status=status.HTTP_204_NO_CONTENT)


class QueueList(ListAPIView):
    serializer_class = s.QueueOut
    queryset = Queue.objects.prefetch_related("allowed_teams").order_by("-priority", "name")
