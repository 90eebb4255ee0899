"""Submitting, canceling and forking runs."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from runs.models import Checkpoint, Pipeline, Queue, Run, StageRun, StageState, Team
from runs.selectors.queues import queue_allowed, queues_for_team
from runs.services.analysis import analysis_seed_fork
from runs.services.data_access import run_record_datasets, run_record_merge_parents
from runs.services.dispatch import dispatch
from runs.services.errors import QueueAccessDenied
from runs.services.plans import apply_overrides, plan_check
from runs.services.realtime import run_event
from runs.services.stored_files import checkpoint_available, checkpoint_fork_copy
from runs.services.transitions import run_initial_fields, run_to_canceled, stage_initial_state
from trainers.plan import Plan


def queue_check_access(*, queue: Queue, team: Team) -> None:
    if not queue_allowed(queue, team):
        raise QueueAccessDenied(f"team {team.name!r} may not use queue {queue.name!r}")


def _create_stage_runs(run: Run, plan: Plan, *, first: int = 0, queue_first: bool = True) -> None:
    """One stage run per stage; stage ``first`` is queued (unless ``queue_first`` is False:
    an external run's client starts its stages), earlier ones are skipped."""
    now = timezone.now()
    bounds = plan.stage_bounds()
    states = [
        stage_initial_state(i, first=first, queue_first=queue_first) for i in range(len(bounds))
    ]
    StageRun.objects.bulk_create(
        StageRun(
            run=run,
            stage_index=i,
            name=plan.stages[i].name,
            start_step=start,
            end_step=end,
            state=states[i],
            queued_at=now if states[i] == StageState.QUEUED else None,
        )
        for i, (start, end) in enumerate(bounds)
    )


def queue_default_for(*, team: Team) -> Queue:
    """The first queue in dispatch order that ``team`` may use (an external run needs one only
    to be grouped under)."""
    queue = queues_for_team(team).first()
    if queue is None:
        raise ValidationError({"queue": [f"no queue is open to team {team.name!r}"]})
    return queue


@transaction.atomic
def run_submit(
    *,
    team: Team,
    queue: Queue | None,
    plan: dict[str, Any] | None = None,
    pipeline: Pipeline | None = None,
    name: str = "",
    overrides: dict[str, Any] | None = None,
    priority: int = 0,
    tags: list[str] | None = None,
    user=None,
    external: bool = False,
) -> Run:
    """Snapshot the pipeline (or a raw plan), validate it with trainers, and queue stage 0.

    ``external=True``: the run is trained outside Stagewise and its client reports stages and
    metrics over the API. It starts ``running`` with every stage pending, is never dispatched,
    and its plan's files are not looked for here (they are on the client's machine). Without
    a ``queue`` it goes to the team's first usable one."""
    if (plan is None) == (pipeline is None):
        raise ValidationError({"pipeline": ["give exactly one of pipeline or plan"]})
    if pipeline is not None and pipeline.team_id != team.pk:
        raise ValidationError({"pipeline": ["pipeline belongs to another team"]})
    if queue is None:
        if not external:
            raise ValidationError({"queue": ["this field is required"]})
        queue = queue_default_for(team=team)
    queue_check_access(queue=queue, team=team)
    base = pipeline.plan if pipeline is not None else plan
    full = apply_overrides(base, overrides or {})
    # What the team may read (runs/services/data_access.py); dataset versions pinned
    checked = plan_check(full, team=team, external=external)
    validated, snapshot = checked.plan, checked.snapshot()
    run = Run.objects.create(
        team=team,
        pipeline=pipeline,
        name=name or snapshot["name"],
        plan=snapshot,
        overrides=overrides or {},
        seed=snapshot["seed"],
        tags=tags or [],
        queue=queue,
        priority=priority,
        **run_initial_fields(external=external, now=timezone.now()),
        created_by=user,
        external=external,
    )
    _create_stage_runs(run, validated, queue_first=not external)
    run_record_datasets(run, checked.reads)
    run_record_merge_parents(run, validated, checked.reads)
    if not external:
        _dispatch_on_commit()
    return run


@transaction.atomic
def run_cancel(*, run: Run) -> Run:
    """Queued stages are canceled now; a running stage stops at its next step (the worker
    sees the run state through its heartbeat) and is then marked canceled. An external run's
    running stage is canceled now too (no worker of ours will mark it); its client learns
    from the 409 "run canceled" on its next metrics batch or stage report."""
    run = run_to_canceled(run)
    if run.external:
        transaction.on_commit(lambda: run_event(run.pk, "canceled"))
    return run


@transaction.atomic
def run_fork(
    *,
    checkpoint: Checkpoint,
    stages: list[dict[str, Any]] | None = None,
    queue: Queue | None = None,
    name: str = "",
    user=None,
    team: Team | None = None,
) -> Run:
    """A new run that shares the parent's history up to ``checkpoint`` and then runs
    ``stages`` (replacing the parent's later stages; default: the same ones)."""
    parent = checkpoint.run
    if not checkpoint_available(checkpoint):
        raise ValidationError({"checkpoint": ["checkpoint files are gone (pruned or moved)"]})
    team = team or parent.team
    queue = queue or parent.queue
    queue_check_access(queue=queue, team=team)
    stage_index = checkpoint.stage_run.stage_index
    # A stage-end checkpoint starts the next stage; a mid-stage one resumes its stage.
    keep = stage_index + 1 if checkpoint.stage_end else stage_index
    kept = parent.plan["stages"][: stage_index + 1]
    later = stages if stages is not None else parent.plan["stages"][stage_index + 1 :]
    plan = {**parent.plan, "stages": kept + list(later)}
    if len(plan["stages"]) <= keep:
        raise ValidationError({"stages": ["nothing left to run after this checkpoint"]})
    checked = plan_check(plan, team=team)
    validated, snapshot = checked.plan, checked.snapshot()
    run = Run.objects.create(
        team=team,
        pipeline=parent.pipeline,
        name=name or f"{parent.name} (fork @{checkpoint.step})",
        plan=snapshot,
        seed=snapshot["seed"],
        tags=list(parent.tags),
        queue=queue,
        priority=parent.priority,
        **run_initial_fields(external=False, now=timezone.now()),
        parent=parent,
        fork_checkpoint=checkpoint,
        created_by=user,
    )
    _create_stage_runs(run, validated, first=keep)
    run_record_datasets(run, checked.reads)
    # the stages that start after the checkpoint (a resumed one does not merge again)
    run_record_merge_parents(run, validated, checked.reads, first=stage_index + 1)
    # The fork resumes from its own copy of the checkpoint (the parent may prune its own).
    checkpoint_fork_copy(checkpoint=checkpoint, run=run)
    analysis_seed_fork(run)
    _dispatch_on_commit()
    return run


def _dispatch_on_commit() -> None:
    transaction.on_commit(dispatch)
