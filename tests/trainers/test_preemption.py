"""A control that says "preempted" when it stops (a worker shutting down) makes the engine
checkpoint at that very step; continuing from there gives the uninterrupted run's points."""

from __future__ import annotations

import pytest

from tests.trainers.helpers import lm_plan
from trainers.checkpoints import list_checkpoints
from trainers.engine import run_plan, run_stage
from trainers.events import StageCanceled, StagePreempted
from trainers.plan import validate_plan
from trainers.sinks import MemorySink


class StopAt:
    """Stops once the stage has passed ``step`` (counting calls), preempted or canceled."""

    def __init__(self, after_calls: int, preempted: bool):
        self.calls, self.after, self.is_preempted = 0, after_calls, preempted

    def should_stop(self) -> bool:
        self.calls += 1
        return self.calls >= self.after

    def preempted(self) -> bool:
        return self.is_preempted


def _rows(sink: MemorySink) -> list[tuple[str, int, float]]:
    return sorted((p.key, p.step, p.value) for p in sink.all_points)


def test_preempted_stage_checkpoints_at_the_step_and_resumes_exactly(tmp_path):
    plan = validate_plan(lm_plan())
    ref = MemorySink()
    run_plan(plan, tmp_path / "ref", ref)

    out, sink = tmp_path / "pre", MemorySink()
    run_stage(plan, 0, out, sink)
    # stage 1 runs steps 13..22 and checkpoints every 4 steps (16, 20): stop after step 14
    with pytest.raises(StagePreempted) as info:
        run_stage(plan, 1, out, sink, control=StopAt(2, preempted=True))
    assert info.value.step == 14
    assert 14 in [c.step for c in list_checkpoints(out)]
    assert max(p.step for p in sink.all_points) == 14  # every point up to it was sent
    result = run_stage(plan, 1, out, sink)
    assert result.resumed_from == 14 and result.steps_run == 8
    run_stage(plan, 2, out, sink)
    assert _rows(sink) == _rows(ref)


def test_a_cancel_writes_no_extra_checkpoint(tmp_path):
    plan = validate_plan(lm_plan())
    run_stage(plan, 0, tmp_path, MemorySink())
    with pytest.raises(StageCanceled) as info:
        run_stage(plan, 1, tmp_path, MemorySink(), control=StopAt(2, preempted=False))
    assert not isinstance(info.value, StagePreempted)
    assert info.value.step == 14 and 14 not in [c.step for c in list_checkpoints(tmp_path)]


def test_a_lone_mid_stage_checkpoint_resumes_without_the_earlier_stage_end(tmp_path):
    """A fork from a checkpoint inside stage 1 gets only that checkpoint in its directory."""
    import shutil

    plan = validate_plan(lm_plan())
    ref = MemorySink()
    run_plan(plan, tmp_path / "ref", ref)
    fork = tmp_path / "fork" / "checkpoints"
    fork.mkdir(parents=True)
    shutil.copytree(tmp_path / "ref" / "checkpoints" / "step-00000020", fork / "step-00000020")
    sink = MemorySink()
    result = run_stage(plan, 1, tmp_path / "fork", sink)
    assert result.completed and result.resumed_from == 20
    after = sorted((p.key, p.step, p.value) for p in ref.all_points if p.stage == 1 and p.step > 20)
    assert _rows(sink) == after
