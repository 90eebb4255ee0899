import uuid
from typing import ClassVar

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q

from runs.models.base import TimeStampedModel


class InvalidTransition(Exception):
    """Raised when a state change is not allowed by the state machine."""


class RunState(models.TextChoices):
    DRAFT = "draft", "Draft"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


RUN_TERMINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED}
RUN_TRANSITIONS: dict[str, set[str]] = {
    RunState.DRAFT: {RunState.QUEUED, RunState.CANCELED},
    RunState.QUEUED: {RunState.RUNNING, RunState.CANCELED, RunState.FAILED},
    # running -> queued: a lease expired and the stage waits for another worker
    RunState.RUNNING: {RunState.QUEUED, RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED},
    RunState.SUCCEEDED: set(),
    RunState.FAILED: set(),
    RunState.CANCELED: set(),
}


class StageState(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    SKIPPED = "skipped", "Skipped (inherited from parent)"


STAGE_TERMINAL = {StageState.SUCCEEDED, StageState.FAILED, StageState.CANCELED, StageState.SKIPPED}
STAGE_TRANSITIONS: dict[str, set[str]] = {
    StageState.PENDING: {StageState.QUEUED, StageState.CANCELED, StageState.SKIPPED},
    StageState.QUEUED: {StageState.RUNNING, StageState.CANCELED, StageState.FAILED},
    StageState.RUNNING: {
        StageState.QUEUED,
        StageState.SUCCEEDED,
        StageState.FAILED,
        StageState.CANCELED,
    },
    StageState.SUCCEEDED: set(),
    StageState.FAILED: set(),
    StageState.CANCELED: set(),
    StageState.SKIPPED: set(),
}


class StateMachine:
    """``is_terminal`` and ``check_transition`` for a model with a ``state`` field, read from
    the class's ``TRANSITIONS`` table and ``TERMINAL`` set. State changes themselves live in
    ``runs.services.transitions``."""

    TRANSITIONS: ClassVar[dict[str, set[str]]]
    TERMINAL: ClassVar[set[str]]
    state: str

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL

    def check_transition(self, new: str) -> None:
        if new not in self.TRANSITIONS.get(self.state, set()):
            what = f"{self._meta.verbose_name} {self.pk}"
            raise InvalidTransition(f"{what} cannot go from {self.state} to {new}")

    @classmethod
    def states_into(cls, new: str) -> list[str]:
        """The states from which ``new`` may be reached (for a guarded bulk update)."""
        return sorted(s for s, targets in cls.TRANSITIONS.items() if new in targets)


class Run(StateMachine, TimeStampedModel):
    TRANSITIONS = RUN_TRANSITIONS
    TERMINAL = RUN_TERMINAL

    uid = models.UUIDField(
        default=uuid.uuid4, unique=True, editable=False, help_text="names the run's folder"
    )
    team = models.ForeignKey("runs.Team", on_delete=models.PROTECT, related_name="runs")
    pipeline = models.ForeignKey(
        "runs.Pipeline", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    name = models.CharField(max_length=200)
    plan = models.JSONField(help_text="the validated trainers plan snapshot this run executes")
    overrides = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(default=0)
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    notes = models.TextField(blank=True, help_text="free text the team keeps about the run")
    queue = models.ForeignKey("runs.Queue", on_delete=models.PROTECT, related_name="runs")
    priority = models.IntegerField(default=0, help_text="higher starts first within a queue")
    state = models.CharField(
        max_length=10, choices=RunState.choices, default=RunState.DRAFT, db_index=True
    )
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )
    fork_checkpoint = models.ForeignKey(
        "runs.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    external = models.BooleanField(
        default=False,
        help_text="trained outside Stagewise (the client reports stages and metrics over the "
        "API); never dispatched to workers, its queue only groups it",
    )
    free_form = models.BooleanField(
        default=False,
        help_text="an external run without a plan: its client declares the stages as they "
        "happen (trainers.client), and its last stage is open",
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="the client's configuration (hyperparameters) as logged"
    )
    last_report_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="an external run's last accepted metrics batch or stage report (its only "
        "liveness signal); null for runs our workers execute, whose leases track liveness",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "state", "-created_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=RunState.values), name="run_state_valid"),
            models.CheckConstraint(condition=Q(seed__gte=0), name="run_seed_gte_0"),
            models.CheckConstraint(condition=~Q(parent=F("id")), name="run_not_own_parent"),
            models.CheckConstraint(
                condition=Q(fork_checkpoint__isnull=True) | Q(parent__isnull=False),
                name="run_fork_checkpoint_needs_parent",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=sorted(s.value for s in RUN_TERMINAL))
                | Q(finished_at__isnull=False),
                name="run_terminal_has_finished_at",
            ),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True)
                | Q(state__in=sorted(s.value for s in RUN_TERMINAL)),
                name="run_finished_at_only_terminal",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"


class StageRun(StateMachine, TimeStampedModel):
    TRANSITIONS = STAGE_TRANSITIONS
    TERMINAL = STAGE_TERMINAL

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stage_runs")
    stage_index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    state = models.CharField(
        max_length=10, choices=StageState.choices, default=StageState.PENDING, db_index=True
    )
    start_step = models.BigIntegerField(help_text="global step before this stage's first step")
    end_step = models.BigIntegerField(help_text="global step of this stage's last step")
    last_step = models.BigIntegerField(null=True, blank=True, help_text="latest step reported")
    attempts = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "stage_index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "stage_index"], name="stagerun_unique_index"),
            models.CheckConstraint(
                condition=Q(state__in=StageState.values), name="stagerun_state_valid"
            ),
            models.CheckConstraint(condition=Q(start_step__gte=0), name="stagerun_start_gte_0"),
            models.CheckConstraint(
                condition=Q(end_step__gt=F("start_step")), name="stagerun_end_after_start"
            ),
            models.CheckConstraint(
                condition=Q(last_step__isnull=True)
                | (Q(last_step__gte=F("start_step")) & Q(last_step__lte=F("end_step"))),
                name="stagerun_last_step_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} stage {self.stage_index} ({self.name})"


class Checkpoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints")
    stage_run = models.ForeignKey(StageRun, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.BigIntegerField()
    path = models.CharField(max_length=500)
    stage_end = models.BooleanField(default=False)
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step"], name="checkpoint_unique_step"),
            models.CheckConstraint(condition=Q(step__gte=0), name="checkpoint_step_gte_0"),
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="checkpoint_size_gte_0"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} @ {self.step}"
