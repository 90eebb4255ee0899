"""Every state change of a run and of its stage runs, each checked against the state machines
of ``runs.models.runs``: ``check_transition`` on a loaded row, or, for a guarded bulk update,
only the rows whose state may reach the target (``states_into``).

The callers decide when a change happens: dispatch (a queued stage goes to a worker, a stage
whose worker stopped heartbeating goes back to the queue), leases (a worker takes its stage),
stages (a worker ends a stage), runs (a user submits, forks or cancels), external (a client
reports a stage). Nothing here releases leases, dispatches or publishes events: the callers do.
Call these inside the caller's transaction; the ones that lock rows need one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from runs.models import Run, RunState, StageRun, StageState

ERROR_CHARS = 2000  # what a failed stage and its run keep of the error message


def _stages_to(stages: QuerySet[StageRun], new: str, **fields: Any) -> int:
    """Move the stage runs of ``stages`` whose state may reach ``new``; leave the others."""
    return stages.filter(state__in=StageRun.states_into(new)).update(state=new, **fields)


# -- a new run and its stages


def run_initial_fields(*, external: bool, now: datetime) -> dict[str, Any]:
    """A new run waits in its queue for a worker; an external one runs from the start (its
    client trains it)."""
    if external:
        return {"state": RunState.RUNNING, "queued_at": None, "started_at": now}
    return {"state": RunState.QUEUED, "queued_at": now, "started_at": None}


def stage_initial_state(index: int, *, first: int, queue_first: bool) -> str:
    """Stages before ``first`` are skipped (a fork inherits them from its parent), stage
    ``first`` is queued (unless ``queue_first`` is False: an external run's client starts its
    stages), the later ones wait."""
    if index < first:
        return StageState.SKIPPED
    return StageState.QUEUED if index == first and queue_first else StageState.PENDING


# -- the run


def run_to_running(run: Run, *, now: datetime) -> None:
    """A stage of a queued run went to a worker: the run is running (a running one is left)."""
    if run.state != RunState.QUEUED:
        return
    run.check_transition(RunState.RUNNING)
    run.state, run.started_at = RunState.RUNNING, run.started_at or now
    run.save(update_fields=["state", "started_at", "updated_at"])


def run_to_finished(run: Run, state: str, *, error: str = "") -> None:
    """End the run as ``state`` (succeeded, failed or canceled), unless it has ended already."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.is_terminal:
        return
    run.check_transition(state)
    run.state, run.finished_at, run.error = state, timezone.now(), error
    run.save(update_fields=["state", "finished_at", "error", "updated_at"])


def run_to_canceled(run: Run) -> Run:
    """A person canceled the run (InvalidTransition once it has ended). Its waiting stages are
    canceled now; so is an external run's running stage (no worker of ours will mark it). A
    worker's running stage stops at its next step and is marked by ``stage_to_canceled``."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    run.check_transition(RunState.CANCELED)
    now = timezone.now()
    run.state, run.finished_at = RunState.CANCELED, now
    run.save(update_fields=["state", "finished_at", "updated_at"])
    stopped = [StageState.PENDING, StageState.QUEUED]
    if run.external:
        stopped.append(StageState.RUNNING)
    _stages_to(run.stage_runs.filter(state__in=stopped), StageState.CANCELED, finished_at=now)
    return run


# -- a stage run


def stage_to_queued(stage_run: StageRun, *, now: datetime) -> None:
    """A pending stage waits for whoever runs it."""
    stage_run.check_transition(StageState.QUEUED)
    stage_run.state = StageState.QUEUED
    stage_run.queued_at = stage_run.queued_at or now
    stage_run.save(update_fields=["state", "queued_at", "updated_at"])


def stage_to_running(stage_run: StageRun) -> None:
    """A queued stage starts (dispatched to a worker, or reported running by its client)."""
    stage_run.check_transition(StageState.RUNNING)
    stage_run.state = StageState.RUNNING
    stage_run.attempts += 1
    stage_run.save(update_fields=["state", "attempts", "updated_at"])


def stage_mark_started(stage_run: StageRun, *, now: datetime) -> None:
    """Training of the running stage began (its worker took it, or its client reported it):
    the first such moment is its ``started_at``. The state does not change."""
    stage_run.started_at = stage_run.started_at or now
    stage_run.save(update_fields=["started_at", "updated_at"])


def stage_requeue(stage_run: StageRun, *, now: datetime) -> None:
    """The stage's worker lost its lease: back to the queue (the next worker resumes from the
    latest checkpoint), or canceled when its run was canceled meanwhile. A stage that is no
    longer running is left as it is."""
    if stage_run.state != StageState.RUNNING:
        return
    canceled = stage_run.run.state == RunState.CANCELED
    new = StageState.CANCELED if canceled else StageState.QUEUED
    stage_run.check_transition(new)
    stage_run.state = new
    if canceled:
        stage_run.finished_at = now
    else:
        stage_run.queued_at = now
    stage_run.save(update_fields=["state", "finished_at", "queued_at", "updated_at"])


def stage_to_succeeded(stage_run: StageRun) -> StageRun:
    """The stage trained to its end: succeeded, and the next stage is queued (while the run
    runs) or, after the last stage, the run succeeded. Returns the stage run as stored."""
    sr = StageRun.objects.select_for_update().get(pk=stage_run.pk)
    sr.check_transition(StageState.SUCCEEDED)
    now = timezone.now()
    sr.state, sr.finished_at, sr.last_step = StageState.SUCCEEDED, now, sr.end_step
    sr.save(update_fields=["state", "finished_at", "last_step", "updated_at"])
    nxt = sr.run.stage_runs.filter(stage_index=sr.stage_index + 1).first()
    if nxt is None:
        run_to_finished(sr.run, RunState.SUCCEEDED)
    elif sr.run.state == RunState.RUNNING:
        waiting = StageRun.objects.filter(pk=nxt.pk, state=StageState.PENDING)
        _stages_to(waiting, StageState.QUEUED, queued_at=now)
    return sr


def stage_to_canceled(stage_run: StageRun) -> None:
    """The stage stopped because its run was canceled: the stage (if still running) and the
    run end canceled."""
    running = StageRun.objects.filter(pk=stage_run.pk, state=StageState.RUNNING)
    _stages_to(running, StageState.CANCELED, finished_at=timezone.now())
    run_to_finished(stage_run.run, RunState.CANCELED)


def stage_to_failed(stage_run: StageRun, *, error: str, traceback: str) -> None:
    """The stage failed: it keeps the error, the run's waiting stages are canceled and the run
    fails with the same error."""
    now = timezone.now()
    error = error[:ERROR_CHARS]
    this = StageRun.objects.filter(pk=stage_run.pk)
    _stages_to(this, StageState.FAILED, finished_at=now, error=error, traceback=traceback)
    waiting = stage_run.run.stage_runs.filter(state__in=[StageState.PENDING, StageState.QUEUED])
    _stages_to(waiting, StageState.CANCELED, finished_at=now)
    run_to_finished(stage_run.run, RunState.FAILED, error=error)
