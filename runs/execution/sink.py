"""The worker-side MetricSink: the engine's points, stored in batches under the worker's lease.

Buffering, batching (every 250 ms or 1,000 points), retries and the non-finite filter are
``trainers.sender.BufferedSender``'s; this module only says how a batch is stored
(``points_from_worker``) and what a checkpoint waits for. A batch that fails (Postgres or
Redis briefly away) is retried, so a short outage delays points but loses none; stage end
waits until everything is stored. A point that can never be stored (a refused key) is
dropped with a log line instead of blocking the buffer.
"""

from __future__ import annotations

import logging
import time

from django.db import InterfaceError, OperationalError, close_old_connections, connection

from runs.models import StageRun
from runs.services.ingest import IngestError, IngestPoint
from runs.services.points import LeaseLost, points_from_worker
from runs.services.stages import checkpoint_record
from runs.services.stored_files import checkpoint_publish
from trainers.events import CheckpointInfo, Point
from trainers.sender import FLUSH_SECONDS, BufferedSender
from trainers.sinks import BaseSink

log = logging.getLogger(__name__)

STORE_TIMEOUT = 120.0  # how long a checkpoint or stage end waits for its points


class DjangoSink(BaseSink):
    def __init__(
        self, stage_run: StageRun, *, worker_id: str, flush_seconds: float = FLUSH_SECONDS
    ):
        self.stage_run, self.worker_id = stage_run, worker_id
        self.sender = BufferedSender(
            self._store,
            name=f"stage run {stage_run.pk}",
            flush_seconds=flush_seconds,
            thread_exit=close_old_connections,
        )

    # -- MetricSink
    def stage_started(self, stage_index: int, start_step: int) -> None:
        # start_step: the stage's start, or the step after the checkpoint it resumes from
        log.info("stage %s trains from step %s", stage_index, start_step)

    def points(self, points: list[Point]) -> None:
        self.sender.put(points)

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        # Index the checkpoint only once every point up to it is stored: a worker resuming
        # later starts from the newest *indexed* checkpoint and re-sends what follows.
        if not self.flush(wait=True):
            raise RuntimeError(f"could not store metrics up to step {info.step}; not indexing it")
        # With shared storage, uploaded before it is indexed: every row is in the store.
        checkpoint_publish(run=self.stage_run.run, path=info.path)
        _retried_on_outage(
            lambda: checkpoint_record(
                stage_run=self.stage_run, path=info.path, step=info.step, stage_end=info.stage_end
            ),
            what=f"indexing the checkpoint at step {info.step}",
        )

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        self.flush(wait=True)

    def flush(self, *, wait: bool = False, timeout: float = STORE_TIMEOUT) -> bool:
        """Store what is buffered. With wait=True, retry until stored or timeout."""
        return self.sender.flush(timeout if wait else 0)

    def close(self) -> bool:
        """Stop the flusher and store what is left; False if that failed."""
        return self.sender.close(STORE_TIMEOUT)

    def _store(self, batch: list[Point]) -> None:
        """Store the batch. A point refused for what it is (not for an outage: retrying
        cannot help) is dropped with an error in the log, and the rest is sent again. Once
        another worker holds the lease, nothing of ours is stored (the heartbeat stops us)."""
        batch = list(batch)
        while batch:
            try:
                points_from_worker(
                    stage_run=self.stage_run,
                    worker_id=self.worker_id,
                    points=[IngestPoint(p.key, p.step, p.value, p.time) for p in batch],
                )
            except IngestError as exc:
                log.error("stage run %s: dropped %s (%s)", self.stage_run.pk, batch[exc.index], exc)
                del batch[exc.index]
                continue
            except LeaseLost as exc:
                log.warning("dropped %d points: %s", len(batch), exc)
            except Exception:
                close_old_connections()  # a broken connection is replaced on the retry
                raise
            return


def _retried_on_outage(fn, *, what: str, timeout: float = STORE_TIMEOUT):
    """``fn()`` on the training thread's connection, retried on a new one while Postgres is
    away. The points went through the flusher thread's own connection; this thread's may have
    died in an outage since its last query (a restarted server), and Django notices only when
    the next query fails: that used to fail the stage. ``fn`` must be idempotent."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: the database is unavailable (%s); retrying", what, exc)
            connection.close()  # the next query opens a new connection
            time.sleep(1.0)
