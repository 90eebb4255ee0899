"""Execute one stage run on this worker: lease, engine, sink, state changes."""

from __future__ import annotations

import logging
import os
import socket
import traceback

from runs.execution.heartbeat import Heartbeat
from runs.execution.sink import DjangoSink
from runs.models import StageRun
from runs.selectors.run_files import run_dir
from runs.selectors.workers import stage_devices
from runs.services.data_access import plan_for_engine
from runs.services.dispatch import stage_give_back
from runs.services.leases import lease_acquire
from runs.services.stages import (
    checkpoints_drop_unindexed,
    stage_canceled,
    stage_failed,
    stage_preempted,
    stage_succeeded,
)
from runs.services.stored_files import checkpoints_fetch_for_stage, checkpoints_unstore_unindexed
from trainers.distributed import device_capacity
from trainers.engine import run_stage
from trainers.events import StageCanceled, StagePreempted
from trainers.plan import validate_plan
from webapp.log_context import log_context

log = logging.getLogger(__name__)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute(stage_run_id: int, token: str) -> str:
    with log_context(stage_run_id=stage_run_id):
        return _give_back(stage_run_id, token) or _execute(stage_run_id, token)


def _give_back(stage_run_id: int, token: str) -> str | None:
    """When the stage asks for more devices than this worker has: the task goes back (the
    stage is requeued unstarted, for a worker with enough) and this says so; else None."""
    sr = StageRun.objects.select_related("run").filter(pk=stage_run_id).first()
    need = 1 if sr is None else stage_devices(sr.run.plan, sr.stage_index)
    if need <= 1 or need <= (have := device_capacity()):
        return None
    if not stage_give_back(stage_run_id=stage_run_id, token=token):
        return "skipped: stage run is held by another worker or not runnable"
    log.info("stage run %s needs %s devices, this worker has %s: given back", sr.pk, need, have)
    return f"given back: the stage needs {need} devices, this worker has {have}"


def _execute(stage_run_id: int, token: str) -> str:
    worker_id = worker_identity()
    sr = lease_acquire(stage_run_id=stage_run_id, token=token, worker_id=worker_id)
    if sr is None:
        return "skipped: stage run is held by another worker or not runnable"
    run = sr.run
    sink = DjangoSink(sr, worker_id=worker_id)
    with (
        log_context(run_id=run.pk, stage_index=sr.stage_index),
        Heartbeat(stage_run_id=sr.pk, run_id=run.pk, worker_id=worker_id) as hb,
    ):
        log.info("stage %s of run %s starts on %s", sr.stage_index, run.pk, worker_id)
        try:
            # The stored plan names what the team may read (dataset:, run:, granted paths);
            # the engine gets local paths, access checked again now, and checks they exist.
            stored = validate_plan(run.plan, check_files=False)
            local = plan_for_engine(stored, run.plan, team=run.team)
            plan = validate_plan(local, check_files=True)
            checkpoints_drop_unindexed(run=run, out_dir=run_dir(run))
            checkpoints_unstore_unindexed(run)  # shared storage: what a killed worker left
            checkpoints_fetch_for_stage(run)  # shared storage: what the stage continues from
            run_stage(plan, sr.stage_index, run_dir(run), sink, control=hb)
            if not sink.close():
                raise RuntimeError("the stage finished but its last metrics could not be stored")
        except StagePreempted as exc:
            sink.close()
            if not hb.lease_lost.is_set():
                stage_preempted(stage_run=sr, worker_id=worker_id, step=exc.step)
            log.info("stage run %s preempted at step %s (worker shutting down)", sr.pk, exc.step)
            return "preempted"
        except StageCanceled as exc:
            sink.close()
            if hb.lease_lost.is_set() and not hb.canceled.is_set():
                return "lease lost: another worker took over"
            stage_canceled(stage_run=sr, worker_id=worker_id, step=exc.step)
            return "canceled"
        except Exception as exc:
            sink.close()
            stage_failed(
                stage_run=sr,
                worker_id=worker_id,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            log.exception("stage run %s failed", sr.pk)
            return "failed"
    stage_succeeded(stage_run=sr, worker_id=worker_id)
    log.info("stage run %s succeeded", sr.pk)
    return "succeeded"
