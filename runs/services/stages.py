"""State changes of a stage run while (and after) a worker executes it."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from runs.models import Checkpoint, Run, RunState, StageRun, StageState
from runs.services.dispatch import dispatch
from runs.services.leases import lease_release
from runs.services.realtime import run_event


def _finish_run(run: Run, state: str, error: str = "") -> None:
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.is_terminal:
        return
    run.check_transition(state)
    run.state, run.finished_at, run.error = state, timezone.now(), error
    run.save(update_fields=["state", "finished_at", "error", "updated_at"])


@transaction.atomic
def stage_progress(*, stage_run_id: int, step: int) -> None:
    StageRun.objects.filter(pk=stage_run_id, end_step__gte=step, start_step__lte=step).update(
        last_step=step
    )


@transaction.atomic
def stage_succeeded(*, stage_run: StageRun, worker_id: str) -> None:
    """Mark the stage done, queue the next one (or finish the run), release the lease."""
    sr = StageRun.objects.select_for_update().get(pk=stage_run.pk)
    sr.check_transition(StageState.SUCCEEDED)
    now = timezone.now()
    sr.state, sr.finished_at, sr.last_step = StageState.SUCCEEDED, now, sr.end_step
    sr.save(update_fields=["state", "finished_at", "last_step", "updated_at"])
    lease_release(stage_run_id=sr.pk, worker_id=worker_id)
    nxt = sr.run.stage_runs.filter(stage_index=sr.stage_index + 1).first()
    if nxt is None:
        _finish_run(sr.run, RunState.SUCCEEDED)
    elif sr.run.state == RunState.RUNNING:
        StageRun.objects.filter(pk=nxt.pk, state=StageState.PENDING).update(
            state=StageState.QUEUED, queued_at=now
        )
    transaction.on_commit(dispatch)
    transaction.on_commit(lambda: run_event(sr.run_id, "stage_finished", stage=sr.stage_index))


@transaction.atomic
def stage_canceled(*, stage_run: StageRun, worker_id: str, step: int | None) -> None:
    now = timezone.now()
    StageRun.objects.filter(pk=stage_run.pk, state=StageState.RUNNING).update(
        state=StageState.CANCELED, finished_at=now
    )
    lease_release(stage_run_id=stage_run.pk, worker_id=worker_id)
    _finish_run(stage_run.run, RunState.CANCELED)
    transaction.on_commit(lambda: run_event(stage_run.run_id, "canceled", step=step))


@transaction.atomic
def stage_failed(*, stage_run: StageRun, worker_id: str, error: str, traceback: str) -> None:
    now = timezone.now()
    StageRun.objects.filter(pk=stage_run.pk).exclude(
        state__in=[StageState.SUCCEEDED, StageState.CANCELED]
    ).update(state=StageState.FAILED, finished_at=now, error=error[:2000], traceback=traceback)
    stage_run.run.stage_runs.filter(state__in=[StageState.PENDING, StageState.QUEUED]).update(
        state=StageState.CANCELED, finished_at=now
    )
    lease_release(stage_run_id=stage_run.pk, worker_id=worker_id)
    _finish_run(stage_run.run, RunState.FAILED, error=error[:2000])
    transaction.on_commit(lambda: run_event(stage_run.run_id, "failed", error=error[:500]))


@transaction.atomic
def checkpoint_record(*, stage_run: StageRun, path: str, step: int, stage_end: bool) -> Checkpoint:
    """Index a checkpoint the engine wrote, and drop rows of the ones it pruned."""
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    ckpt, _ = Checkpoint.objects.update_or_create(
        run_id=stage_run.run_id,
        step=step,
        defaults={"stage_run": stage_run, "path": path, "stage_end": stage_end, "size_bytes": size},
    )
    for old in Checkpoint.objects.filter(run_id=stage_run.run_id, stage_end=False).exclude(
        pk=ckpt.pk
    ):
        if not Path(old.path).exists():
            old.delete()
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


def run_is_canceled(run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, state=RunState.CANCELED).exists()
