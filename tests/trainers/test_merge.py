"""Merging checkpoints (trainers/merge.py and a stage's ``init_merge``): the weighted average
of real checkpoints, tensor for tensor; architecture and tokenizer mismatches refused naming
the entry; a merged stage starts from exactly the average with fresh optimizer state."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.trainers.helpers import cli, digits_plan
from trainers import merge, objectives
from trainers.checkpoints import list_checkpoints, load_checkpoint
from trainers.engine import run_plan, run_stage
from trainers.plan import validate_plan
from trainers.sinks import MemorySink

MODEL = {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
         "max_positions": 64}  # fmt: skip
EVAL = {"name": "prose", "source": "builtin:prose", "max_batches": 1, "batch_size": 4,
        "seq_len": 32}  # fmt: skip


def _plan(seed: int, steps: int = 3, **stage) -> dict:
    return {
        "name": f"merge-{seed}", "seed": seed, "model": dict(MODEL), "eval_sets": [dict(EVAL)],
        "stages": [{"name": "pt", "objective": "causal_lm", "data": [{"source": "builtin:prose"}],
                    "steps": steps, "batch_size": 4, "seq_len": 32, "eval_sets": ["prose"],
                    "eval_interval": steps, **stage}],
    }  # fmt: skip


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[Path]:
    """The stage-end checkpoints of two tiny runs that differ only by seed (same tokenizer,
    different weights)."""
    root = tmp_path_factory.mktemp("merge-parents")
    out = []
    for seed in (1, 2):
        run_plan(validate_plan(_plan(seed)), root / f"run{seed}", MemorySink())
        out.append(Path(list_checkpoints(root / f"run{seed}")[-1].path))
    return out


def _state(path: Path) -> dict[str, torch.Tensor]:
    return objectives.load_saved_model(validate_plan(_plan(1)).model, path / "model").state_dict()


def test_equal_weights_give_exactly_the_mean_of_every_tensor(ckpts):
    spec = validate_plan(_plan(1)).model
    a, b = _state(ckpts[0]), _state(ckpts[1])
    merged = merge.merge_models(spec, [(ckpts[0], 0.5), (ckpts[1], 0.5)]).state_dict()
    assert set(merged) == set(a)
    differ = 0
    for name, t in merged.items():
        expected = ((a[name].double() + b[name].double()) / 2).to(a[name].dtype)
        assert torch.equal(t, expected), name
        differ += not torch.equal(a[name], b[name])
    assert differ > 5  # the parents really differ, so the mean is not one of them
    # the same through model directories (a checkpoint's model/), weights in any scale
    again = merge.merge_models(spec, [(ckpts[0] / "model", 3), (ckpts[1] / "model", 3)])
    assert all(torch.equal(t, merged[n]) for n, t in again.state_dict().items())


def test_weights_are_normalised(ckpts):
    spec = validate_plan(_plan(1)).model
    a, b = _state(ckpts[0]), _state(ckpts[1])
    merged = merge.merge_models(spec, [(ckpts[0], 1.0), (ckpts[1], 3.0)]).state_dict()
    for name, t in merged.items():
        expected = (a[name].double() * 0.25 + b[name].double() * 0.75).to(a[name].dtype)
        assert torch.equal(t, expected), name
    assert merge.normalised_weights([(ckpts[0], 2), (ckpts[1], 6)]) == [0.25, 0.75]
    with pytest.raises(ValueError, match=r"init_merge\.1 .*weight must be a positive"):
        merge.normalised_weights([(ckpts[0], 1.0), (ckpts[1], float("nan"))])


def _other_model(tmp_path: Path, name: str, **model) -> Path:
    """A checkpoint-like folder holding a freshly built model of another shape or kind."""
    spec = validate_plan({**_plan(1), "model": {**MODEL, **model}}).model
    torch.manual_seed(0)
    folder = tmp_path / name
    objectives.save_model(objectives.build_model(spec, 300, 0), folder / "model")
    return folder


def test_mismatched_architectures_and_missing_models_name_the_entry(ckpts, tmp_path):
    spec = validate_plan(_plan(1)).model
    wider = _other_model(tmp_path, "wider", n_embd=64)
    with pytest.raises(ValueError, match=r"init_merge\.1 \(.*wider\): .* has shape \[.*64"):
        merge.merge_models(spec, [(ckpts[0], 1), (wider, 1)])
    deeper = _other_model(tmp_path, "deeper", n_layer=2)
    with pytest.raises(ValueError, match=r"init_merge\.2 \(.*deeper\): a different architecture"):
        merge.merge_models(spec, [(ckpts[0], 1), (ckpts[1], 1), (deeper, 1)])
    llama = _other_model(tmp_path, "llama", arch="llama")
    with pytest.raises(ValueError, match=r"init_merge\.1 \(.*llama\): a llama model; .* gpt2"):
        merge.merge_models(spec, [(ckpts[0], 1), (llama, 1)])
    with pytest.raises(ValueError, match=r"init_merge\.1 \(.*nowhere\): no such checkpoint"):
        merge.merge_models(spec, [(ckpts[0], 1), (tmp_path / "nowhere", 1)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"init_merge\.0 \(.*empty\): cannot load its model"):
        merge.merge_models(spec, [(tmp_path / "empty", 1), (ckpts[0], 1)])


def test_the_tokenizer_is_the_shared_one(ckpts, tmp_path):
    assert merge.tokenizer_path([(ckpts[0], 1), (ckpts[1], 1)]) == ckpts[0] / "tokenizer.json"
    # a checkpoint's model/ folder finds the tokenizer beside it
    assert merge.tokenizer_path([(ckpts[1] / "model", 1), (ckpts[0], 1)]) == (
        ckpts[1] / "tokenizer.json"
    )
    other = tmp_path / "other-tok"
    shutil.copytree(ckpts[1], other)
    (other / "tokenizer.json").write_text(json.dumps({"not": "the same"}))
    with pytest.raises(ValueError, match=r"init_merge\.1 \(.*other-tok\): its tokenizer.json"):
        merge.tokenizer_path([(ckpts[0], 1), (other, 1)])
    (other / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"init_merge\.1 .*no tokenizer.json, but init_merge\.0"):
        merge.tokenizer_path([(ckpts[0], 1), (other, 1)])
    assert merge.tokenizer_path([(other, 1), (other / "model", 1)]) is None


def test_a_merged_stage_starts_from_the_average_with_fresh_optimizer_state(ckpts, tmp_path):
    """Stage 1 merges the two parents (not stage 0's end). Its one step has learning rate 0
    (linear decay to min_lr 0 over one step), so its end checkpoint holds the starting
    weights: exactly the average."""
    plan = _plan(5, steps=2)
    merged_stage = copy.deepcopy(plan["stages"][0])
    merged_stage.update(
        name="merged", steps=1, eval_interval=1, schedule={"kind": "linear"},
        init_merge=[{"path": str(ckpts[0]), "weight": 0.5},
                    {"path": str(ckpts[1]), "weight": 0.5}],
    )  # fmt: skip
    plan["stages"].append(merged_stage)
    validated = validate_plan(plan)
    out, sink = tmp_path / "merged", MemorySink()
    run_plan(validated, out, sink)
    end = load_checkpoint(Path(list_checkpoints(out)[-1].path))
    assert end.info.step == 3 and end.info.stage_index == 1
    saved = objectives.load_saved_model(validated.model, end.path / "model").state_dict()
    a, b = _state(ckpts[0]), _state(ckpts[1])
    for name, t in saved.items():
        assert torch.equal(t, ((a[name].double() + b[name].double()) / 2).float()), name
    # fresh AdamW moments: after one update, each exp_avg is (1 - beta1) * grad, no history
    assert all(int(s["step"]) == 1 for s in end.state["optimizer"]["state"].values())
    assert (out / "tokenizer.json").read_bytes() == (ckpts[0] / "tokenizer.json").read_bytes()
    params = [p.value for p in sink.all_points if p.key == "model/params" and p.stage == 1]
    parent = objectives.load_saved_model(validated.model, ckpts[0] / "model")
    assert params == [sum(p.numel() for p in parent.parameters())]


def test_mlp_checkpoints_merge_too(tmp_path):
    plan = digits_plan(n_tasks=1, steps=2)
    roots = []
    for seed in (1, 2):
        run_plan(validate_plan({**plan, "seed": seed}), tmp_path / f"d{seed}", MemorySink())
        roots.append(Path(list_checkpoints(tmp_path / f"d{seed}")[-1].path))
    spec = validate_plan(plan).model
    merged = merge.merge_models(spec, [(roots[0], 1), (roots[1], 1)]).state_dict()
    a = objectives.load_saved_model(spec, roots[0] / "model").state_dict()
    b = objectives.load_saved_model(spec, roots[1] / "model").state_dict()
    assert all(torch.equal(t, ((a[n].double() + b[n].double()) / 2).float())
               for n, t in merged.items())  # fmt: skip
    assert merge.tokenizer_path([(roots[0], 1), (roots[1], 1)]) is None


def test_run_references_need_a_server_and_the_cli_names_a_bad_entry(ckpts, tmp_path):
    plan = _plan(1, init_merge=[{"run": 3, "step": 10, "weight": 1}, {"path": str(ckpts[0]),
                                                                       "weight": 1}])  # fmt: skip
    path = tmp_path / "p.json"
    path.write_text(json.dumps(plan))
    r = cli("validate", str(path))
    assert r.returncode == 2
    assert "stages.0.init_merge.0: run 3 step 10 is resolved by a Stagewise" in r.stderr, r.stderr
    # without check_files the engine itself refuses an unresolved reference, naming it
    with pytest.raises(Exception, match=r"stages\.0\.init_merge\.0: run 3 step 10"):
        run_stage(validate_plan(plan, check_files=False), 0, tmp_path / "x", MemorySink())
    wider = _other_model(tmp_path, "wider", n_embd=64)
    shutil.copy(ckpts[0] / "tokenizer.json", wider / "tokenizer.json")
    plan["stages"][0]["init_merge"][0] = {"path": str(wider), "weight": 1}
    path.write_text(json.dumps(plan))
    r = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: init_merge.1 (") and "has shape" in last, r.stderr
    assert "Traceback" not in r.stderr
