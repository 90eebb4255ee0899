"""The worker registry's reads: the workers that announced themselves
(runs/execution/registry.py), their host, devices, memory, version, heartbeat and state, and
the queues each consumes as far as the user may see them.

Workers are shared by all teams: a user sees the queues their teams may use (an empty
``allowed_teams`` is every team's), staff see all. A stopped worker is listed for a day after
it stopped; online and lost ones always."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from runs.models import Queue, Worker, WorkerState
from runs.models.queues import ALL_QUEUES_NODE  # such a worker serves every queue
from runs.selectors.queues import queues_for_teams
from runs.selectors.teams import team_ids_for

STOPPED_SHOWN_FOR = timedelta(days=1)


def visible_queue_names(user) -> set[str]:
    qs = Queue.objects.all() if user.is_staff else queues_for_teams(team_ids_for(user))
    return set(qs.values_list("name", flat=True).distinct())


def workers_listed():
    recent = timezone.now() - STOPPED_SHOWN_FOR
    return Worker.objects.filter(~Q(state=WorkerState.STOPPED) | Q(stopped_at__gte=recent))


def worker_list(*, user) -> list[dict[str, Any]]:
    """The registered workers by name, each with the queues it consumes that ``user`` may
    see (workers consuming none of those are left out; the control worker, whose queue is
    not a training queue, too)."""
    visible = visible_queue_names(user)
    control = settings.STAGEWISE_CONTROL_QUEUE
    out = []
    for w in workers_listed().order_by("name"):
        shown = [q for q in w.queues if q in visible and q != control]
        if not shown:
            continue
        out.append({
            "name": w.name,
            "queues": shown,
            "all_queues": w.name.startswith(ALL_QUEUES_NODE),
            "state": w.state,
            "host": w.host,
            "devices": w.devices,
            "memory_bytes": w.memory_bytes,
            "version": w.version,
            "started_at": w.started_at,
            "heartbeat_at": w.heartbeat_at,
        })  # fmt: skip
    return out


def worker_counts() -> dict[str, int]:
    """Registered workers per state (stopped ones of the last day included)."""
    counts = dict.fromkeys(WorkerState.values, 0)
    for state in workers_listed().values_list("state", flat=True):
        counts[state] += 1
    return counts


def queue_device_capacity() -> dict[str, int]:
    """Queue name -> the most devices one online worker consuming it offers a stage
    (``Worker.device_count``); queues no online worker consumes are absent."""
    capacity: dict[str, int] = {}
    for w in Worker.objects.filter(state=WorkerState.ONLINE).only("queues", "devices"):
        for q in w.queues:
            capacity[q] = max(capacity.get(q, 0), w.device_count)
    return capacity


def stage_devices(plan: dict, stage_index: int) -> int:
    """The devices stage ``stage_index`` of a stored plan asks for: 1 unless it says more
    (also for a row whose plan is no plan, e.g. made by hand in the admin)."""
    try:
        return int(plan["stages"][stage_index].get("devices", 1))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        return 1


def devices_wait(*, need: int, queue: str, capacity: dict[str, int]) -> str | None:
    """Why a stage that asks for ``need`` devices cannot start on ``queue`` now, or None.
    One device is always there: such a stage waits only for a free slot."""
    have = capacity.get(queue)
    if need <= 1 or (have or 0) >= need:
        return None
    if have is None:
        return f"needs {need} devices; no online worker consumes this queue"
    return f"needs {need} devices; the largest online worker on this queue has {have}"
