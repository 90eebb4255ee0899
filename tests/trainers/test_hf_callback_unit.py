"""StagewiseCallback without a server or a model: key names, the config, the step offset
of a second train() and of a resumed one, stages, finish and cancel, on an offline run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")

from transformers import TrainerControl, TrainerState  # noqa: E402

from trainers.integrations.hf import (  # noqa: E402
    StagewiseCallback,
    checkpoint_run_id,
    json_safe,
    stagewise_metrics,
)


def test_training_keys_and_what_is_left_out():
    logs = {"loss": 2.5, "grad_norm": 0.75, "learning_rate": 1e-3, "epoch": 0.5,
            "num_input_tokens_seen": 1024, "train_runtime": 3.1, "train_tokens_per_second": 9.0,
            "total_flos": 1e9, "kl": 0.1, "rewards/chosen": 1, "flag": True, "note": "x",
            "bad": math.nan}  # fmt: skip
    assert stagewise_metrics(logs) == {"train/loss": 2.5, "train/grad_norm": 0.75, "lr": 1e-3,
                                       "train/epoch": 0.5, "train/kl": 0.1,
                                       "train/rewards/chosen": 1.0}  # fmt: skip
    summary = {"train_runtime": 3.8, "train_samples_per_second": 31.6, "train_loss": 5.4,
               "total_flos": 12.0, "epoch": 0.6}  # fmt: skip
    assert stagewise_metrics(summary) == {"train/epoch": 0.6}


def test_eval_keys_are_named_by_the_evaluation_prefix():
    per_set = {"eval_my_set_loss": 3.0, "eval_my_set_exact_match": 0.25,
               "eval_my_set_runtime": 0.1, "eval_my_set_samples_per_second": 80.0,
               "eval_my_set_steps_per_second": 10.0, "epoch": 1.0}  # fmt: skip
    assert stagewise_metrics(per_set) == {"eval/my_set/loss": 3.0,
                                          "eval/my_set/exact_match": 0.25, "train/epoch": 1.0}  # fmt: skip
    assert stagewise_metrics({"eval_loss": 3.0, "eval_runtime": 0.1}) == {"eval/eval/loss": 3.0}
    assert stagewise_metrics({"test_loss": 2.0, "test_runtime": 0.1}) == {"eval/test/loss": 2.0}
    # Logged outside an evaluation: the prefixes seen before, else the set "eval".
    assert stagewise_metrics({"eval_prose_acc": 0.5}, {"eval_prose"}) == {"eval/prose/acc": 0.5}
    assert stagewise_metrics({"eval_prose_acc": 0.5}) == {"eval/eval/prose_acc": 0.5}


def test_config_is_json_safe():
    cfg = json_safe({"lr": 1e-3, "inf": math.inf, "t": (1, 2), "p": Path("/x"), 3: None})
    assert cfg == {"lr": 1e-3, "inf": "inf", "t": [1, 2], "p": "/x", "3": None}
    json.dumps(cfg, allow_nan=False)


def _args(out: Path, **config) -> SimpleNamespace:
    return SimpleNamespace(output_dir=str(out), run_name=None, to_dict=lambda: dict(config))


def _events(spool: Path) -> tuple[list, list]:
    rows = [json.loads(line) for line in (spool / "events.jsonl").read_text().splitlines()]
    points = sorted((p[0], p[1], p[2]) for r in rows if "points" in r for p in r["points"])
    return [r for r in rows if "points" not in r], points


def _train(cb: StagewiseCallback, args, state: TrainerState, steps: range, control=None):
    control = control or TrainerControl()
    cb.on_train_begin(args, state, control)
    for step in steps:
        state.global_step = step
        cb.on_step_end(args, state, control)
        cb.on_log(args, state, control, logs={"loss": 1.0 / step, "note": "x"})
    cb.on_train_end(args, state, control)
    return control


def test_two_trainings_share_one_step_axis_and_only_the_creator_finishes(tmp_path):
    spool = tmp_path / "spool"
    first = StagewiseCallback(stage="pt", mode="offline", spool_dir=spool, finish=False,
                              config={"mine": 1})  # fmt: skip
    _train(first, _args(tmp_path, max_steps=3), TrainerState(), range(1, 4))
    assert first.run.finished is None and first.run._meta["config"] == {"max_steps": 3, "mine": 1}
    second = StagewiseCallback(stage="cpt", run=first.run)
    _train(second, _args(tmp_path), TrainerState(), range(1, 3))  # a new Trainer: from 0
    assert first.run.finished is None  # run= given: the caller finishes it
    first.run.finish()
    marks, points = _events(spool)
    assert marks == [{"stage": 0, "name": "pt", "start": 0}, {"stage": 1, "name": "cpt", "start": 3},
                     {"finish": "succeeded"}]  # fmt: skip
    assert [(k, s) for k, s, _ in points] == [("train/loss", s) for s in (1, 2, 3, 4, 5)]

    with pytest.raises(TypeError, match="not both"):
        StagewiseCallback(run=first.run, name="x")


def test_a_resumed_training_takes_the_offset_saved_with_its_checkpoint(tmp_path):
    spool = tmp_path / "spool"
    cb = StagewiseCallback(stage="pt", mode="offline", spool_dir=spool, step_offset=100)
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    cb.on_train_begin(args, state, control)
    state.global_step = 10
    (tmp_path / "checkpoint-10").mkdir()
    cb.on_save(args, state, control)
    saved = json.loads((tmp_path / "checkpoint-10" / "stagewise.json").read_text())
    assert saved["step_offset"] == 100 and checkpoint_run_id(tmp_path / "checkpoint-10") is None

    resumed = StagewiseCallback(stage="pt", run=cb.run)  # same stage: no new mark
    _train(resumed, args, state, range(11, 13))
    assert resumed.offset == 100
    cb.run.finish()
    marks, points = _events(spool)
    assert marks == [{"stage": 0, "name": "pt", "start": 100}, {"finish": "succeeded"}]
    assert [s for _, s, _ in points] == [111, 112]


def test_a_canceled_run_stops_the_training(tmp_path):
    cb = StagewiseCallback(mode="offline", spool_dir=tmp_path / "spool")
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    cb.on_train_begin(args, state, control)
    cb.on_step_end(args, state, control)
    assert not control.should_training_stop
    cb.run.canceled = True  # what the client sets when the server refuses a canceled run
    cb.on_step_end(args, state, control)
    assert control.should_training_stop
    cb.run.finish()
