"""Start queued stage runs on workers, honouring queue priority, pause and concurrency.

A dispatched stage run gets a placeholder lease (``dispatched:<token>``) that expires like any
lease, so a task message lost in the broker only delays the stage: the expiry job requeues it.
The worker that receives the task takes the lease over only with the matching token.

External runs (trained elsewhere, reporting over the API) are never dispatched, and their
running stages do not count against a queue's ``max_concurrent``: they use no worker.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from runs.models import Queue, RunState, StageRun, StageState, WorkerLease

_DISPATCH_LOCK = 0x5747_0001  # advisory lock id: one dispatcher at a time


EXECUTE_TASK = "runs.tasks.execute_stage_run"


def _send(stage_run_id: int, token: str, queue_name: str) -> None:
    # By name: the task module imports the execution layer, which imports these services.
    current_app.send_task(EXECUTE_TASK, args=[stage_run_id, token], queue=queue_name)


def dispatch() -> int:
    """Start as many queued stage runs as the queues allow. Returns how many were started."""
    sent: list[tuple[int, str, str]] = []
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_DISPATCH_LOCK])
        queues = (
            Queue.objects.filter(paused=False)
            .annotate(
                active=Count(
                    "runs__stage_runs",
                    filter=Q(runs__stage_runs__state="running", runs__external=False),
                )
            )
            .prefetch_related("allowed_teams")
        )
        free = {q.pk: q.max_concurrent - q.active for q in queues if q.active < q.max_concurrent}
        if not free:
            return 0
        allowed = {q.pk: {t.pk for t in q.allowed_teams.all()} for q in queues}
        candidates = (
            StageRun.objects.filter(
                state=StageState.QUEUED,
                run__state__in=[RunState.QUEUED, RunState.RUNNING],
                run__queue_id__in=list(free),
                run__external=False,
            )
            .select_related("run", "run__queue")
            .order_by("-run__queue__priority", "-run__priority", "queued_at", "pk")
        )
        now = timezone.now()
        lease_for = timedelta(seconds=settings.STAGEWISE_LEASE_SECONDS)
        for sr in candidates:
            qid = sr.run.queue_id
            if free.get(qid, 0) <= 0 or (allowed[qid] and sr.run.team_id not in allowed[qid]):
                continue
            token = secrets.token_hex(8)
            WorkerLease.objects.update_or_create(
                stage_run=sr,
                defaults=dict(
                    worker_id=f"dispatched:{token}",
                    acquired_at=now,
                    heartbeat_at=now,
                    expires_at=now + lease_for,
                ),
            )
            sr.state = StageState.RUNNING
            sr.attempts += 1
            sr.save(update_fields=["state", "attempts", "updated_at"])
            if sr.run.state == RunState.QUEUED:
                sr.run.state = RunState.RUNNING
                sr.run.started_at = sr.run.started_at or now
                sr.run.save(update_fields=["state", "started_at", "updated_at"])
            free[qid] -= 1
            sent.append((sr.pk, token, sr.run.queue.name))
        transaction.on_commit(lambda: [_send(*s) for s in sent])
    return len(sent)
