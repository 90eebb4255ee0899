"""Which Celery workers are up and which queues each consumes, as the workers themselves
answer a broadcast (``inspect().active_queues()``, about 1 s; the answer is kept in Django's
cache for a few seconds so that several callers do not each wait for it).

Workers are shared by all teams: a user sees the queues their teams may use (an empty
``allowed_teams`` is every team's), staff see all. A worker busy on a stage still answers
(the pool's main process handles control messages), unless it runs with ``-P solo``."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache

from runs.models import Queue
from runs.selectors.queues import queues_for_teams
from runs.selectors.teams import team_ids_for
from runs.services.queues import ALL_QUEUES_NODE  # such a worker serves every queue

log = logging.getLogger(__name__)

CACHE_KEY = "stagewise:workers-active-queues"
CACHE_SECONDS = 10


class BrokerUnavailable(Exception):
    """The workers could not be asked (the broker is away)."""


def _ask_workers(timeout: float) -> dict[str, list[str]]:
    from webapp.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)  # fail fast: a page never hangs on the broker
        replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    return {worker: sorted({q["name"] for q in consumed}) for worker, consumed in replies.items()}


def active_queues(*, timeout: float = 1.0) -> dict[str, list[str]]:
    """worker node name -> the queue names it consumes; BrokerUnavailable if it cannot be asked."""
    cached = cache.get(CACHE_KEY)
    if cached is not None:
        return cached
    try:
        answer = _ask_workers(timeout)
    except Exception as exc:
        log.warning("could not ask workers for their queues", exc_info=True)
        raise BrokerUnavailable(
            "the workers cannot be asked now: the broker is not reachable"
        ) from exc
    cache.set(CACHE_KEY, answer, CACHE_SECONDS)
    return answer


def visible_queue_names(user) -> set[str]:
    qs = Queue.objects.all() if user.is_staff else queues_for_teams(team_ids_for(user))
    return set(qs.values_list("name", flat=True).distinct())


def worker_list(*, user, timeout: float = 1.0) -> list[dict[str, Any]]:
    """The workers that answered, by name, each with the queues of the table it consumes that
    ``user`` may see (workers consuming none of those are left out; the control worker, whose
    queue is not a training queue, too)."""
    visible = visible_queue_names(user)
    control = settings.STAGEWISE_CONTROL_QUEUE
    out = []
    for name, queues in sorted(active_queues(timeout=timeout).items()):
        shown = [q for q in queues if q in visible and q != control]
        if not shown:
            continue
        out.append({"name": name, "queues": shown, "all_queues": name.startswith(ALL_QUEUES_NODE)})
    return out
