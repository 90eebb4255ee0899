from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from runs.models.base import TimeStampedModel


class Queue(TimeStampedModel):
    """An admin-managed work queue. Workers listen on it by name (celery -Q <name>)."""

    name = models.SlugField(max_length=60, unique=True)
    description = models.CharField(max_length=200, blank=True)
    priority = models.IntegerField(default=0, help_text="higher starts first")
    paused = models.BooleanField(default=False)
    max_concurrent = models.PositiveIntegerField(default=1)
    allowed_teams = models.ManyToManyField(
        "runs.Team", blank=True, related_name="queues", help_text="empty: every team may use it"
    )

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_concurrent__gte=1), name="queue_max_concurrent_gte_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Stages sent to a queue of this name would run on the control worker, and every
        # all-queue worker would also take the scheduler's tasks.
        if self.name == settings.STAGEWISE_CONTROL_QUEUE:
            raise ValidationError(
                {"name": f"{self.name!r} is reserved for the control worker's queue"}
            )


class WorkerLease(models.Model):
    """The claim of one worker on one stage run, renewed by heartbeats."""

    stage_run = models.OneToOneField(
        "runs.StageRun", on_delete=models.CASCADE, related_name="lease"
    )
    worker_id = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("heartbeat_at")),
                name="lease_expires_after_beat",
            ),
            models.CheckConstraint(
                condition=Q(heartbeat_at__gte=models.F("acquired_at")),
                name="lease_beat_after_acquire",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.worker_id} → {self.stage_run_id}"
