"""Keeps the worker's lease alive and watches for cancellation, off the training thread."""

from __future__ import annotations

import threading

from django.conf import settings
from django.db import close_old_connections

from runs.execution.preemption import preemption_requested
from runs.selectors.run_state import run_is_canceled
from runs.services.leases import lease_renew


class Heartbeat:
    """Also the engine's Control: should_stop() is a flag read, cheap enough per step."""

    def __init__(self, *, stage_run_id: int, run_id: int, worker_id: str):
        self.stage_run_id, self.run_id, self.worker_id = stage_run_id, run_id, worker_id
        self.canceled = threading.Event()
        self.lease_lost = threading.Event()
        self.preempt = threading.Event()  # the worker shuts down (runs/execution/preemption.py)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def should_stop(self) -> bool:
        return self.canceled.is_set() or self.lease_lost.is_set() or self.preempt.is_set()

    def preempted(self) -> bool:
        """Stopping because the worker shuts down (the engine checkpoints first)."""
        return self.preempt.is_set() and not self.canceled.is_set()

    def _loop(self) -> None:
        beat = settings.STAGEWISE_HEARTBEAT_SECONDS
        since_beat = 0.0
        poll = min(1.0, beat)
        while not self._done.wait(poll):
            since_beat += poll
            try:
                if run_is_canceled(self.run_id):
                    self.canceled.set()
                if preemption_requested():
                    self.preempt.set()
                if since_beat >= beat:
                    since_beat = 0.0
                    if not lease_renew(stage_run_id=self.stage_run_id, worker_id=self.worker_id):
                        self.lease_lost.set()
            except Exception:  # database briefly away: try again next tick
                close_old_connections()
        close_old_connections()
