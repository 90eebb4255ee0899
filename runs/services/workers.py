"""The worker registry's writes: a worker announces itself when it is ready, heartbeats while
it runs, says when it stops; the scheduler marks the silent ones lost."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from runs.models import Worker, WorkerState


def worker_announce(*, name: str, facts: dict[str, Any]) -> Worker:
    """Create or refresh the worker ``name`` (a restarted worker reuses its row).
    ``facts``: host, pid, queues, devices, memory_bytes, version."""
    now = timezone.now()
    fields = {**facts, "state": WorkerState.ONLINE, "started_at": now, "heartbeat_at": now}
    worker, _ = Worker.objects.update_or_create(name=name, defaults={**fields, "stopped_at": None})
    return worker


def worker_heartbeat(*, name: str, queues: list[str]) -> bool:
    """The worker is alive and consumes ``queues`` now. False if it has no row (announce)."""
    return bool(
        Worker.objects.filter(name=name).update(
            heartbeat_at=timezone.now(), queues=queues, state=WorkerState.ONLINE
        )
    )


def worker_stopped(*, name: str) -> None:
    now = timezone.now()
    Worker.objects.filter(name=name).update(state=WorkerState.STOPPED, stopped_at=now)


def workers_mark_lost(*, now: datetime | None = None) -> int:
    """Online workers without a heartbeat for STAGEWISE_WORKER_LOST_SECONDS become lost."""
    now = now or timezone.now()
    silent = now - timedelta(seconds=settings.STAGEWISE_WORKER_LOST_SECONDS)
    return Worker.objects.filter(state=WorkerState.ONLINE, heartbeat_at__lt=silent).update(
        state=WorkerState.LOST
    )
