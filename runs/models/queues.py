from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from runs.models.base import TimeStampedModel

# A worker whose Celery node name starts with this consumes every queue, also those created
# after it started (runs/services/queues.py adds them to it)
ALL_QUEUES_NODE = "all-queues"


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


class WorkerState(models.TextChoices):
    ONLINE = "online", "Online"
    LOST = "lost", "Lost (no heartbeat)"
    STOPPED = "stopped", "Stopped"


class Worker(models.Model):
    """A Celery worker as it announced itself (runs/execution/registry.py): where it runs,
    what it has, what it consumes; kept current by its heartbeats. A worker whose heartbeats
    stop is marked lost by the scheduler (runs/services/workers.py)."""

    name = models.CharField(max_length=200, unique=True, help_text="Celery node name@host")
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list, help_text="queue names it consumes")
    devices = models.JSONField(
        default=list, help_text='[{"kind": "cuda"|"cpu", "name", "memory_bytes"}, ...]'
    )
    memory_bytes = models.BigIntegerField(null=True, blank=True, help_text="host memory")
    version = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10, choices=WorkerState, default=WorkerState.ONLINE)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def gpu_count(self) -> int:
        return sum(1 for d in self.devices if d.get("kind") == "cuda")

    @property
    def device_count(self) -> int:
        """Devices one stage may use here (``devices: N``): its GPUs, else the ``count`` of
        its CPU entry (``STAGEWISE_CPU_DEVICES`` of the worker, 1 if absent)."""
        if self.gpu_count:
            return self.gpu_count
        return sum(int(d.get("count", 1)) for d in self.devices if d.get("kind") == "cpu")
