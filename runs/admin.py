from django.contrib import admin, messages
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q

from runs.models import (
    ApiToken,
    Checkpoint,
    DataRoot,
    Dataset,
    DatasetVersion,
    Membership,
    Pipeline,
    Queue,
    Run,
    RunAnalysis,
    Series,
    StageRun,
    Team,
    Worker,
    WorkerLease,
)
from runs.services.queues import queue_set_paused, queues_with_consumers
from runs.services.tokens import token_revoke


class AnnotatedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose rows carry ``annotations`` (alias: expression), computed in the
    changelist's one query: counts that columns made by `count_column` show and sort by."""

    annotations: dict[str, Count] = {}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(**self.annotations)


def count_column(alias: str, description: str):
    """A list_display column showing, and sorting by, the annotation ``alias``."""

    @admin.display(ordering=alias, description=description)
    def column(self, obj) -> int:
        return getattr(obj, alias)

    return column


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(AnnotatedAdmin):
    list_display = ["name", "slug", "member_count", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    annotations = {"_members": Count("memberships")}
    member_count = count_column("_members", "members")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__name"]
    autocomplete_fields = ["user", "team"]


class DatasetVersionInline(admin.TabularInline):
    model = DatasetVersion
    extra = 0
    readonly_fields = [
        "version",
        "format",
        "size_bytes",
        "content_hash",
        "storage_path",
        "created_at",
    ]


@admin.register(Dataset)
class DatasetAdmin(AnnotatedAdmin):
    list_display = ["name", "team", "version_count", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "description"]
    fields = ["team", "name", "description", "created_by"]
    inlines = [DatasetVersionInline]
    annotations = {"_versions": Count("versions")}
    version_count = count_column("_versions", "versions")


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["dataset", "version", "format", "size_bytes", "short_hash", "created_at"]
    list_filter = ["format", "dataset__team"]
    search_fields = ["dataset__name", "content_hash"]
    readonly_fields = ["content_hash", "size_bytes", "created_at"]

    @admin.display(description="hash")
    def short_hash(self, obj: DatasetVersion) -> str:
        return obj.content_hash[:12]


@admin.register(Pipeline)
class PipelineAdmin(AnnotatedAdmin):
    list_display = ["name", "team", "stage_count", "run_count", "updated_at"]
    list_filter = ["team"]
    search_fields = ["name", "description"]
    fields = ["team", "description", "created_by", "name", "plan"]
    # The plan is edited (and validated) on the pipeline page or through the API, never here.
    readonly_fields = ["name", "plan"]
    annotations = {"_runs": Count("runs", distinct=True)}
    run_count = count_column("_runs", "runs")

    @admin.display(description="stages")
    def stage_count(self, obj: Pipeline) -> int:
        return len(obj.stage_summaries)


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    can_delete = False
    fields = ["stage_index", "name", "state", "start_step", "end_step", "last_step", "attempts"]
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "team", "pipeline", "queue", "state", "priority", "created_at"]
    list_filter = ["state", "queue", "team"]
    search_fields = ["name", "tags"]
    readonly_fields = [
        "plan",
        "parent",
        "fork_checkpoint",
        "queued_at",
        "started_at",
        "finished_at",
    ]
    inlines = [StageRunInline]


@admin.register(StageRun)
class StageRunAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "stage_index", "name", "state", "progress", "attempts"]
    list_filter = ["state"]
    search_fields = ["run__name", "name"]
    readonly_fields = ["traceback"]

    @admin.display(description="progress")
    def progress(self, obj: StageRun) -> str:
        done = (obj.last_step or obj.start_step) - obj.start_step
        return f"{done}/{obj.end_step - obj.start_step}"


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["run", "step", "stage_run", "stage_end", "size_bytes", "created_at"]
    list_filter = ["stage_end"]
    search_fields = ["run__name", "path"]


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ["name", "priority", "paused", "max_concurrent", "running", "waiting", "teams",
                    "consumers"]  # fmt: skip
    list_editable = ["priority", "paused", "max_concurrent"]
    list_filter = ["paused"]
    search_fields = ["name", "description"]
    filter_horizontal = ["allowed_teams"]
    actions = ["pause", "resume", "raise_priority", "lower_priority", "more_concurrency",
               "less_concurrency"]  # fmt: skip

    def changelist_view(self, request, extra_context=None):
        # Ask the workers once per page (a broadcast waiting 1 s for replies), not per row.
        request.queues_consumed = queues_with_consumers()
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        qs = (
            super()
            .get_queryset(request)
            .annotate(
                # external runs only group under a queue; they take none of its slots
                _running=Count(
                    "runs",
                    filter=Q(runs__state="running", runs__external=False),
                    distinct=True,
                ),
                _waiting=Count("runs", filter=Q(runs__state="queued"), distinct=True),
            )
            .prefetch_related("allowed_teams")
        )
        consumed = getattr(request, "queues_consumed", None)
        if consumed is not None:
            listening = Q(name__in=sorted(consumed))
            qs = qs.annotate(_listening=ExpressionWrapper(listening, output_field=BooleanField()))
        return qs

    @admin.display(ordering="_running", description="running")
    def running(self, obj: Queue) -> int:
        return obj._running

    @admin.display(ordering="_waiting", description="queued")
    def waiting(self, obj: Queue) -> int:
        return obj._waiting

    @admin.display(description="allowed teams")
    def teams(self, obj: Queue) -> str:
        return ", ".join(t.name for t in obj.allowed_teams.all()) or "all"

    @admin.display(description="workers")
    def consumers(self, obj: Queue) -> str:
        listening = getattr(obj, "_listening", None)
        if listening is None:
            return "unknown (broker unreachable)"
        return "listening" if listening else "no worker listening"

    def _done(self, request, n: int, what: str) -> None:
        self.message_user(request, f"{n} queue(s) {what}.", messages.SUCCESS)

    @admin.action(description="Pause selected queues")
    def pause(self, request, queryset):
        self._done(request, queue_set_paused(queues=queryset, paused=True), "paused")

    @admin.action(description="Resume selected queues")
    def resume(self, request, queryset):
        self._done(request, queue_set_paused(queues=queryset, paused=False), "resumed")

    @admin.action(description="Raise priority by 1")
    def raise_priority(self, request, queryset):
        self._done(request, queryset.update(priority=F("priority") + 1), "raised")

    @admin.action(description="Lower priority by 1")
    def lower_priority(self, request, queryset):
        self._done(request, queryset.update(priority=F("priority") - 1), "lowered")

    @admin.action(description="Allow one more concurrent run")
    def more_concurrency(self, request, queryset):
        n = queryset.update(max_concurrent=F("max_concurrent") + 1)
        self._done(request, n, "widened")

    @admin.action(description="Allow one fewer concurrent run (minimum 1)")
    def less_concurrency(self, request, queryset):
        n = queryset.filter(max_concurrent__gt=1).update(max_concurrent=F("max_concurrent") - 1)
        self._done(request, n, "narrowed")


@admin.register(WorkerLease)
class WorkerLeaseAdmin(admin.ModelAdmin):
    list_display = ["stage_run", "worker_id", "acquired_at", "heartbeat_at", "expires_at"]
    search_fields = ["worker_id"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """The registry: written by the workers themselves (runs/execution/registry.py)."""

    list_display = ["name", "state", "host", "pid", "gpus", "version", "heartbeat_at"]
    list_filter = ["state"]
    search_fields = ["name", "host"]
    readonly_fields = [f.name for f in Worker._meta.fields]

    @admin.display(description="GPUs")
    def gpus(self, obj: Worker) -> int:
        return obj.gpu_count

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ["run", "key", "count", "first_step", "last_step"]
    search_fields = ["key", "run__name"]
    readonly_fields = ["count", "first_step", "last_step"]


@admin.register(RunAnalysis)
class RunAnalysisAdmin(admin.ModelAdmin):
    list_display = ["run", "metric", "bwt", "avg_forgetting", "updated_at"]
    search_fields = ["run__name"]
    readonly_fields = ["run", "metric", "eval_sets", "boundaries", "baseline", "result", "state"]

    def _metric(self, obj: RunAnalysis, name: str):
        value = (obj.result.get("metrics") or {}).get(name)
        return None if value is None else round(value, 4)

    @admin.display(description="BWT")
    def bwt(self, obj: RunAnalysis):
        return self._metric(obj, "bwt")

    @admin.display(description="avg forgetting")
    def avg_forgetting(self, obj: RunAnalysis):
        return self._metric(obj, "avg_forgetting")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made by their users (/settings/tokens/: the key is shown to them once); here
    staff see them and revoke them. Nothing here can show a key: only its hash is stored."""

    list_display = ["prefix", "name", "user", "team", "created_at", "expires_at", "last_used_at",
                    "revoked_at"]  # fmt: skip
    list_filter = ["team", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username", "team__slug"]
    readonly_fields = ["user", "team", "prefix", "created_at", "last_used_at", "revoked_at",
                       "revoked_by"]  # fmt: skip
    fields = ["name", "user", "team", "prefix", "expires_at", "created_at", "last_used_at",
              "revoked_at", "revoked_by"]  # fmt: skip
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        n = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token_revoke(token=token, by=request.user)
            n += 1
        self.message_user(request, f"{n} token(s) revoked", messages.SUCCESS)


@admin.register(DataRoot)
class DataRootAdmin(admin.ModelAdmin):
    """Folders a team's plans may read files and model directories under (see README, Data
    and model access). Anything else on the server is refused to them."""

    list_display = ["path", "team", "description", "created_at"]
    list_filter = ["team"]
    search_fields = ["path", "team__slug", "description"]
    autocomplete_fields = ["team"]
