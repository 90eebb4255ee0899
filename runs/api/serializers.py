"""Shapes only: input validation and output fields. No side effects (services do those)."""

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs.api import fields as f
from runs.api.schema import PLAN_REF, PLAN_STAGE_REF
from runs.models import Checkpoint, Dataset, DatasetVersion, Pipeline, Queue, Run, StageRun
from runs.models.datasets import DatasetFormat
from runs.models.metrics import MAX_KEY_LENGTH
from runs.selectors.dashboard import external_report_status
from runs.selectors.runs import run_analysis_summary
from runs.selectors.series import MAX_RAW_AFTER
from runs.services import runs_edit
from runs.services.datasets import PREVIEW_RECORDS

MAX_POINTS_PER_REQUEST = 50_000
MAX_PREVIEW_RECORDS = 100
MAX_CONFIG_BYTES = 1_000_000
MAX_STEP = 2**53 - 1  # trainers.plan.MAX_STEP: steps stay exact in float64


@extend_schema_field(PLAN_REF)
class PlanField(serializers.JSONField):
    """A trainers plan (trainers/plan.py): the OpenAPI component ``Plan`` is its JSON schema."""


@extend_schema_field({"oneOf": [PLAN_REF, {"type": "null"}]})
class NullablePlanField(serializers.JSONField):
    """A run's plan: null for a free-form run (stages declared as they happen)."""


@extend_schema_field(PLAN_STAGE_REF)
class PlanStageField(serializers.DictField):
    """One stage of a trainers plan (the component ``PlanStageSpec``)."""


# ------------------------------------------------------------------ errors (documented shapes)


class ErrorOut(serializers.Serializer):
    """Every 4xx answer: a reason, and for invalid input the reasons per field (dotted paths
    for nested fields: ``stages.1.eval_interval``)."""

    detail = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="invalid input: field -> reasons",
    )


class ConflictOut(ErrorOut):
    """409: the request does not fit the current state; ``runs`` names the runs in the way
    (a dataset version they use, the forks of a run), where there are any."""

    runs = serializers.ListField(child=serializers.IntegerField(), required=False)


class IngestErrorOut(ErrorOut):
    """400 for a metrics batch: a bad point (which one and why: ``index``, ``field``,
    ``reason``), or invalid input elsewhere in the body (``errors``)."""

    index = serializers.IntegerField(
        required=False, allow_null=True, help_text="the bad point's position in points"
    )
    field = serializers.CharField(
        required=False, allow_null=True, help_text="key, step, value, time or points"
    )
    reason = serializers.CharField(required=False, allow_null=True)


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


class AnalysisSummaryOut(serializers.Serializer):
    metric = serializers.CharField(allow_null=True, help_text="the metric the summary is about")
    acc = serializers.FloatField(allow_null=True)
    bwt = serializers.FloatField(allow_null=True)
    fwt = serializers.FloatField(allow_null=True)
    avg_forgetting = serializers.FloatField(allow_null=True)


class RunOut(serializers.ModelSerializer):
    stages = StageRunOut(source="stage_runs", many=True, read_only=True)
    analysis = serializers.SerializerMethodField(
        help_text="acc/bwt/fwt/avg_forgetting summary (null before any eval point)"
    )
    queue = serializers.SlugRelatedField(slug_field="name", read_only=True)
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    pipeline_name = serializers.CharField(
        source="pipeline.name",
        default=None,
        allow_null=True,
        read_only=True,
        help_text="null when the run has no pipeline (a raw plan, or its pipeline was deleted)",
    )
    stale = serializers.SerializerMethodField(
        help_text="a running external run with no report for STAGEWISE_EXTERNAL_STALE_SECONDS "
        "(its job may be gone; it is not failed for it)"
    )

    class Meta:
        model = Run
        fields = ["id", "name", "team", "pipeline", "pipeline_name", "queue", "priority", "state",
                  "tags", "seed", "parent", "fork_checkpoint", "created_at", "queued_at",
                  "started_at", "finished_at", "error", "external", "free_form",
                  "last_report_at", "stale", "stages", "analysis"]  # fmt: skip

    @extend_schema_field(AnalysisSummaryOut(allow_null=True))
    def get_analysis(self, run: Run) -> dict | None:
        return run_analysis_summary(run)

    def get_stale(self, run: Run) -> bool:
        return external_report_status(run)["stale"]


class MergeParentOut(serializers.Serializer):
    """One checkpoint a stage of the run starts from the weighted average of (init_merge)."""

    stage_index = serializers.IntegerField()
    position = serializers.IntegerField(help_text="J in stages.N.init_merge.J")
    reference = serializers.CharField(help_text="run:<run_id>@<step>")
    weight = serializers.FloatField(help_text="as written (the merge normalises the weights)")
    checkpoint = serializers.IntegerField(
        source="checkpoint_id", allow_null=True, help_text="null once the checkpoint is deleted"
    )
    run = serializers.IntegerField(source="checkpoint.run_id", default=None, allow_null=True)
    step = serializers.IntegerField(source="checkpoint.step", default=None, allow_null=True)


class RunDetailOut(RunOut):
    merge_parents = serializers.SerializerMethodField(
        help_text="the checkpoints (of the team's runs) its stages start from the merge of"
    )
    plan = NullablePlanField(
        read_only=True,
        help_text="the validated plan snapshot this run executes (null: a free-form run)",
    )
    overrides = serializers.DictField(read_only=True)
    config = serializers.DictField(
        read_only=True, help_text="the client's configuration as logged (external runs)"
    )

    @extend_schema_field(MergeParentOut(many=True))
    def get_merge_parents(self, run: Run) -> list[dict]:
        return MergeParentOut(run.merge_parents.select_related("checkpoint"), many=True).data

    def to_representation(self, run):
        data = super().to_representation(run)
        if run.free_form:
            data["plan"] = None  # stages declared as they happen: no plan
        return data

    class Meta(RunOut.Meta):
        fields = [*RunOut.Meta.fields, "notes", "plan", "overrides", "config", "merge_parents"]


class RunUpdateIn(serializers.Serializer):
    """PATCH: any of name, tags (replaced whole) and notes."""

    name = f.StrictCharField(max_length=runs_edit.NAME_MAX, validators=[f.NOT_BLANK])
    tags = serializers.ListField(
        child=f.StrictCharField(max_length=runs_edit.TAG_MAX, validators=[f.NOT_BLANK]),
        max_length=runs_edit.MAX_TAGS,
    )
    notes = f.StrictCharField(max_length=runs_edit.NOTES_MAX, allow_blank=True)


class RunSubmitIn(serializers.Serializer):
    pipeline = f.TeamPipelineField(required=False)
    plan = PlanField(required=False, help_text="a trainers plan (give this or pipeline)")
    queue = f.StrictSlugRelatedField(
        slug_field="name",
        queryset=Queue.objects.all(),
        required=False,
        help_text="required unless external (then default: the team's first usable queue)",
    )
    name = f.StrictCharField(max_length=200, required=False, allow_blank=True)
    priority = f.StrictIntegerField(default=0, min_value=-1000, max_value=1000)
    tags = serializers.ListField(child=f.StrictCharField(max_length=50), default=list)
    overrides = serializers.DictField(default=dict)
    team = f.StrictSlugField(required=False, help_text="team slug; default: your first team")
    external = f.StrictBooleanField(
        default=False,
        help_text="trained outside Stagewise: the client reports stages and metrics (never "
        "dispatched; file sources are not checked here). External without plan or pipeline: "
        "a free-form run, its stages declared as they happen (POST .../stages/)",
    )
    config = serializers.DictField(
        required=False, help_text="external runs: the client's configuration (hyperparameters)"
    )

    def validate(self, attrs):
        if "queue" not in attrs and not attrs["external"]:
            raise serializers.ValidationError({"queue": "This field is required."})
        free_form = attrs["external"] and "pipeline" not in attrs and "plan" not in attrs
        if ("pipeline" in attrs) == ("plan" in attrs) and not free_form:
            raise serializers.ValidationError({"pipeline": "give exactly one of pipeline or plan"})
        if "config" in attrs and not attrs["external"]:
            raise serializers.ValidationError({"config": "only external runs take a config"})
        if "config" in attrs and len(json.dumps(attrs["config"])) > MAX_CONFIG_BYTES:
            raise serializers.ValidationError(
                {"config": f"at most {MAX_CONFIG_BYTES:,} bytes of JSON"}
            )
        if "plan" in attrs and not isinstance(attrs["plan"], dict):
            raise serializers.ValidationError({"plan": "must be a JSON object"})
        return attrs


class StageDeclareIn(serializers.Serializer):
    index = f.StrictIntegerField(min_value=0, max_value=10_000, help_text="the next stage's index")
    name = f.StrictCharField(max_length=100, validators=[f.NOT_BLANK])
    start_step = f.StrictIntegerField(
        min_value=0, max_value=MAX_STEP - 2, help_text="the boundary: the previous stage ends here"
    )


class StageReportIn(serializers.Serializer):
    state = serializers.ChoiceField(choices=["running", "succeeded", "failed", "canceled"])
    error = f.StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=100_000,
        help_text="failed: what went wrong (the first 2,000 characters are kept)",
    )
    traceback = f.StrictCharField(
        required=False, allow_blank=True, default="", max_length=1_000_000
    )


class RunForkIn(serializers.Serializer):
    checkpoint = f.StrictIntegerField(help_text="id of a checkpoint of this run")
    stages = serializers.ListField(
        child=PlanStageField(),
        required=False,
        help_text="the stages after the checkpoint's (default: the parent's)",
    )
    queue = f.StrictSlugRelatedField(
        slug_field="name", queryset=Queue.objects.all(), required=False
    )
    name = f.StrictCharField(max_length=200, required=False, allow_blank=True)


class SeriesQuery(serializers.Serializer):
    keys = serializers.CharField(help_text="comma-separated series keys")
    min_step = serializers.IntegerField(required=False, min_value=0)
    max_step = serializers.IntegerField(required=False, min_value=0)
    max_points = serializers.IntegerField(
        default=1000,
        min_value=2,
        max_value=100_000,
        help_text="points per key; with after_step the default and the most are 50,000",
    )
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
        if "after_step" in attrs:  # live catch-up: every missed point unless max_points is given
            asked = attrs["max_points"] if "max_points" in self.initial_data else MAX_RAW_AFTER
            attrs["max_points"] = min(asked, MAX_RAW_AFTER)
        return attrs


class StageSummaryOut(serializers.Serializer):
    name = serializers.CharField()
    budget = serializers.IntegerField()
    unit = serializers.ChoiceField(choices=["steps", "tokens"])


class PipelineIO(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    plan = PlanField(help_text="the plan exactly as saved (see trainers/plan.py)")
    stages = StageSummaryOut(
        source="stage_summaries", many=True, read_only=True, help_text="read from the plan"
    )

    class Meta:
        model = Pipeline
        fields = ["id", "team", "name", "description", "plan", "stages", "created_at",
                  "updated_at"]  # fmt: skip


class PipelineIn(serializers.Serializer):
    plan = PlanField(help_text="a trainers plan; its name names the pipeline")
    description = f.StrictCharField(required=False, allow_blank=True, default="")
    team = f.StrictSlugField(required=False)
    replace = f.StrictBooleanField(
        default=False,
        help_text="replace the team's pipeline of the same name (default: a taken name is a 400)",
    )

    def validate_plan(self, plan):
        if not isinstance(plan, dict):
            raise serializers.ValidationError("must be a JSON object")
        return plan


class PipelineUpdateIn(PipelineIn):
    """PUT: the whole plan (name included: a rename keeps the pipeline's id)."""

    description = f.StrictCharField(
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


# ------------------------------------------------------------------ metrics and series


class PointIn(serializers.Serializer):
    key = serializers.CharField(max_length=MAX_KEY_LENGTH, help_text="e.g. train/loss")
    step = serializers.IntegerField(min_value=0, max_value=MAX_STEP, help_text="global step")
    value = serializers.FloatField(help_text="a finite number")
    time = serializers.FloatField(
        required=False, allow_null=True, help_text="unix seconds (default: when received)"
    )


class MetricsIn(serializers.Serializer):
    """Only documents the body: the view parses it column-wise (runs/services/ingest.py)."""

    points = PointIn(many=True, help_text=f"1 to {MAX_POINTS_PER_REQUEST:,} points")
    stage = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="only accept steps of this stage (and advance its progress)",
    )


class MetricsAcceptedOut(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="points stored (a re-sent one replaces)")


class SeriesKeysOut(serializers.Serializer):
    keys = serializers.ListField(child=serializers.CharField())


class SeriesLineOut(serializers.Serializer):
    steps = serializers.ListField(child=serializers.IntegerField())
    values = serializers.ListField(child=serializers.FloatField())
    level = serializers.IntegerField(
        required=False, allow_null=True, help_text="rollup level (null: raw points)"
    )
    min = serializers.ListField(
        child=serializers.FloatField(), required=False, help_text="downsampled: bucket minima"
    )
    max = serializers.ListField(
        child=serializers.FloatField(), required=False, help_text="downsampled: bucket maxima"
    )
    bucket_steps = serializers.IntegerField(required=False, help_text="downsampled: bucket width")
    own_from_step = serializers.IntegerField(
        required=False, allow_null=True, help_text="lineage: the run's first own step"
    )


class SeriesOut(serializers.Serializer):
    run = serializers.IntegerField()
    series = serializers.DictField(child=SeriesLineOut(), help_text="key -> its line")


# ------------------------------------------------------------------ datasets


class DatasetVersionOut(serializers.ModelSerializer):
    sha256 = serializers.CharField(source="content_hash", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = DatasetVersion
        fields = ["id", "version", "format", "size_bytes", "sha256", "records", "created_by",
                  "created_at"]  # fmt: skip
        read_only_fields = fields


class DatasetVersionDetailOut(DatasetVersionOut):
    runs = serializers.SerializerMethodField(help_text="ids of the runs that use this version")

    class Meta(DatasetVersionOut.Meta):
        fields = [*DatasetVersionOut.Meta.fields, "runs"]
        read_only_fields = fields

    def get_runs(self, version: DatasetVersion) -> list[int]:
        used = self.context.get("used_by") or {}
        return [r.pk for r in used.get(version.pk, [])]


class DatasetOut(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    latest = serializers.SerializerMethodField(help_text="the newest version")
    version_count = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["id", "team", "name", "description", "created_at", "updated_at", "latest",
                  "version_count"]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(DatasetVersionOut(allow_null=True))
    def get_latest(self, dataset: Dataset) -> dict | None:
        versions = list(dataset.versions.all())  # prefetched, newest first
        return DatasetVersionOut(versions[0]).data if versions else None

    def get_version_count(self, dataset: Dataset) -> int:
        return len(dataset.versions.all())


class DatasetDetailOut(DatasetOut):
    versions = DatasetVersionDetailOut(many=True, read_only=True, help_text="newest first")

    class Meta(DatasetOut.Meta):
        fields = [*DatasetOut.Meta.fields, "versions"]
        read_only_fields = fields


FORMAT_CHOICES = DatasetFormat.choices  # the formats FORMATS maps file extensions to


class DatasetUploadIn(serializers.Serializer):
    file = serializers.FileField(help_text=".txt, .jsonl or .parquet (or say which in format)")
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="the dataset's name in its team: a new name makes a dataset, a taken one its "
        "next version (default: the file's name)",
    )
    format = serializers.ChoiceField(
        choices=FORMAT_CHOICES,
        required=False,
        help_text="the file's format (default: from its extension)",
    )
    team = serializers.SlugField(required=False, help_text="team slug; default: your first team")
    text_field = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="JSONL/Parquet: the field holding the text (default: text)",
    )
    prompt_field = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="JSONL/Parquet: SFT prompts (with response_field)",
    )
    response_field = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="JSONL/Parquet: SFT responses (with prompt_field)",
    )


class DatasetUploadOut(serializers.Serializer):
    dataset = DatasetOut()
    version = DatasetVersionOut()
    created = serializers.BooleanField(
        help_text="false: the same bytes were uploaded before, and that version is answered"
    )


class PreviewQuery(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False,
        default=PREVIEW_RECORDS,
        min_value=1,
        max_value=MAX_PREVIEW_RECORDS,
        help_text="how many records (Parquet: at most those of the first row group)",
    )


class DatasetPreviewOut(serializers.Serializer):
    dataset = serializers.IntegerField()
    version = serializers.IntegerField()
    format = serializers.ChoiceField(choices=FORMAT_CHOICES)
    records = serializers.ListField(
        child=serializers.CharField(),
        help_text="the first records as display text: lines, JSON objects (each cut at 2,000 "
        "characters), Parquet rows as JSON",
    )


# ------------------------------------------------------------------ workers


class WorkerOut(serializers.Serializer):
    name = serializers.CharField(help_text="the Celery node name (name@host)")
    queues = serializers.ListField(
        child=serializers.CharField(), help_text="the queues it consumes that you may use"
    )
    all_queues = serializers.BooleanField(
        help_text="an all-queues worker: it also takes every queue created after it started"
    )
    state = serializers.ChoiceField(
        choices=["online", "lost", "stopped"], help_text="lost: its heartbeats stopped"
    )
    host = serializers.CharField()
    devices = serializers.ListField(
        child=serializers.DictField(), help_text='[{"kind": "cuda"|"cpu", "name", "memory_bytes"}]'
    )
    memory_bytes = serializers.IntegerField(allow_null=True, help_text="host memory")
    version = serializers.CharField()
    started_at = serializers.DateTimeField()
    heartbeat_at = serializers.DateTimeField()


# ------------------------------------------------------------------ many runs at once (compare)

import re  # noqa: E402

from runs.selectors.series import MAX_BULK_KEYS, MAX_BULK_POINTS, MAX_BULK_RUNS  # noqa: E402

MAX_BULK_LINE_POINTS = 10_000
_RUN_ID = "[0-9]{1,18}"
_KEY = f"[^,]{{1,{MAX_KEY_LENGTH}}}"
RUN_IDS_PATTERN = f"^{_RUN_ID}(,{_RUN_ID}){{0,{MAX_BULK_RUNS - 1}}}$"
KEYS_PATTERN = f"^{_KEY}(,{_KEY}){{0,{MAX_BULK_KEYS - 1}}}$"


def _listed(text: str, item: str, most: int, what: str) -> list[str]:
    """Comma-separated items, each matching ``item``, at most ``most``; any other text is a
    ValidationError saying what was wrong (the field's name comes with it)."""
    parts = text.split(",")
    bad = next((p for p in parts if not re.fullmatch(item, p)), None)
    if bad is not None:
        raise serializers.ValidationError(f"{bad[:50]!r} is not {what}")
    if len(parts) > most:
        raise serializers.ValidationError(f"at most {most} per request (got {len(parts)})")
    return list(dict.fromkeys(parts))


class CommaListField(serializers.CharField):
    """A query value of comma-separated items (``item`` a regex), at most ``most``, each
    once, kept as sent (no trimming: the schema's pattern is what is checked)."""

    item, most, what = ".+", 1, "an item"
    convert = staticmethod(str)

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> list:
        text = super().to_internal_value(data)
        return [self.convert(p) for p in _listed(text, self.item, self.most, self.what)]


@extend_schema_field({"type": "string", "pattern": RUN_IDS_PATTERN})
class RunIdsField(CommaListField):
    item, most, what = _RUN_ID, MAX_BULK_RUNS, "a run id (digits)"
    convert = staticmethod(int)


@extend_schema_field({"type": "string", "pattern": KEYS_PATTERN})
class SeriesKeysField(CommaListField):
    item, most = _KEY, MAX_BULK_KEYS
    what = f"a series key (1 to {MAX_KEY_LENGTH} characters)"


class SeriesBulkQuery(serializers.Serializer):
    runs = RunIdsField(
        help_text=f"comma-separated run ids, 1 to {MAX_BULK_RUNS}; runs you cannot see are "
        "left out of the answer and listed in `missing`"
    )
    keys = SeriesKeysField(help_text=f"comma-separated series keys, 1 to {MAX_BULK_KEYS}")
    max_points = serializers.IntegerField(
        default=1000,
        min_value=2,
        max_value=MAX_BULK_LINE_POINTS,
        help_text=f"points per run and key; all lines of one answer share a budget of "
        f"{MAX_BULK_POINTS:,} points (the answer's max_points says what each line got)",
    )
    lineage = serializers.BooleanField(
        default=False,
        help_text="each fork's whole history, as GET /api/runs/{id}/series/?lineage=true",
    )


class SeriesBulkOut(serializers.Serializer):
    runs = SeriesOut(
        many=True,
        help_text="per visible run, in the asked order: the answer GET /api/runs/{id}/series/ "
        "gives for the same keys, max_points and lineage",
    )
    missing = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="asked runs that do not exist or that you may not see (the same answer)",
    )
    max_points = serializers.IntegerField(help_text="points per line after the budget")


class CompareRunsQuery(serializers.Serializer):
    runs = RunIdsField(help_text=f"comma-separated run ids, 1 to {MAX_BULK_RUNS}")


class CompareRunOut(RunDetailOut):
    keys = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="its series keys, its visible ancestors' included (a fork's lineage)",
    )

    class Meta(RunDetailOut.Meta):
        fields = [*RunDetailOut.Meta.fields, "keys"]


class CompareRunsOut(serializers.Serializer):
    runs = CompareRunOut(many=True, help_text="the visible runs, in the asked order")
    missing = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="asked runs that do not exist or that you may not see (the same answer)",
    )
