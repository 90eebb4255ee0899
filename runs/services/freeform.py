"""Free-form external runs: trained and logged by a client (``trainers.client``) without a
plan, their stages declared as they happen.

A free-form run starts with no stages. ``external_stage_declare`` appends stage ``index`` at
``start_step``: the previous stage ends there (succeeded) and the new one is running. The
last stage is open: its points may lie anywhere from its start on, and its ``end_step``
follows the last step stored (``open_stage_extend``). The client's report of the last stage
(``runs.services.external.external_stage_report``) ends the run like any external run's.

Declarations are idempotent: declaring a stage that exists with the same name and start
answers it unchanged (a client's retry), anything else about an existing stage is a 409.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from runs.models import Queue, Run, RunState, StageRun, StageState, Team
from runs.services.errors import Conflict, RunCanceled
from runs.services.external import external_touch
from runs.services.realtime import run_event
from runs.services.runs import queue_check_access, queue_default_for
from runs.services.transitions import (
    run_initial_fields,
    stage_mark_started,
    stage_to_queued,
    stage_to_running,
    stage_to_succeeded,
)
from trainers.plan import MAX_STEP

STAGE_NAME_MAX = 100


def freeform_run_create(
    *,
    team: Team,
    queue: Queue | None,
    name: str = "",
    tags: list[str] | None = None,
    config: dict[str, Any] | None = None,
    user=None,
) -> Run:
    """A free-form external run: running from the start, with no stages until its client
    declares the first. Without a ``queue`` it goes to the team's first usable one (a queue
    only groups external runs)."""
    if queue is None:
        queue = queue_default_for(team=team)
    queue_check_access(queue=queue, team=team)
    return Run.objects.create(
        team=team,
        name=name or "run",
        plan={},
        config=config or {},
        tags=tags or [],
        queue=queue,
        created_by=user,
        external=True,
        free_form=True,
        **run_initial_fields(external=True, now=timezone.now()),
    )


def _writable(run: Run) -> None:
    if not run.external:
        raise Conflict(
            f"run {run.pk} is executed by Stagewise's workers; its stages are its plan's"
        )
    if not run.free_form:
        raise Conflict(
            f"run {run.pk} follows a plan: its stages are the plan's (report each one at "
            f"/api/runs/{run.pk}/stages/<index>/)"
        )
    if run.state == RunState.CANCELED:
        raise RunCanceled()
    if run.is_terminal:
        raise Conflict(f"run {run.pk} is {run.state}; it takes no more stages")


def _check_new(run: Run, stages: list[StageRun], index: int, start_step: int) -> None:
    if index > len(stages):
        raise ValidationError(
            {"index": [f"stages are declared in order: run {run.pk}'s next stage is {len(stages)}"]}
        )
    if not 0 <= start_step < MAX_STEP - 1:
        raise ValidationError({"start_step": [f"must be between 0 and {MAX_STEP - 2}"]})
    prev = stages[-1] if stages else None
    if prev is not None and start_step <= prev.start_step:
        raise ValidationError(
            {
                "start_step": [
                    f"must be after step {prev.start_step}, where stage "
                    f"{prev.stage_index} ({prev.name!r}) starts"
                ]
            }  # fmt: skip
        )


@transaction.atomic
def external_stage_declare(*, run: Run, index: int, name: str, start_step: int) -> StageRun:
    """Start stage ``index`` (named ``name``) of a free-form run at ``start_step``; see the
    module doc. Raises Conflict, RunCanceled or ValidationError (naming the field)."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    _writable(run)
    stages = list(run.stage_runs.select_for_update().order_by("stage_index"))
    if index < len(stages):
        sr = stages[index]
        if (sr.name, sr.start_step) != (name, start_step):
            raise Conflict(
                f"stage {index} of run {run.pk} is {sr.name!r} from step {sr.start_step}; "
                "a declared stage does not change"
            )
        external_touch(run.pk)
        return sr
    _check_new(run, stages, index, start_step)
    prev = stages[-1] if stages else None
    new = StageRun.objects.create(
        run=run, stage_index=index, name=name, state=StageState.PENDING,
        start_step=start_step, end_step=start_step + 1,
    )  # fmt: skip
    now = timezone.now()
    if prev is not None:
        _close(prev, start_step)
        stage_to_succeeded(prev)  # queues the new stage
        new.refresh_from_db()
    else:
        stage_to_queued(new, now=now)
    stage_to_running(new)
    stage_mark_started(new, now=now)
    external_touch(run.pk)
    transaction.on_commit(lambda: run_event(run.pk, "stage_started", stage=index))
    return new


def _close(prev: StageRun, end_step: int) -> None:
    """The previous stage ends at the new one's start."""
    prev.end_step = end_step
    if prev.last_step is not None and prev.last_step > end_step:
        prev.last_step = end_step
    prev.save(update_fields=["end_step", "last_step", "updated_at"])


def open_stage_extend(stage_run_id: int, last_step: int) -> None:
    """The open (last, running) stage of a free-form run reaches ``last_step``."""
    StageRun.objects.filter(pk=stage_run_id, end_step__lt=last_step).update(
        end_step=Greatest(F("end_step"), last_step)
    )
