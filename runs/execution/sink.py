"""The worker-side MetricSink: buffers the engine's points and ingests them in batches.

Flushes every 250 ms or at 1,000 points, whichever comes first, from a background thread.
A flush that fails (Postgres or Redis briefly away) keeps the buffer and is retried, so a
short outage delays points but loses none; stage end waits until everything is stored.
A point that can never be stored (a non-finite value, a refused key) is dropped with a log
line instead of blocking the buffer.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from django.db import close_old_connections

from runs.models import StageRun
from runs.services.ingest import IngestError, IngestPoint
from runs.services.points import LeaseLost, points_from_worker
from runs.services.stages import checkpoint_record
from trainers.events import CheckpointInfo, Point
from trainers.sinks import BaseSink

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
FLUSH_POINTS = 1000


class DjangoSink(BaseSink):
    def __init__(
        self, stage_run: StageRun, *, worker_id: str, flush_seconds: float = FLUSH_SECONDS
    ):
        self.stage_run = stage_run
        self.worker_id = worker_id
        self.flush_seconds = flush_seconds
        self._buf: list[Point] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-flush", daemon=True)
        self._thread.start()

    # -- MetricSink
    def points(self, points: list[Point]) -> None:
        # The engine stops on a non-finite training loss; anything else non-finite (an
        # overflowing eval perplexity) cannot be stored and would block the buffer.
        finite = [p for p in points if math.isfinite(p.value)]
        if len(finite) < len(points):
            log.warning(
                "stage run %s: dropped %d non-finite metric values",
                self.stage_run.pk,
                len(points) - len(finite),
            )
        with self._lock:
            self._buf.extend(finite)
            full = len(self._buf) >= FLUSH_POINTS
        if full:
            self._wake.set()

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        # Index the checkpoint only once every point up to it is stored: a worker resuming
        # later starts from the newest *indexed* checkpoint and re-sends what follows.
        if not self.flush(wait=True):
            raise RuntimeError(f"could not store metrics up to step {info.step}; not indexing it")
        checkpoint_record(
            stage_run=self.stage_run, path=info.path, step=info.step, stage_end=info.stage_end
        )

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        self.flush(wait=True)

    # -- buffering
    def flush(self, *, wait: bool = False, timeout: float = 120.0) -> bool:
        """Ingest what is buffered. With wait=True, retry until stored or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self._flush_once():
                return True
            if not wait or time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def _flush_once(self) -> bool:
        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            try:
                self._ingest(batch)
                return True
            except Exception:
                log.warning("metric flush failed; will retry", exc_info=True)
                close_old_connections()
                with self._lock:
                    self._buf[:0] = batch
                return False

    def _ingest(self, batch: list[Point]) -> None:
        """Store the batch. A point refused for what it is (not for an outage: retrying
        cannot help) is dropped with an error in the log, and the rest is sent again. Once
        another worker holds the lease, nothing of ours is stored (the heartbeat stops us)."""
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
            return

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._flush_once()
        close_old_connections()

    def close(self) -> bool:
        """Stop the flusher and store what is left; False if that failed."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        return self.flush(wait=True)
