"""Reads of one run's state that a worker makes while it trains."""

from __future__ import annotations

from runs.models import Run, RunState


def run_is_canceled(run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, state=RunState.CANCELED).exists()
