"""Who may write a run's metric points, and where: the one rule every writer goes through.

A point is identified by (run, key, step) (``runs.services.ingest``). Only the run's writer
may write it:

* a run Stagewise's workers execute: the worker holding the stage run's lease, in process
  (``points_from_worker``); the API refuses with 409, whoever asks;
* an external run (trained elsewhere): its client, over the API (``points_from_client``).

A finished, failed or canceled run is closed (409 naming its state), and a point whose step
is outside the writer's stage (or the run, when the client names no stage) is a 400 naming
the point. The stage a point belongs to follows from its step, so the label a client sends
only narrows the range it may write.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from runs.models import Run, RunState, StageRun, WorkerLease
from runs.services.errors import Conflict, RunCanceled
from runs.services.external import external_touch
from runs.services.ingest import IngestPoint, PointColumns, StepRange, ingest_points
from runs.services.stages import stage_progress

CLOSED_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED)


class LeaseLost(Conflict):
    """This worker no longer holds the stage run's lease: another one took it over."""


def stage_step_range(sr: StageRun) -> StepRange:
    """Stage i writes steps start..end: its first evaluation is at its start step (the
    weights it starts from), its last at its end."""
    return StepRange(sr.start_step, sr.end_step, f"stage {sr.stage_index} ({sr.name!r})")


def _closed(run: Run) -> Conflict:
    if run.state == RunState.CANCELED and run.external:
        return RunCanceled()  # the client's signal to stop training
    return Conflict(f"run {run.pk} is {run.state}; its points can no longer change")


def points_from_client(*, run: Run, points: PointColumns, stage_index: int | None = None) -> int:
    """Points an external run's client posted. ``run`` needs id, external and state loaded.
    With ``stage_index`` the points must lie in that stage and advance its progress."""
    if not run.external:
        raise Conflict(
            f"run {run.pk} is executed by Stagewise's workers; only the worker holding its "
            "lease writes its points"
        )
    if run.state in CLOSED_STATES:
        raise _closed(run)
    stages = StageRun.objects.filter(run_id=run.pk)
    if stage_index is None:
        end = stages.aggregate(end=Max("end_step"))["end"] or 0
        step_range, stage_run_id = StepRange(0, end, f"run {run.pk}"), None
    else:
        sr = stages.filter(stage_index=stage_index).first()
        if sr is None:
            raise ValidationError(
                {"stage": [f"run {run.pk} has stages 0 to {stages.count() - 1}, not {stage_index}"]}
            )
        step_range, stage_run_id = stage_step_range(sr), sr.pk
    n = ingest_points(run_id=run.pk, points=points, step_range=step_range)
    if stage_run_id is not None and n:
        stage_progress(stage_run_id=stage_run_id, step=int(max(points.steps)))
    external_touch(run.pk)
    return n


def points_from_worker(
    *, stage_run: StageRun, worker_id: str, points: Sequence[IngestPoint]
) -> int:
    """Points the engine emitted on this worker for ``stage_run``. Raises LeaseLost when
    another worker holds the stage now (its points win; these are dropped)."""
    with transaction.atomic():
        # Locked until the points are in: a worker taking the lease over waits for them.
        lease = WorkerLease.objects.select_for_update().filter(
            stage_run_id=stage_run.pk, worker_id=worker_id
        )
        if not lease.values_list("pk", flat=True):
            raise LeaseLost(f"stage run {stage_run.pk} is no longer leased to {worker_id}")
        n = ingest_points(
            run_id=stage_run.run_id, points=points, step_range=stage_step_range(stage_run)
        )
    if n:
        stage_progress(stage_run_id=stage_run.pk, step=max(p.step for p in points))
    return n
