"""Submitting, canceling and forking runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from runs.models import (
    Checkpoint,
    Pipeline,
    Queue,
    Run,
    RunState,
    StageRun,
    StageState,
    Team,
)
from runs.services.analysis import analysis_seed_fork
from runs.services.errors import QueueAccessDenied
from runs.services.plans import apply_overrides, pipeline_to_plan, plan_validate
from trainers.plan import Plan


def run_dir(run: Run) -> Path:
    return Path(settings.STAGEWISE_DATA_DIR) / "runs" / f"{run.pk}-{run.uid.hex[:12]}"


def queue_check_access(*, queue: Queue, team: Team) -> None:
    allowed = list(queue.allowed_teams.values_list("pk", flat=True))
    if allowed and team.pk not in allowed:
        raise QueueAccessDenied(f"team {team.name!r} may not use queue {queue.name!r}")


def _initial_state(i: int, first: int) -> str:
    if i < first:
        return StageState.SKIPPED  # inherited from the parent of a fork
    return StageState.QUEUED if i == first else StageState.PENDING


def _create_stage_runs(run: Run, plan: Plan, *, first: int = 0) -> None:
    """One stage run per stage; stage ``first`` is queued, earlier ones are skipped."""
    now = timezone.now()
    StageRun.objects.bulk_create(
        StageRun(
            run=run,
            stage_index=i,
            name=plan.stages[i].name,
            start_step=start,
            end_step=end,
            state=_initial_state(i, first),
            queued_at=now if i == first else None,
        )
        for i, (start, end) in enumerate(plan.stage_bounds())
    )


@transaction.atomic
def run_submit(
    *,
    team: Team,
    queue: Queue,
    plan: dict[str, Any] | None = None,
    pipeline: Pipeline | None = None,
    name: str = "",
    overrides: dict[str, Any] | None = None,
    priority: int = 0,
    tags: list[str] | None = None,
    user=None,
) -> Run:
    """Snapshot the pipeline (or a raw plan), validate it with trainers, and queue stage 0."""
    if (plan is None) == (pipeline is None):
        raise ValidationError({"pipeline": ["give exactly one of pipeline or plan"]})
    if pipeline is not None and pipeline.team_id != team.pk:
        raise ValidationError({"pipeline": ["pipeline belongs to another team"]})
    queue_check_access(queue=queue, team=team)
    base = pipeline_to_plan(pipeline) if pipeline is not None else plan
    full = apply_overrides(base, overrides or {})
    validated = plan_validate(full)
    snapshot = validated.model_dump(mode="json")
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
        state=RunState.QUEUED,
        queued_at=timezone.now(),
        created_by=user,
    )
    _create_stage_runs(run, validated)
    _dispatch_on_commit()
    return run


@transaction.atomic
def run_cancel(*, run: Run) -> Run:
    """Queued stages are canceled now; a running stage stops at its next step (the worker
    sees the run state through its heartbeat) and is then marked canceled."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    run.check_transition(RunState.CANCELED)
    now = timezone.now()
    run.state = RunState.CANCELED
    run.finished_at = now
    run.save(update_fields=["state", "finished_at", "updated_at"])
    run.stage_runs.filter(state__in=[StageState.PENDING, StageState.QUEUED]).update(
        state=StageState.CANCELED, finished_at=now
    )
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
    if not Path(checkpoint.path).is_dir():
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
    validated = plan_validate(plan)
    snapshot = validated.model_dump(mode="json")
    run = Run.objects.create(
        team=team,
        pipeline=parent.pipeline,
        name=name or f"{parent.name} (fork @{checkpoint.step})",
        plan=snapshot,
        seed=snapshot["seed"],
        tags=list(parent.tags),
        queue=queue,
        priority=parent.priority,
        state=RunState.QUEUED,
        queued_at=timezone.now(),
        parent=parent,
        fork_checkpoint=checkpoint,
        created_by=user,
    )
    _create_stage_runs(run, validated, first=keep)
    # The fork resumes from its own copy of the checkpoint (the parent may prune its own).
    dest = run_dir(run) / "checkpoints" / Path(checkpoint.path).name
    shutil.copytree(checkpoint.path, dest)
    analysis_seed_fork(run)
    _dispatch_on_commit()
    return run


def _dispatch_on_commit() -> None:
    from runs.services.dispatch import dispatch

    transaction.on_commit(dispatch)
