"""What the engine reports, and the two protocols a caller plugs in (sink and control)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from trainers.plan import Plan


@dataclass(frozen=True, slots=True)
class Point:
    key: str  # train/loss, lr, eval/<set>/loss|ppl|acc
    step: int  # global step: 0 = before training, s = after the s-th optimizer step
    value: float
    time: float  # unix time when measured
    stage: int


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    step: int
    stage_index: int
    stage_end: bool


class MetricSink(Protocol):
    def run_started(self, plan: Plan) -> None: ...

    # start_step = the first global step whose points this call (re-)emits: the stage's
    # first boundary step for a fresh stage (baseline/new eval sets are measured there),
    # or checkpoint step + 1 when resuming inside the stage.
    def stage_started(self, stage_index: int, start_step: int) -> None: ...

    def points(self, points: list[Point]) -> None: ...  # called in batches, never per point

    def checkpoint_saved(self, info: CheckpointInfo) -> None: ...

    def stage_finished(self, stage_index: int, end_step: int) -> None: ...

    def run_finished(self) -> None: ...

    def error(self, message: str, traceback: str) -> None: ...


class Control(Protocol):
    """Polled once per step; must be cheap. True stops the stage (StageCanceled).

    A control may also define ``preempted() -> bool``: True when it stops means "the worker
    is going away", and the engine first writes a checkpoint at that step (StagePreempted),
    so the next worker continues from exactly there."""

    def should_stop(self) -> bool: ...


class TrainingDiverged(RuntimeError):
    """The training loss or an evaluation became NaN or infinite. Points before it were
    emitted and no checkpoint was written after it, so the last checkpoint is a good place
    to fork from."""

    def __init__(
        self, stage_name: str, step: int, metric: str, value: float, last_checkpoint: int | None
    ):
        self.stage_name, self.step, self.metric, self.value = stage_name, step, metric, value
        where = (
            f"; fork from the checkpoint at step {last_checkpoint} with a lower learning rate"
            if last_checkpoint is not None
            else "; try a lower learning rate"
        )
        super().__init__(f"{metric} became {value} at step {step} in stage {stage_name!r}{where}")


class StageCanceled(Exception):
    """control.should_stop() returned True; points up to `step` were emitted."""

    def __init__(self, stage_index: int, step: int):
        self.stage_index, self.step = stage_index, step
        super().__init__(f"stage {stage_index} canceled at step {step}")


class StagePreempted(StageCanceled):
    """Stopped because the worker is shutting down; a checkpoint at ``step`` was written."""


@dataclass
class StageResult:
    stage_index: int
    start_step: int  # the stage's boundary (first step is start_step + 1)
    end_step: int  # last step run (== the stage end unless max_steps cut it short)
    completed: bool  # reached the stage end (a stage-end checkpoint exists)
    resumed_from: int | None  # checkpoint step this call continued from, if any
    steps_run: int  # optimizer steps taken by this call
    final_train_loss: float | None
    evals: dict[str, float] = field(default_factory=dict)  # last value per eval key
    checkpoint: CheckpointInfo | None = None  # last checkpoint written by this call


@dataclass
class RunResult:
    stages: list[StageResult]
    out_dir: str
