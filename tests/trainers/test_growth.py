"""Growth between stages (issue #15): a real 3-stage run of `python -m trainers run` that
trains one block, grows it x2 by ``identity`` (2 blocks), then x2 by ``stack`` (4 blocks);
its checkpoints, metrics and optimizer state, a SIGKILL inside the grown stage, bad plans."""

import json
from pathlib import Path

import pytest
import torch

from tests.trainers.helpers import cli, digits_plan, kill_run_at, lm_plan, metric_rows
from trainers import objectives
from trainers.checkpoints import list_checkpoints, load_checkpoint
from trainers.engine import _optimizer, _param_order, run_plan
from trainers.growth import grow_model, remap_optimizer_state
from trainers.plan import GrowSpec, ModelSpec, PlanError, validate_plan
from trainers.sinks import JsonlSink

BOUNDS = [(0, 20), (20, 80), (80, 90)]
KILL_AT = 45  # inside the grown stage (steps 21..80), between its checkpoints 40 and 50


def _plan() -> dict:
    """1 block of GPT-2 on prose, then grown x2 (identity) and x2 again (stack), same data."""
    plan = lm_plan(steps=(20, 60, 10))
    plan["model"].update(n_layer=1, n_embd=64)  # a step takes ~30 ms: the kill lands mid-stage
    for st, name in zip(plan["stages"], ("pt", "grown", "stacked"), strict=True):
        st.pop("replay", None)
        st.update(name=name, objective="causal_lm", data=[{"source": "builtin:prose"}])
        st.update(batch_size=16, seq_len=64, checkpoint_interval=10, eval_interval=15)
        st["optimizer"] = {"lr": 3e-3}
    plan["stages"][1]["grow"] = {"method": "identity", "factor": 2}
    plan["stages"][2]["grow"] = {"method": "stack", "factor": 2}
    plan["eval_sets"] = [{**plan["eval_sets"][0], "seq_len": 64}]  # prose only: a quick start
    for st in plan["stages"]:
        st.update(eval_sets=["prose"])
    return plan


@pytest.fixture(scope="module")
def grown_run(tmp_path_factory):
    """The plan file and the output of one uninterrupted run of it (in this process, with
    the CLI's sink: the transformers import is the slow part of a CLI run)."""
    tmp = tmp_path_factory.mktemp("grow")
    f = tmp / "plan.json"
    f.write_text(json.dumps(_plan()))
    out = tmp / "ref"
    run_plan(validate_plan(_plan()), out, JsonlSink(out / "metrics.jsonl"))
    return f, out


def _stage_end(out: Path, i: int):
    (c,) = [c for c in list_checkpoints(out) if c.stage_index == i and c.stage_end]
    return load_checkpoint(Path(c.path))


def _model(ckpt) -> torch.nn.Module:
    return objectives.load_pretrained(ckpt.path / "model").eval()


def _series(out: Path, key: str) -> dict[int, float]:
    return {s: v for k, s, v in metric_rows(out) if k == key}


def _block_params(model) -> int:
    return sum(p.numel() for p in model.transformer.h[0].parameters())


def test_each_grown_stage_has_k_times_the_layers_and_params(grown_run):
    _, out = grown_run
    layers = []
    for i in range(3):
        cfg = json.loads((_stage_end(out, i).path / "model" / "config.json").read_text())
        layers.append(cfg["n_layer"])
    assert layers == [1, 2, 4]
    block = _block_params(_model(_stage_end(out, 0)))
    params = _series(out, "model/params")
    assert sorted(params) == [0, 20, 80]  # logged at each stage start
    assert params[20] - params[0] == block  # one new block
    assert params[80] - params[20] == 2 * block  # two more


def test_identity_growth_continues_from_the_trained_weights(grown_run):
    _, out = grown_run
    loss = _series(out, "train/loss")
    start = loss[1]  # ~ln(vocab): what a restart would look like
    assert loss[20] < 0.85 * start  # trained enough that a restart would show
    assert abs(loss[21] - loss[20]) <= 0.1 * loss[20]


def test_identity_grown_model_computes_the_same_function(grown_run):
    _, out = grown_run
    model = _model(_stage_end(out, 0))
    grown = grow_model(model, GrowSpec(method="identity", factor=2)).model.eval()
    ids = torch.randint(
        0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, grown(input_ids=ids).logits
    assert grown.config.n_layer == 2 * model.config.n_layer
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    zero = grown.transformer.h[1]
    assert not zero.attn.c_proj.weight.any() and not zero.mlp.c_proj.bias.any()
    assert zero.attn.c_attn.weight.equal(model.transformer.h[0].attn.c_attn.weight)


def test_stack_repeats_the_layer_stack(grown_run):
    _, out = grown_run
    model = _model(_stage_end(out, 1))
    grown = grow_model(model, GrowSpec(method="stack", factor=2)).model
    n = model.config.n_layer
    assert grown.config.n_layer == 2 * n
    sd, old = grown.state_dict(), model.state_dict()
    for j in range(2 * n):
        for key in model.transformer.h[0].state_dict():
            assert sd[f"transformer.h.{j}.{key}"].equal(old[f"transformer.h.{j % n}.{key}"])
    assert grown.lm_head.weight is grown.transformer.wte.weight  # still tied


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_growth_of_both_architectures_round_trips_through_save(arch, tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, size="tiny", vocab_size=300, max_positions=64)
    model = objectives.build_model(spec, 300, 0).eval()
    ids = torch.randint(0, 300, (2, 16))
    for method in ("identity", "stack"):
        grown = grow_model(model, GrowSpec(method=method, factor=3)).model.eval()
        objectives.save_model(grown, tmp_path / method)
        loaded = objectives.load_saved_model(spec, tmp_path / method).eval()
        assert loaded.config.num_hidden_layers == 6
        with torch.no_grad():
            same = loaded(input_ids=ids).logits.equal(grown(input_ids=ids).logits)
            diff = (grown(input_ids=ids).logits - model(input_ids=ids).logits).abs().max()
        assert same
        assert (diff < 1e-5) if method == "identity" else (diff > 1e-3)
    assert model.config.num_hidden_layers == 2  # the input is left as it was


def test_original_parameters_keep_their_moments_and_new_ones_start_fresh(grown_run):
    f, out = grown_run
    plan = validate_plan(json.loads(f.read_text()))
    src = _stage_end(out, 0)
    model = _model(src)
    grown = grow_model(model, GrowSpec(method="identity", factor=2))
    old, new = _param_order(model), _param_order(grown.model)
    opt = _optimizer(grown.model, plan, 1)
    opt.load_state_dict(remap_optimizer_state(src.state["optimizer"], old, new, grown.source_of))
    saved = src.state["optimizer"]["state"]
    params = dict(grown.model.named_parameters())
    for name in new:
        state = opt.state.get(params[name], {})
        if grown.source_of[name] is None:
            assert name.startswith("transformer.h.1.") and not state
        else:
            was = saved[old.index(grown.source_of[name])]
            for k in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(state[k], was[k]), (name, k)
    assert sum(s is None for s in grown.source_of.values()) == len(
        list(model.transformer.h[0].parameters())
    )


def _adam_steps(ckpt) -> dict[str, int]:
    names = _param_order(_model(ckpt))
    return {names[k]: int(s["step"]) for k, s in ckpt.state["optimizer"]["state"].items()}


def test_the_engine_carries_moments_across_growth(grown_run):
    """AdamW step counts at each stage end: a parameter from stage 0 has taken every step,
    one added by a growth only the steps since."""
    _, out = grown_run
    grown = _adam_steps(_stage_end(out, 1))
    assert grown["transformer.wte.weight"] == grown["transformer.h.0.mlp.c_fc.weight"] == 80
    assert grown["transformer.h.1.mlp.c_fc.weight"] == 60  # the identity copy, new at 20
    stacked = _adam_steps(_stage_end(out, 2))
    blocks = [stacked[f"transformer.h.{j}.attn.c_attn.weight"] for j in range(4)]
    assert blocks == [90, 70, 10, 10]  # stack: blocks 0, 1 kept; 2, 3 new at 80
    assert stacked["transformer.ln_f.weight"] == 90


@pytest.mark.slow
def test_sigkill_inside_the_grown_stage_resumes_bit_for_bit(grown_run):
    f, ref = grown_run
    killed = ref.parent / "killed"
    kill_run_at(f, killed, KILL_AT)
    inside = [c.step for c in list_checkpoints(killed) if c.stage_index == 1 and not c.stage_end]
    assert inside and max(inside) < BOUNDS[1][1], f"no checkpoint inside the grown stage: {inside}"
    r = cli("run", str(f), "--out", str(killed), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    got, want = metric_rows(killed), metric_rows(ref)
    assert got == want  # bit-identical values, each (key, step) exactly once
    assert [s for k, s, _ in got if k == "train/loss"] == list(range(1, 91))


def _errors(plan: dict) -> dict[str, str]:
    with pytest.raises(PlanError) as e:
        validate_plan(plan)
    return {x["path"]: x["message"] for x in e.value.errors}


def test_bad_growth_plans_name_the_field():
    first = _plan()
    first["stages"][0]["grow"] = {"method": "identity"}
    assert "first stage starts from scratch" in _errors(first)["stages.0.grow"]
    once = _plan()
    once["stages"][1]["grow"]["factor"] = 1
    assert "greater than or equal to 2" in _errors(once)["stages.1.grow.factor"]
    method = _plan()
    method["stages"][2]["grow"]["method"] = "widen"
    assert "stages.2.grow.method" in _errors(method)
    mlp = digits_plan()
    mlp["stages"][1]["grow"] = {"method": "stack"}
    assert "gpt2/llama" in _errors(mlp)["stages.1.grow"]
    validate_plan(_plan())  # the plan itself is fine
