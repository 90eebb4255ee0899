"""What follows a stage run's progress and end (reported by its worker, or by an external
run's client): the state change (``runs.services.transitions``), the lease released, the next
stage dispatched, the run's page told; and the checkpoint index."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from runs.models import Checkpoint, Run, StageRun
from runs.services.dispatch import dispatch
from runs.services.leases import lease_release
from runs.services.realtime import run_event
from runs.services.stored_files import checkpoints_pruned, checkpoints_unstore
from runs.services.transitions import (
    stage_requeue,
    stage_to_canceled,
    stage_to_failed,
    stage_to_succeeded,
)


@transaction.atomic
def stage_progress(*, stage_run_id: int, step: int) -> None:
    StageRun.objects.filter(pk=stage_run_id, end_step__gte=step, start_step__lte=step).update(
        last_step=step
    )


@transaction.atomic
def stage_succeeded(*, stage_run: StageRun, worker_id: str) -> None:
    """Mark the stage done, queue the next one (or finish the run), release the lease."""
    sr = stage_to_succeeded(stage_run)
    lease_release(stage_run_id=sr.pk, worker_id=worker_id)
    transaction.on_commit(dispatch)
    transaction.on_commit(lambda: run_event(sr.run_id, "stage_finished", stage=sr.stage_index))


@transaction.atomic
def stage_canceled(*, stage_run: StageRun, worker_id: str, step: int | None) -> None:
    stage_to_canceled(stage_run)
    lease_release(stage_run_id=stage_run.pk, worker_id=worker_id)
    transaction.on_commit(lambda: run_event(stage_run.run_id, "canceled", step=step))


@transaction.atomic
def stage_preempted(*, stage_run: StageRun, worker_id: str, step: int) -> None:
    """Its worker shuts down and checkpointed at ``step``: back to the queue now, lease
    released, and dispatched again at once (another worker continues from that step)."""
    stage_run.refresh_from_db()
    stage_requeue(stage_run, now=timezone.now())
    lease_release(stage_run_id=stage_run.pk, worker_id=worker_id)
    transaction.on_commit(lambda: run_event(stage_run.run_id, "preempted", step=step))
    transaction.on_commit(dispatch)


@transaction.atomic
def stage_failed(*, stage_run: StageRun, worker_id: str, error: str, traceback: str) -> None:
    stage_to_failed(stage_run, error=error, traceback=traceback)
    lease_release(stage_run_id=stage_run.pk, worker_id=worker_id)
    transaction.on_commit(lambda: run_event(stage_run.run_id, "failed", error=error[:500]))


@transaction.atomic
def checkpoint_record(*, stage_run: StageRun, path: str, step: int, stage_end: bool) -> Checkpoint:
    """Index a checkpoint the engine wrote, and drop rows of the ones it pruned (and, with
    shared storage, their copies in the store)."""
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    ckpt, _ = Checkpoint.objects.update_or_create(
        run_id=stage_run.run_id,
        step=step,
        defaults={"stage_run": stage_run, "path": path, "stage_end": stage_end, "size_bytes": size},
    )
    pruned = checkpoints_pruned(newest=ckpt)
    Checkpoint.objects.filter(pk__in=[c.pk for c in pruned]).delete()
    transaction.on_commit(lambda: checkpoints_unstore(pruned))
    transaction.on_commit(lambda: run_event(stage_run.run_id, "checkpoint", step=step))
    return ckpt


def checkpoints_drop_unindexed(*, run: Run, out_dir: Path) -> list[int]:
    """Remove checkpoint folders that have no Checkpoint row (a worker died between writing
    the files and storing the points up to them), so a resumed stage starts from a checkpoint
    whose points are all stored. A fork's copied starting checkpoint is kept."""
    from trainers.checkpoints import list_checkpoints

    indexed = set(Checkpoint.objects.filter(run=run).values_list("step", flat=True))
    if run.fork_checkpoint_id:
        indexed.add(run.fork_checkpoint.step)
    dropped = []
    for info in list_checkpoints(out_dir):
        if info.step not in indexed:
            shutil.rmtree(info.path, ignore_errors=True)
            dropped.append(info.step)
    return dropped
