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
from runs.services.freeform import open_stage_extend
from runs.services.ingest import IngestPoint, PointColumns, StepRange, ingest_points
from runs.services.stages import stage_progress
from trainers.plan import MAX_STEP

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
    step_range, stage_run_id, open_stage = _client_range(run, stage_index)
    n = stage_points_record(run.pk, points, step_range, stage_run_id, open_stage=open_stage)
    external_touch(run.pk)
    return n


def _client_range(run: Run, stage_index: int | None) -> tuple[StepRange, int | None, bool]:
    """(steps the client may write, the stage run they advance, whether it is a free-form
    run's open last stage, whose end follows its points)."""
    stages = StageRun.objects.filter(run_id=run.pk)
    if run.free_form:
        last = stages.order_by("-stage_index").first()
        if last is None:
            raise ValidationError({"stage": [f"run {run.pk} has no stage yet: declare one first"]})
        if stage_index is None or stage_index == last.stage_index:
            where = f"stage {last.stage_index} ({last.name!r})"
            return StepRange(last.start_step, MAX_STEP - 1, where), last.pk, True
    if stage_index is None:
        end = stages.aggregate(end=Max("end_step"))["end"] or 0
        return StepRange(0, end, f"run {run.pk}"), None, False
    sr = stages.filter(stage_index=stage_index).first()
    if sr is None:
        raise ValidationError(
            {"stage": [f"run {run.pk} has stages 0 to {stages.count() - 1}, not {stage_index}"]}
        )
    return stage_step_range(sr), sr.pk, False


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
        return stage_points_record(
            stage_run.run_id, points, stage_step_range(stage_run), stage_run.pk
        )


def stage_points_record(
    run_id: int,
    points: PointColumns | Sequence[IngestPoint],
    step_range: StepRange,
    stage_run_id: int | None,
    *,
    open_stage: bool = False,
) -> int:
    """Store a batch of a run's points within ``step_range`` and advance the stage's progress
    to its last step (the one way workers and external runs record a batch). An open stage
    (a free-form run's last) first extends its end to that step."""
    with transaction.atomic():
        n = ingest_points(run_id=run_id, points=points, step_range=step_range)
        if stage_run_id is None or not n:
            return n
        steps = points.steps if isinstance(points, PointColumns) else [p.step for p in points]
        last = int(max(steps))
        if open_stage:
            open_stage_extend(stage_run_id, last)
        stage_progress(stage_run_id=stage_run_id, step=last)
    return n
