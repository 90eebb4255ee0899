"""Analysis endpoints: continual-learning metrics and the LR-annealing law."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api.permissions import visible_run
from runs.services.analysis import analysis_get
from runs.services.lr_law import LawError, lr_law_fit, lr_law_what_if
from runs.services.plans import plan_validate


class StageQuery(serializers.Serializer):
    stage = serializers.IntegerField(required=False, min_value=0)


class WhatIfIn(serializers.Serializer):
    plan = serializers.JSONField()
    stage = serializers.IntegerField(required=False, min_value=0)


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
            plan_validate(plan)
            return Response(
                lr_law_what_if(run=run, plan_data=plan, stage=data.validated_data.get("stage"))
            )
        except LawError as exc:
            raise ValidationError({"detail": str(exc)}) from None
