"""Metric sinks: in memory, a JSONL file, and a fan-out to several."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from trainers.events import CheckpointInfo, MetricSink, Point

if TYPE_CHECKING:
    from trainers.plan import Plan


class BaseSink:
    """No-op hooks; subclasses override what they need."""

    def run_started(self, plan: Plan) -> None:
        pass

    def stage_started(self, stage_index: int, start_step: int) -> None:
        pass

    def points(self, points: list[Point]) -> None:
        pass

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        pass

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        pass

    def run_finished(self) -> None:
        pass

    def error(self, message: str, traceback: str) -> None:
        pass


class MemorySink(BaseSink):
    """Keeps everything; `events` records the hook calls in order (for tests)."""

    def __init__(self) -> None:
        self.all_points: list[Point] = []
        self.events: list[tuple] = []
        self.batches = 0

    def run_started(self, plan: Plan) -> None:
        self.events.append(("run_started", plan.name))

    def stage_started(self, stage_index: int, start_step: int) -> None:
        self.events.append(("stage_started", stage_index, start_step))

    def points(self, points: list[Point]) -> None:
        self.batches += 1
        self.all_points.extend(points)

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        self.events.append(("checkpoint_saved", info.step, info.stage_index, info.stage_end))

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        self.events.append(("stage_finished", stage_index, end_step))

    def run_finished(self) -> None:
        self.events.append(("run_finished",))

    def error(self, message: str, traceback: str) -> None:
        self.events.append(("error", message))

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(p.step, p.value) for p in self.all_points if p.key == key]


class JsonlSink(BaseSink):
    """One JSON object per point: {"key", "step", "value", "stage", "time"}.

    On stage_started(i, start) rows of stage >= i with step >= start are dropped first:
    they belong to an interrupted attempt and are about to be re-emitted, so the file
    ends with each (key, step) exactly once.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._f = None

    def stage_started(self, stage_index: int, start_step: int) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed writer
                if row["stage"] >= stage_index and row["step"] >= start_step:
                    continue
                kept.append(line + "\n")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def points(self, points: list[Point]) -> None:
        if self._f is None:
            self._f = self.path.open("a", encoding="utf-8")
        self._f.write(
            "".join(
                json.dumps(
                    {
                        "key": p.key,
                        "step": p.step,
                        "value": p.value,
                        "stage": p.stage,
                        "time": p.time,
                    }
                )
                + "\n"
                for p in points
            )
        )
        self._f.flush()  # visible to readers (and survives SIGKILL) once the batch returns

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        if self._f is not None:
            self._f.flush()

    def run_finished(self) -> None:
        self.close()


def read_jsonl(path: Path | str) -> list[dict]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


class MultiSink(BaseSink):
    """Every call goes to each of ``sinks``, in order."""

    def __init__(self, *sinks: MetricSink):
        self.sinks = sinks

    def _each(self, hook: str, *args) -> None:
        for s in self.sinks:
            getattr(s, hook)(*args)

    def run_started(self, plan: Plan) -> None:
        self._each("run_started", plan)

    def stage_started(self, stage_index: int, start_step: int) -> None:
        self._each("stage_started", stage_index, start_step)

    def points(self, points: list[Point]) -> None:
        self._each("points", points)

    def checkpoint_saved(self, info: CheckpointInfo) -> None:
        self._each("checkpoint_saved", info)

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        self._each("stage_finished", stage_index, end_step)

    def run_finished(self) -> None:
        self._each("run_finished")

    def error(self, message: str, traceback: str) -> None:
        self._each("error", message, traceback)
