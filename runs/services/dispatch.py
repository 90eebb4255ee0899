"""What runs next, and where: start queued stage runs on workers, honouring queue priority,
pause, concurrency and team access, and put back in the queue the stages whose worker
stopped heartbeating.

A dispatched stage run gets a placeholder lease (``runs.services.leases.lease_reserve``) that
expires like any lease, so a task message lost in the broker only delays the stage: the expiry
job requeues it. The worker that receives the task takes the lease over only with the matching
token. The state changes are ``runs.services.transitions``'.

External runs (trained elsewhere, reporting over the API) are never dispatched, and their
running stages do not count against a queue's ``max_concurrent``: they use no worker.

A stage whose plan asks for ``devices: N`` (N > 1) is sent only when an online worker that
consumes its queue offers N devices (the worker registry, ``Worker.device_count``); until
then it waits and the stages behind it may start. A worker that receives a stage it has too
few devices for gives it back (``stage_give_back``) and the next dispatch sends it again.
"""

from __future__ import annotations

from celery import current_app
from django.db import connection, transaction
from django.db.models import Count, OuterRef, Q, QuerySet
from django.utils import timezone

from runs.models import Queue, RunState, StageRun, StageState
from runs.selectors.queues import queue_allowed_where
from runs.selectors.workers import devices_wait, queue_device_capacity, stage_devices
from runs.services.leases import lease_reserve, lease_return, leases_take_expired
from runs.services.transitions import run_to_running, stage_requeue, stage_to_running

_DISPATCH_LOCK = 0x5747_0001  # advisory lock id: one dispatcher at a time


EXECUTE_TASK = "runs.tasks.execute_stage_run"


def _send(stage_run_id: int, token: str, queue_name: str) -> None:
    # By name: the task module imports the execution layer, which imports these services.
    current_app.send_task(EXECUTE_TASK, args=[stage_run_id, token], queue=queue_name)


def _free_slots() -> dict[int, int]:
    """Queue id -> how many more stages it may run now (unpaused queues with room only)."""
    queues = Queue.objects.filter(paused=False).annotate(
        active=Count(
            "runs__stage_runs",
            filter=Q(runs__stage_runs__state=StageState.RUNNING, runs__external=False),
        )
    )
    return {q.pk: q.max_concurrent - q.active for q in queues if q.active < q.max_concurrent}


def _candidates(queue_ids: list[int]) -> QuerySet[StageRun]:
    """Queued stages of live worker runs on these queues whose team may use the queue, in the
    order they start: queue priority, run priority, then first queued."""
    return (
        StageRun.objects.filter(
            queue_allowed_where(queue=OuterRef("run__queue_id"), team=OuterRef("run__team_id")),
            state=StageState.QUEUED,
            run__state__in=[RunState.QUEUED, RunState.RUNNING],
            run__queue_id__in=queue_ids,
            run__external=False,
        )
        .select_related("run", "run__queue")
        .order_by("-run__queue__priority", "-run__priority", "queued_at", "pk")
    )


def dispatch() -> int:
    """Start as many queued stage runs as the queues allow. Returns how many were started."""
    sent: list[tuple[int, str, str]] = []
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_DISPATCH_LOCK])
        free = _free_slots()
        if not free:
            return 0
        now = timezone.now()
        capacity = queue_device_capacity()
        for sr in _candidates(list(free)):
            qid = sr.run.queue_id
            if free[qid] <= 0:
                continue
            need = stage_devices(sr.run.plan, sr.stage_index)
            if devices_wait(need=need, queue=sr.run.queue.name, capacity=capacity):
                continue  # no worker here has that many devices (yet)
            token = lease_reserve(stage_run=sr, now=now)
            stage_to_running(sr)
            run_to_running(sr.run, now=now)
            free[qid] -= 1
            sent.append((sr.pk, token, sr.run.queue.name))
        transaction.on_commit(lambda: [_send(*s) for s in sent])
    return len(sent)


@transaction.atomic
def stage_give_back(*, stage_run_id: int, token: str) -> bool:
    """The worker that received this task will not run it (too few devices): the stage goes
    back to the queue unstarted, for the next dispatch (within seconds) to send it again.
    False when the token no longer holds the stage."""
    sr = lease_return(stage_run_id=stage_run_id, token=token)
    if sr is None:
        return False
    stage_requeue(sr, now=timezone.now())
    return True


@transaction.atomic
def requeue_expired() -> int:
    """Stage runs whose worker stopped heartbeating go back to the queue (the next worker
    resumes from the latest checkpoint). Returns how many leases had expired."""
    now = timezone.now()
    expired = leases_take_expired(now=now)
    for sr in expired:
        # An external run's stages are run by its own client, never by a worker of ours.
        if not sr.run.external:
            stage_requeue(sr, now=now)
    if expired:
        transaction.on_commit(dispatch)
    return len(expired)
