"""Queue administration shared by the Django admin and the queues page."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from runs.models import Queue


@transaction.atomic
def queue_set_paused(*, queues: QuerySet[Queue], paused: bool) -> int:
    """Pause or resume; resuming dispatches right away instead of at the next tick."""
    n = queues.update(paused=paused)
    if not paused:
        from runs.services.dispatch import dispatch

        transaction.on_commit(dispatch)
    return n
