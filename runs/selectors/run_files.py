"""Where a run's files live on the server (checkpoints, the engine's output)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from runs.models import Run


def run_dir(run: Run) -> Path:
    return Path(settings.STAGEWISE_DATA_DIR) / "runs" / f"{run.pk}-{run.uid.hex[:12]}"
