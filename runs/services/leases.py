"""Worker leases on stage runs: reserve for a dispatched task, take over, renew, release, and
collect the expired ones (``dispatch.requeue_expired`` puts their stages back in the queue)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.models import StageRun, StageState, WorkerLease
from runs.services.transitions import stage_mark_started

_DISPATCHED = "dispatched:"  # worker_id of a lease reserved for a task still on its way


def _lease_length() -> timedelta:
    return timedelta(seconds=settings.STAGEWISE_LEASE_SECONDS)


def lease_reserve(*, stage_run: StageRun, now: datetime) -> str:
    """A placeholder lease for the task about to be sent; it expires like any lease, so a task
    lost in the broker only delays the stage. Returns the token the task must present."""
    token = secrets.token_hex(8)
    WorkerLease.objects.update_or_create(
        stage_run=stage_run,
        defaults=dict(
            worker_id=f"{_DISPATCHED}{token}",
            acquired_at=now,
            heartbeat_at=now,
            expires_at=now + _lease_length(),
        ),
    )
    return token


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
    if lease.worker_id != f"{_DISPATCHED}{token}" and lease.expires_at > now:
        return None
    lease.worker_id = worker_id
    lease.acquired_at = lease.heartbeat_at = now
    lease.expires_at = now + _lease_length()
    lease.save()
    stage_mark_started(lease.stage_run, now=now)
    return lease.stage_run


def lease_return(*, stage_run_id: int, token: str) -> StageRun | None:
    """Drop the placeholder lease of a dispatched task that its worker will not run (this
    token's, unexpired): the stage run, still running, for the caller to requeue. None when
    the token no longer holds it (expired and requeued, or taken over). Inside a
    transaction."""
    lease = (
        WorkerLease.objects.select_for_update()
        .select_related("stage_run", "stage_run__run")
        .filter(stage_run_id=stage_run_id, worker_id=f"{_DISPATCHED}{token}")
        .first()
    )
    if lease is None or lease.expires_at <= timezone.now():
        return None
    lease.delete()
    return lease.stage_run


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


def leases_take_expired(*, now: datetime) -> list[StageRun]:
    """Delete the leases whose worker stopped heartbeating (rows another transaction holds are
    left for the next pass) and return their stage runs, with their runs. Inside a
    transaction."""
    expired = list(
        WorkerLease.objects.select_for_update(skip_locked=True)
        .filter(expires_at__lt=now)
        .select_related("stage_run", "stage_run__run")
    )
    WorkerLease.objects.filter(pk__in=[lease.pk for lease in expired]).delete()
    return [lease.stage_run for lease in expired]
