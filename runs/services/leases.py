"""Worker leases on stage runs: take over, renew, release, and requeue the expired."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.models import RunState, StageRun, StageState, WorkerLease
from runs.services.dispatch import dispatch


def _lease_length() -> timedelta:
    return timedelta(seconds=settings.STAGEWISE_LEASE_SECONDS)


@transaction.atomic
def lease_acquire(*, stage_run_id: int, token: str, worker_id: str) -> StageRun | None:
    """Take the stage run if the dispatcher meant this task for it (token) or its holder's
    lease has expired. Returns None when another live worker holds it or it is finished."""
    lease = (
        WorkerLease.objects.select_for_update()
        .select_related("stage_run", "stage_run__run")
        .filter(stage_run_id=stage_run_id)
        .first()
    )
    if lease is None or lease.stage_run.state != StageState.RUNNING:
        return None
    now = timezone.now()
    if lease.worker_id != f"dispatched:{token}" and lease.expires_at > now:
        return None
    lease.worker_id = worker_id
    lease.acquired_at = lease.heartbeat_at = now
    lease.expires_at = now + _lease_length()
    lease.save()
    sr = lease.stage_run
    sr.started_at = sr.started_at or now
    sr.save(update_fields=["started_at", "updated_at"])
    return sr


def lease_renew(*, stage_run_id: int, worker_id: str) -> bool:
    """Heartbeat. False means the lease was lost (expired and taken): stop working."""
    now = timezone.now()
    return bool(
        WorkerLease.objects.filter(stage_run_id=stage_run_id, worker_id=worker_id).update(
            heartbeat_at=now, expires_at=now + _lease_length()
        )
    )


def lease_release(*, stage_run_id: int, worker_id: str) -> None:
    WorkerLease.objects.filter(stage_run_id=stage_run_id, worker_id=worker_id).delete()


@transaction.atomic
def requeue_expired() -> int:
    """Stage runs whose worker stopped heartbeating go back to the queue; the next worker
    resumes from the latest checkpoint."""
    now = timezone.now()
    expired = list(
        WorkerLease.objects.select_for_update(skip_locked=True)
        .filter(expires_at__lt=now)
        .select_related("stage_run", "stage_run__run")
    )
    for lease in expired:
        sr = lease.stage_run
        lease.delete()
        # An external run's stages are run by its own client, never by a worker of ours.
        if sr.state != StageState.RUNNING or sr.run.external:
            continue
        if sr.run.state == RunState.CANCELED:
            sr.state, sr.finished_at = StageState.CANCELED, now
        else:
            sr.state, sr.queued_at = StageState.QUEUED, now
        sr.save(update_fields=["state", "finished_at", "queued_at", "updated_at"])
    if expired:
        transaction.on_commit(dispatch)
    return len(expired)
