"""Queue administration shared by the Django admin and the queues page, and the link between
the Queue table and the Celery workers that consume it.

A worker whose node name starts with ``all-queues`` (``manage.py up`` starts one as
``all-queues@<host>`` unless given ``--queues``) serves every queue in the table, including
those created after it started: saving a queue tells such workers to consume it at once, and
``queue_consumers_sync`` (a beat task) catches up on a message lost while the broker was away.
Workers with any other name keep exactly the ``-Q`` queues they were started with.

The control queue (``settings.STAGEWISE_CONTROL_QUEUE``: the scheduler's tasks) is never one
of the training queues: the Queue table may not hold its name (``Queue.clean``), and it is
left out here even if a row of that name was saved around that check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import current_app as app
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from kombu import Connection

from runs.models import Queue
from runs.models.queues import ALL_QUEUES_NODE
from runs.services.dispatch import dispatch

log = logging.getLogger(__name__)

# the node-name prefix of a worker that consumes every queue (runs.models.queues)
_ALL_QUEUES_PATTERN = {"pattern": f"{ALL_QUEUES_NODE}*@*", "matcher": "glob"}


def training_queue_names() -> list[str]:
    """The queues an all-queue worker consumes: every queue in the table but the control one."""
    return list(
        Queue.objects.exclude(name=settings.STAGEWISE_CONTROL_QUEUE).values_list("name", flat=True)
    )


@transaction.atomic
def queue_set_paused(*, queues: QuerySet[Queue], paused: bool) -> int:
    """Pause or resume; resuming dispatches right away instead of at the next tick."""
    n = queues.update(paused=paused)
    if not paused:
        transaction.on_commit(dispatch)
    return n


@contextmanager
def _broker() -> Iterator[Connection]:
    """A broker connection that fails after one retry instead of retrying forever (kombu's
    default when publishing), so a page or a save never hangs on a broker that is away."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        yield conn


def queue_consumers_add_on_commit(*, name: str) -> None:
    """After commit, tell the running all-queue workers to consume ``name`` (idempotent)."""
    transaction.on_commit(lambda: queue_consumers_add(name=name))


def queue_consumers_add(*, name: str) -> None:
    """Broadcast without waiting for replies: saving a queue must not wait on workers."""
    if name == settings.STAGEWISE_CONTROL_QUEUE:
        return
    try:
        with _broker() as conn:
            app.control.add_consumer(name, connection=conn, **_ALL_QUEUES_PATTERN)
    except Exception:  # broker away: queue_consumers_sync adds it once the broker is back
        log.warning("could not ask workers to consume queue %s", name, exc_info=True)


def queue_consumers_sync(*, timeout: float = 1.0) -> dict[str, list[str]]:
    """Make every all-queue worker that answers within ``timeout`` consume every queue in the
    table. Returns the queues asked for, per worker. Queues are only added, never cancelled:
    consuming a queue that was renamed or deleted costs nothing, cancelling one that a stage
    was just dispatched to would strand it until its lease expires."""
    names = set(training_queue_names())
    added: dict[str, list[str]] = {}
    with _broker() as conn:
        inspect = app.control.inspect(timeout=timeout, connection=conn, **_ALL_QUEUES_PATTERN)
        for worker, consumed in (inspect.active_queues() or {}).items():
            missing = sorted(names - {q["name"] for q in consumed})
            for name in missing:
                app.control.add_consumer(name, destination=[worker], connection=conn)
            if missing:
                added[worker] = missing
    return added


def queue_consumer_counts(*, timeout: float = 1.0) -> dict[str, int] | None:
    """How many workers answering within ``timeout`` consume each queue (queues nobody
    consumes are absent); None when the broker cannot be asked. Takes about 1 s whatever the
    timeout: the Redis transport's pending reply read (a 1 s BRPOP) ends before the
    connection closes."""
    try:
        with _broker() as conn:
            replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    except Exception:
        log.warning("could not ask workers for their queues", exc_info=True)
        return None
    counts: dict[str, int] = {}
    for consumed in replies.values():
        for name in {q["name"] for q in consumed}:
            counts[name] = counts.get(name, 0) + 1
    return counts


def queues_with_consumers(*, timeout: float = 1.0) -> set[str] | None:
    """Names of the queues at least one worker consumes; None when the broker cannot be asked."""
    counts = queue_consumer_counts(timeout=timeout)
    return None if counts is None else set(counts)
