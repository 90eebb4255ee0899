"""Runs trained outside Stagewise (a user's own GPU box or cluster job) that report to it.

The client (``trainers.remote.StagewiseSink``) creates the run (``run_submit(external=True)``),
then reports each stage's start and end and posts its metric batches over the API
(``runs.services.points.points_from_client``), the way a worker's DjangoSink does in-process; the run then gets the same pages, analysis and exports.
Stage and run states follow the workers' state machines (``runs.models.runs``); this module
only checks what a client may report, and the changes are the ones a worker's stage makes
(``runs.services.transitions``, through ``runs.services.stages`` where a lease and events
follow).

Reports are idempotent: repeating the state a stage already has changes nothing, so a client
may retry a report whose answer it never received.

Liveness: every accepted report and metrics batch stamps ``Run.last_report_at`` (one UPDATE),
the only sign of life an external run gives. ``runs.selectors.dashboard``'s
``external_report_status`` turns it into the "last report N min ago" and the stale flag shown
for a running external run (past ``STAGEWISE_EXTERNAL_STALE_SECONDS`` the job may be gone;
the run is never failed for it, a person cancels it).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from runs.models import InvalidTransition, Run, RunState, StageRun, StageState
from runs.services.errors import Conflict, RunCanceled
from runs.services.realtime import run_event
from runs.services.runs import run_cancel
from runs.services.stages import stage_failed, stage_succeeded
from runs.services.transitions import stage_mark_started, stage_to_queued, stage_to_running

# Reported stages hold no worker lease; the stage functions release none under this id.
EXTERNAL_WORKER = "external"
REPORTABLE_STATES = (StageState.RUNNING, StageState.SUCCEEDED, StageState.FAILED,
                     StageState.CANCELED)  # fmt: skip
_DONE = (StageState.SUCCEEDED, StageState.SKIPPED)


def external_touch(run_id: int) -> None:
    """Stamp the run's last sign of life (``Run.last_report_at``)."""
    Run.objects.filter(pk=run_id).update(last_report_at=timezone.now())


def _stage_path(sr: StageRun, target: str) -> list[str]:
    """The legal steps from the stage's state to ``target``: direct, or through ``queued``
    (a pending stage the client starts, or that fails before it started)."""
    allowed = StageRun.TRANSITIONS.get(sr.state, set())
    if target in allowed:
        return [target]
    if StageState.QUEUED in allowed and target in StageRun.TRANSITIONS[StageState.QUEUED]:
        return [StageState.QUEUED, target]
    raise InvalidTransition(f"stage {sr.stage_index} is {sr.state} and cannot become {target}")


@transaction.atomic
def external_stage_report(
    *, run: Run, stage_index: int, state: str, error: str = "", traceback: str = ""
) -> StageRun:
    """Apply a client's report that stage ``stage_index`` is now ``state``: running (stages
    start in order), succeeded (the last one finishes the run), failed (the run fails with
    ``error``) or canceled (the run is canceled). Raises Conflict for a run our workers
    execute, RunCanceled once the run was canceled, InvalidTransition for an illegal change
    and ValidationError for a stage index the run does not have."""
    if state not in REPORTABLE_STATES:
        raise ValidationError({"state": [f"must be one of {', '.join(REPORTABLE_STATES)}"]})
    run = Run.objects.select_for_update().get(pk=run.pk)
    if not run.external:
        raise Conflict(
            f"run {run.pk} is executed by Stagewise's workers; only external runs take "
            "stage reports"
        )
    if run.state == RunState.CANCELED:
        raise RunCanceled()
    stages = list(run.stage_runs.select_for_update().order_by("stage_index"))
    if not 0 <= stage_index < len(stages):
        raise ValidationError(
            {"index": [f"run {run.pk} has stages 0 to {len(stages) - 1}, not {stage_index}"]}
        )
    sr = stages[stage_index]
    if sr.state == state:
        external_touch(run.pk)  # a repeated report (a client's retry): alive, nothing else changes
        return sr
    path = _stage_path(sr, state)
    if state == StageState.RUNNING:
        waiting = next((s for s in stages[:stage_index] if s.state not in _DONE), None)
        if waiting is not None:
            raise InvalidTransition(
                f"stage {waiting.stage_index} is {waiting.state}; stage {stage_index} can "
                "start only after every earlier stage succeeded"
            )
    now = timezone.now()
    if path[0] == StageState.QUEUED:
        stage_to_queued(sr, now=now)
    if state == StageState.RUNNING:
        stage_to_running(sr)
        stage_mark_started(sr, now=now)
        transaction.on_commit(lambda: run_event(run.pk, "stage_started", stage=stage_index))
    elif state == StageState.SUCCEEDED:
        stage_succeeded(stage_run=sr, worker_id=EXTERNAL_WORKER)
    elif state == StageState.FAILED:
        stage_failed(
            stage_run=sr,
            worker_id=EXTERNAL_WORKER,
            error=error or f"stage {stage_index} ({sr.name}) failed on the external trainer",
            traceback=traceback,
        )
    else:  # canceled on the client (e.g. Ctrl-C): the run ends canceled
        run_cancel(run=run)
    external_touch(run.pk)
    sr.refresh_from_db()
    return sr
