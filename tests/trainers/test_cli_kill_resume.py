"""SIGKILL a real `python -m trainers run` mid-stage, resume it, compare with a clean run."""

import json

import pytest

from tests.trainers.helpers import cli, kill_run_at, lm_plan, metric_rows
from trainers.checkpoints import list_checkpoints
from trainers.sinks import read_jsonl

KILL_AT = 45  # inside stage 1 (steps 31..90), between its checkpoints 40 and 50


def _plan() -> dict:
    plan = lm_plan(steps=(30, 60, 10))
    # Large enough that a step takes ~30 ms, so the kill lands mid-stage.
    plan["model"].update(n_layer=2, n_embd=64)
    for st in plan["stages"]:
        st.update(batch_size=16, seq_len=64, checkpoint_interval=10, eval_interval=15)
    for es in plan["eval_sets"]:
        es.update(seq_len=64)
    return plan


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(_plan()))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = cli("run", str(f), "--out", str(ref), "--no-progress")
    assert r.returncode == 0, r.stderr

    kill_run_at(f, killed, KILL_AT)
    metrics = killed / "metrics.jsonl"
    steps = [c.step for c in list_checkpoints(killed)]
    assert max(steps) < 90, f"run finished stage 1 before the kill: {steps}"
    assert max(r["step"] for r in read_jsonl(metrics)) < 90

    r = cli("run", str(f), "--out", str(killed), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    got, want = metric_rows(killed), metric_rows(ref)
    assert got == want  # bit-identical values, each (key, step) exactly once
    assert [s for k, s, _ in got if k == "train/loss"] == list(range(1, 101))
