import json
import math
from pathlib import Path

import pytest

from tests.trainers.helpers import digits_plan, lm_plan
from trainers.checkpoints import list_checkpoints
from trainers.engine import RunError, run_plan, run_stage
from trainers.events import StageCanceled
from trainers.plan import validate_plan
from trainers.sinks import JsonlSink, MemorySink, MultiSink, read_jsonl


def rows(sink: MemorySink) -> list[tuple[str, int, float]]:
    return sorted((p.key, p.step, p.value) for p in sink.all_points)


@pytest.fixture(scope="module")
def lm_reference(tmp_path_factory):
    """One uninterrupted run of the tiny LM plan, shared by the tests below."""
    out = tmp_path_factory.mktemp("ref")
    sink = MemorySink()
    result = run_plan(validate_plan(lm_plan()), out, sink)
    return out, sink, result


def test_metrics_keys_steps_and_continual_eval(lm_reference):
    out, sink, result = lm_reference
    loss_steps = [s for s, _ in sink.series("train/loss")]
    assert loss_steps == list(range(1, 31))  # global, 1-based, no gaps across stages
    assert [s for s, _ in sink.series("lr")] == loss_steps
    # prose is evaluated in every stage: baseline 0, interval 5, dense after the boundary,
    # every stage's last step
    prose = [s for s, _ in sink.series("eval/prose/loss")]
    assert prose == [0, 5, 10, 12, 13, 14, 15, 17, 22, 27, 30]
    # doc only from stage 1: measured at its boundary (step 12) as a new set
    assert [s for s, _ in sink.series("eval/doc/loss")][:2] == [12, 13]
    # code is not listed by stage 2
    assert max(s for s, _ in sink.series("eval/code/loss")) == 22
    for s, v in sink.series("eval/prose/ppl"):
        assert math.isclose(v, math.exp(dict(sink.series("eval/prose/loss"))[s]))
    assert [r.end_step for r in result.stages] == [12, 22, 30]
    assert all(r.completed for r in result.stages)
    assert sink.batches < 30  # batched, not per point
    assert ("stage_finished", 1, 22) in sink.events
    stages = {p.stage for p in sink.all_points if p.step == 12}
    assert stages == {0, 1}  # train loss at 12 is stage 0, the new doc set is stage 1


def test_checkpoints_are_self_contained_and_pruned(lm_reference):
    out, _, _ = lm_reference
    infos = list_checkpoints(out)
    ends = [i.step for i in infos if i.stage_end]
    assert ends == [12, 22, 30]
    assert len([i for i in infos if not i.stage_end]) <= 2  # keep_last
    ck = Path(infos[-1].path)
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "tokenizer.json",
        "state.pt",
        "meta.json",
    ):
        assert (ck / name).is_file(), name
    assert not list((out / "checkpoints").glob(".tmp-*"))


class StopAt:
    def __init__(self, sink: MemorySink, step: int):
        self.sink, self.step = sink, step

    def should_stop(self) -> bool:
        return any(p.step >= self.step for p in self.sink.all_points) or self._count()

    def _count(self) -> bool:
        self.calls = getattr(self, "calls", 0) + 1
        return self.calls >= self.step  # counts steps when points are still buffered


def test_cancel_and_resume_is_bit_identical(lm_reference, tmp_path):
    _, ref_sink, _ = lm_reference
    plan = validate_plan(lm_plan())
    sink = MemorySink()
    jsonl = JsonlSink(tmp_path / "metrics.jsonl")
    with pytest.raises(StageCanceled) as exc:
        run_stage(plan, 0, tmp_path, MultiSink(sink, jsonl), control=StopAt(sink, 10))
    assert exc.value.stage_index == 0
    # resume stage 0 from its latest checkpoint, then the rest
    sink2 = MemorySink()
    result = run_plan(plan, tmp_path, MultiSink(sink2, jsonl), resume=True)
    assert result.stages[0].resumed_from == 8
    got = [(r["key"], r["step"], r["value"]) for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(got) == len(set((k, s) for k, s, _ in got))  # each (key, step) once
    assert sorted(got) == rows(ref_sink)


def test_max_steps_slices_then_continues(lm_reference, tmp_path):
    _, ref_sink, _ = lm_reference
    plan = validate_plan(lm_plan())
    sink = MemorySink()
    r = run_stage(plan, 0, tmp_path, sink, max_steps=7)
    assert not r.completed and r.end_step == 7 and r.checkpoint.step == 7
    r = run_stage(plan, 0, tmp_path, sink)
    assert r.completed and r.resumed_from == 7
    assert run_stage(plan, 0, tmp_path, sink).steps_run == 0  # finished: no-op
    for i in (1, 2):
        run_stage(plan, i, tmp_path, sink)
    assert rows(sink) == rows(ref_sink)


def test_fork_from_another_runs_checkpoint(lm_reference, tmp_path):
    ref_out, ref_sink, _ = lm_reference
    plan = validate_plan(lm_plan())
    sink = MemorySink()
    r = run_stage(plan, 1, tmp_path, sink, init_from=ref_out / "checkpoints" / "step-00000012")
    assert r.completed
    # stage 1's points: steps 13..22, and at its start step 12 its new eval set and its
    # parameter count (the one at 22 is stage 2's)
    params = "model/params"
    ref_stage1 = [
        x
        for x in rows(ref_sink)
        if (12 < x[1] <= 22 and not (x[0] == params and x[1] == 22))
        or (x[1] == 12 and ("doc" in x[0] or x[0] == params))
    ]
    assert rows(sink) == sorted(ref_stage1)
    with pytest.raises(RunError):
        run_stage(plan, 2, tmp_path / "empty", MemorySink())


def test_run_plan_refuses_used_dir_without_resume(lm_reference):
    out, _, _ = lm_reference
    with pytest.raises(RunError):
        run_plan(validate_plan(lm_plan()), out, MemorySink())


def test_digits_forgetting_shows(tmp_path):
    sink = MemorySink()
    run_plan(validate_plan(digits_plan(n_tasks=2, steps=30)), tmp_path, sink)
    t0 = dict(sink.series("eval/t0/acc"))
    assert t0[30] > 0.9  # learned task 0
    assert t0[60] < 0.5  # forgotten after task 1 (single head, no replay)
    assert dict(sink.series("eval/t1/acc"))[60] > 0.7


def test_jsonl_sink_drops_rows_of_interrupted_attempt(tmp_path):
    from trainers.events import Point

    path = tmp_path / "m.jsonl"
    s = JsonlSink(path)
    s.stage_started(0, 0)
    s.points([Point("a", i, float(i), 0.0, 0) for i in range(0, 10)])
    s.points([Point("a", 10, 10.0, 0.0, 1)])
    with path.open("a") as f:
        f.write('{"key": "a", "st')  # torn line from a killed writer
    s2 = JsonlSink(path)
    s2.stage_started(0, 6)
    assert [r["step"] for r in read_jsonl(path)] == list(range(6))
    s2.points([Point("a", 6, 6.0, 0.0, 0)])
    s2.run_finished()
    assert json.loads(path.read_text().splitlines()[-1])["step"] == 6


def test_llama_with_length_curriculum_and_token_budget(tmp_path):
    plan = lm_plan(steps=(4, 3, 3))
    plan["model"] = {"arch": "llama", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300}
    del plan["stages"][0]["steps"]
    plan["stages"][0]["tokens"] = 4 * 4 * 32
    plan["stages"][2]["curriculum"] = {"by": "length"}
    sink = MemorySink()
    result = run_plan(validate_plan(plan), tmp_path, sink)
    assert [r.end_step for r in result.stages] == [4, 7, 10]
    assert all(math.isfinite(v) for _, v in sink.series("train/loss"))
    # a checkpoint's model folder is a valid model.path for a new plan
    plan2 = lm_plan(steps=(2, 1, 1))
    plan2["model"] = {"arch": "llama", "path": str(tmp_path / "checkpoints/step-00000010/model")}
    r = run_plan(validate_plan(plan2), tmp_path / "from_path", MemorySink())
    assert r.stages[-1].completed


@pytest.mark.parametrize(
    ("dense_eval", "step", "metric"),
    [(True, 13, "eval/"), (False, 14, "train/loss")],
)
def test_a_diverging_stage_stops_with_its_step_and_the_checkpoint_to_fork_from(
    tmp_path, dense_eval, step, metric
):
    """Stage 2 at LR 1e6 breaks the weights at step 13: its dense evaluation right after
    turns NaN, or (without it) the training loss of step 14 does. The stage stops there,
    every point before it is emitted and finite, and no checkpoint holds broken weights."""
    from trainers.events import TrainingDiverged

    plan = lm_plan()
    plan["stages"][1]["optimizer"] = {"lr": 1e6, "grad_clip": None}
    if not dense_eval:
        del plan["stages"][1]["dense_eval"]
    sink = MemorySink()
    with pytest.raises(TrainingDiverged) as err:
        run_plan(validate_plan(plan), tmp_path, sink)
    assert (err.value.step, err.value.stage_name) == (step, "cpt")
    assert err.value.metric.startswith(metric)
    assert "fork from the checkpoint at step 12" in str(err.value)
    assert [s for s, _ in sink.series("train/loss")] == list(range(1, 14))
    assert all(math.isfinite(p.value) for p in sink.all_points)
    assert max(c.step for c in list_checkpoints(tmp_path)) == 12


def test_cli_reports_divergence_in_one_line(tmp_path):
    from tests.trainers.helpers import cli

    plan = lm_plan(steps=(4, 6, 2))
    plan["stages"][1]["optimizer"] = {"lr": 1e6, "grad_clip": None}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    r = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "in stage 'cpt'" in last and "lower learning rate" in last
