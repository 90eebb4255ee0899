"""Which queues a team may use: the one rule, read by run submit and fork, dispatch, the pages
and the workers list.

A queue that lists no teams (``Queue.allowed_teams`` empty) is open to every team; a queue
that lists teams is open to those teams only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from runs.models import Queue, Team


def _open_to(lookup: str, teams: Any) -> Q:
    """The rule as a filter on queues: no team listed, or ``allowed_teams__<lookup>`` matches
    ``teams`` (``"in"``: a list of team ids; ``"exact"``: one team, or a column reference)."""
    return Q(allowed_teams=None) | Q(**{f"allowed_teams__{lookup}": teams})


def queues_for_teams(team_ids: Iterable[int]) -> QuerySet[Queue]:
    """The queues at least one of ``team_ids`` may use, in dispatch order."""
    return (
        Queue.objects.filter(_open_to("in", list(team_ids)))
        .distinct()
        .order_by("-priority", "name")
    )


def queues_for_team(team: Team) -> QuerySet[Queue]:
    """The queues ``team`` may use, in dispatch order."""
    return queues_for_teams([team.pk])


def queue_allowed(queue: Queue, team: Team) -> bool:
    return queues_for_team(team).filter(pk=queue.pk).exists()


def queue_allowed_where(*, queue: OuterRef, team: OuterRef) -> Exists:
    """``queue_allowed`` inside a query, for each row: ``queue`` and ``team`` name its columns
    (e.g. ``OuterRef("run__queue_id")``, ``OuterRef("run__team_id")``)."""
    return Exists(Queue.objects.filter(_open_to("exact", team), pk=queue))
