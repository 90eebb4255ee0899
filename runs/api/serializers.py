"""Shapes only: input validation and output fields. No side effects (services do those)."""

from rest_framework import serializers

from runs.models import Checkpoint, Pipeline, Queue, Run, StageRun
from runs.selectors.dashboard import external_report_status
from runs.selectors.runs import run_analysis_summary

MAX_POINTS_PER_REQUEST = 50_000


class StageRunOut(serializers.ModelSerializer):
    class Meta:
        model = StageRun
        fields = ["id", "stage_index", "name", "state", "start_step", "end_step", "last_step",
                  "attempts", "started_at", "finished_at", "error"]  # fmt: skip


class CheckpointOut(serializers.ModelSerializer):
    stage_index = serializers.IntegerField(source="stage_run.stage_index")

    class Meta:
        model = Checkpoint
        fields = ["id", "step", "stage_index", "stage_end", "size_bytes", "created_at"]


class RunOut(serializers.ModelSerializer):
    stages = StageRunOut(source="stage_runs", many=True, read_only=True)
    analysis = serializers.SerializerMethodField(help_text="acc/bwt/fwt/avg_forgetting summary")
    queue = serializers.SlugRelatedField(slug_field="name", read_only=True)
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    pipeline_name = serializers.CharField(source="pipeline.name", default=None, read_only=True)
    stale = serializers.SerializerMethodField(
        help_text="a running external run with no report for STAGEWISE_EXTERNAL_STALE_SECONDS "
        "(its job may be gone; it is not failed for it)"
    )

    class Meta:
        model = Run
        fields = ["id", "name", "team", "pipeline", "pipeline_name", "queue", "priority", "state",
                  "tags", "seed", "parent", "fork_checkpoint", "created_at", "queued_at",
                  "started_at", "finished_at", "error", "external", "last_report_at",
                  "stale", "stages", "analysis"]  # fmt: skip

    def get_analysis(self, run: Run) -> dict | None:
        return run_analysis_summary(run)

    def get_stale(self, run: Run) -> bool:
        return external_report_status(run)["stale"]


class RunDetailOut(RunOut):
    class Meta(RunOut.Meta):
        fields = [*RunOut.Meta.fields, "plan", "overrides"]


class RunSubmitIn(serializers.Serializer):
    pipeline = serializers.PrimaryKeyRelatedField(queryset=Pipeline.objects.all(), required=False)
    plan = serializers.JSONField(required=False)
    queue = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Queue.objects.all(),
        required=False,
        help_text="required unless external (then default: the team's first usable queue)",
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    priority = serializers.IntegerField(default=0, min_value=-1000, max_value=1000)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), default=list)
    overrides = serializers.DictField(default=dict)
    team = serializers.SlugField(required=False, help_text="team slug; default: your first team")
    external = serializers.BooleanField(
        default=False,
        help_text="trained outside Stagewise: the client reports stages and metrics (never "
        "dispatched; file sources are not checked here)",
    )

    def validate(self, attrs):
        if "queue" not in attrs and not attrs["external"]:
            raise serializers.ValidationError({"queue": "This field is required."})
        if ("pipeline" in attrs) == ("plan" in attrs):
            raise serializers.ValidationError({"pipeline": "give exactly one of pipeline or plan"})
        if "plan" in attrs and not isinstance(attrs["plan"], dict):
            raise serializers.ValidationError({"plan": "must be a JSON object"})
        return attrs


class StageReportIn(serializers.Serializer):
    state = serializers.ChoiceField(choices=["running", "succeeded", "failed", "canceled"])
    error = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=100_000,
        help_text="failed: what went wrong (the first 2,000 characters are kept)",
    )
    traceback = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=1_000_000
    )


class RunForkIn(serializers.Serializer):
    checkpoint = serializers.IntegerField(help_text="id of a checkpoint of this run")
    stages = serializers.ListField(child=serializers.DictField(), required=False)
    queue = serializers.SlugRelatedField(
        slug_field="name", queryset=Queue.objects.all(), required=False
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class SeriesQuery(serializers.Serializer):
    keys = serializers.CharField(help_text="comma-separated series keys")
    min_step = serializers.IntegerField(required=False, min_value=0)
    max_step = serializers.IntegerField(required=False, min_value=0)
    max_points = serializers.IntegerField(default=1000, min_value=2, max_value=100_000)
    after_step = serializers.IntegerField(required=False, min_value=-1)
    lineage = serializers.BooleanField(
        default=False,
        help_text="a fork's whole history: its ancestors' points up to the fork steps, then its "
        "own; each key's answer then has own_from_step (its first own step, or null)",
    )

    def validate(self, attrs):
        lo, hi = attrs.get("min_step"), attrs.get("max_step")
        if lo is not None and hi is not None and lo > hi:
            raise serializers.ValidationError({"min_step": "must not exceed max_step"})
        attrs["keys"] = [k for k in attrs["keys"].split(",") if k]
        if not attrs["keys"]:
            raise serializers.ValidationError({"keys": "name at least one series key"})
        return attrs


class StageSummaryOut(serializers.Serializer):
    name = serializers.CharField()
    budget = serializers.IntegerField()
    unit = serializers.ChoiceField(choices=["steps", "tokens"])


class PipelineIO(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    plan = serializers.JSONField(help_text="the plan exactly as saved (see trainers/plan.py)")
    stages = StageSummaryOut(
        source="stage_summaries", many=True, read_only=True, help_text="read from the plan"
    )

    class Meta:
        model = Pipeline
        fields = ["id", "team", "name", "description", "plan", "stages", "created_at",
                  "updated_at"]  # fmt: skip


class PipelineIn(serializers.Serializer):
    plan = serializers.JSONField(help_text="a trainers plan; its name names the pipeline")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    team = serializers.SlugField(required=False)
    replace = serializers.BooleanField(
        default=False,
        help_text="replace the team's pipeline of the same name (default: a taken name is a 400)",
    )

    def validate_plan(self, plan):
        if not isinstance(plan, dict):
            raise serializers.ValidationError("must be a JSON object")
        return plan


class PipelineUpdateIn(PipelineIn):
    """PUT: the whole plan (name included: a rename keeps the pipeline's id)."""

    description = serializers.CharField(
        required=False, allow_blank=True, help_text="left out: keeps the stored description"
    )
    team = None  # a pipeline stays in its team
    replace = None


class QueueOut(serializers.ModelSerializer):
    allowed_teams = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)

    class Meta:
        model = Queue
        fields = ["id", "name", "description", "priority", "paused", "max_concurrent",
                  "allowed_teams"]  # fmt: skip


class ExportQuery(serializers.Serializer):
    keys = serializers.CharField(
        required=False, help_text="comma-separated series keys (default: every series)"
    )

    def validate_keys(self, value: str) -> list[str]:
        return [k for k in value.split(",") if k]
