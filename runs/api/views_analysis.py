"""Analysis endpoints: continual-learning metrics and the LR-annealing law."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api.permissions import visible_run
from runs.selectors.analysis import analysis_get
from runs.services.lr_law import WHOLE_RUN, LawError, lr_law_fit, lr_law_what_if
from runs.services.plans import plan_validate


@extend_schema_field(OpenApiTypes.STR)
class StageField(serializers.Field):
    """A stage index (>= 0), or "all" for the whole run (also what leaving it out means)."""

    def to_internal_value(self, data):
        if data == WHOLE_RUN:
            return WHOLE_RUN
        if isinstance(data, bool) or not (isinstance(data, int) or str(data).isdigit()):
            raise serializers.ValidationError(f'a stage index (0, 1, ...) or "{WHOLE_RUN}"')
        return int(data)

    def to_representation(self, value):
        return value


class StageQuery(serializers.Serializer):
    stage = StageField(required=False)


class WhatIfIn(serializers.Serializer):
    plan = serializers.JSONField()
    stage = StageField(required=False)


class RunAnalysisView(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request, run_id: int):
        return Response(analysis_get(run=visible_run(request, run_id)))


class RunLrLaw(APIView):
    @extend_schema(parameters=[StageQuery], responses={200: dict})
    def get(self, request, run_id: int):
        run = visible_run(request, run_id)
        q = StageQuery(data=request.GET)
        q.is_valid(raise_exception=True)
        try:
            return Response(lr_law_fit(run=run, stage=q.validated_data.get("stage")))
        except LawError as exc:
            raise ValidationError({"detail": str(exc)}) from None


class RunLrLawWhatIf(APIView):
    @extend_schema(request=WhatIfIn, responses={200: dict})
    def post(self, request, run_id: int):
        run = visible_run(request, run_id)
        data = WhatIfIn(data=request.data)
        data.is_valid(raise_exception=True)
        plan = data.validated_data["plan"]
        if not isinstance(plan, dict):
            raise ValidationError({"plan": "must be a JSON object"})
        try:
            plan_validate(plan, team=run.team)  # what the run's team may read, as on submit
            return Response(
                lr_law_what_if(run=run, plan_data=plan, stage=data.validated_data.get("stage"))
            )
        except LawError as exc:
            raise ValidationError({"detail": str(exc)}) from None
