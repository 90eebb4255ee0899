"""The run page's reads besides series and analysis (``runs.selectors.run_events``): the run's
events along its steps with its forks, failure and x-axis maps; its notes rendered as safe
HTML. Read-only; the notes are edited with PATCH /api/runs/{id}/."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api.permissions import visible_run
from runs.selectors.run_events import notes_html, run_timeline


class RunEventOut(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=[
            "stage_start",
            "stage_end",
            "checkpoint",
            "requeue",
            "resume",
            "divergence",
            "failed",
            "cancel",
            "fork",
        ]  # fmt: skip
    )
    step = serializers.IntegerField(allow_null=True, help_text="null: not recorded")
    time = serializers.DateTimeField(allow_null=True, help_text="null: not recorded")
    stage = serializers.IntegerField(required=False, allow_null=True)
    attempt = serializers.IntegerField(required=False, help_text="requeue: the attempt lost")


class RunForkRefOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    step = serializers.IntegerField(allow_null=True, help_text="the fork checkpoint's step")
    checkpoint = serializers.IntegerField(allow_null=True)


class RunFailureOut(serializers.Serializer):
    stage = serializers.IntegerField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    traceback = serializers.CharField(allow_blank=True, help_text="its last 50,000 characters")


class RunAxesOut(serializers.Serializer):
    tokens = serializers.DictField(
        allow_null=True,
        help_text='{"source": "series", "key": "train/tokens"} or {"source": "plan", "stages": '
        "[{start_step, end_step, tokens_per_step}]}; null when unknown",
    )
    clock = serializers.DictField(
        allow_null=True, help_text="{steps, times}: step -> wall time (unix s) samples; null: none"
    )


class RunEventsOut(serializers.Serializer):
    run = serializers.IntegerField()
    events = RunEventOut(many=True)
    forks = RunForkRefOut(many=True)
    failure = RunFailureOut(allow_null=True)
    axes = RunAxesOut()


class RunNotesOut(serializers.Serializer):
    notes = serializers.CharField(allow_blank=True, help_text="the Markdown source")
    html = serializers.CharField(allow_blank=True, help_text="rendered; raw HTML escaped")


class RunEvents(APIView):
    """Stage starts and ends, checkpoints, requeues and resumes (with the attempt),
    divergence, cancel, forks taken from the run; the failed stage's error and traceback; the
    maps from step to tokens seen and to wall time."""

    @extend_schema(responses=RunEventsOut)
    def get(self, request, run_id: int):
        return Response(run_timeline(run=visible_run(request, run_id), user=request.user))


class RunNotes(APIView):
    """The run's notes: the Markdown source and its HTML (no tag of the author's own)."""

    @extend_schema(responses=RunNotesOut)
    def get(self, request, run_id: int):
        run = visible_run(request, run_id)
        return Response({"notes": run.notes, "html": notes_html(run.notes)})
