"""Engine overhead: steps/s of `run_stage` (full metric logging to a JSONL sink, LR
schedule, mixture sampling) against a bare torch loop on the same tiny model and data.

    python benchmarks/engine.py [--case lm|rl|both] [--steps 300] [--rl-steps 100] [--rounds 2]

lm: a causal_lm stage. rl: the rl stage of trainers/examples/arith_pt_cpt_sft_rl.json
(sampling group_size completions per prompt, rewards, the GRPO update) from a short sft
stage's end, against a bare loop calling the same GRPO loss on pre-built batches.
Prints both rates and their ratio (target >= 0.95). Rates are taken between the first
and last training step, so one-off setup (tokenizer, data, final checkpoint) is excluded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainers import objectives  # noqa: E402
from trainers.checkpoints import load_checkpoint, seed_everything  # noqa: E402
from trainers.data.build import plan_tokenizer, stage_mixture, to_tensors  # noqa: E402
from trainers.data.tokenizer import eos_id, load_tokenizer  # noqa: E402
from trainers.device import resolve_device  # noqa: E402
from trainers.engine import run_stage  # noqa: E402
from trainers.methods import MethodContext  # noqa: E402
from trainers.methods.grpo import GRPO  # noqa: E402
from trainers.plan import validate_plan  # noqa: E402
from trainers.sinks import JsonlSink, MemorySink, MultiSink  # noqa: E402


def make_plan(steps: int):
    return validate_plan(
        {
            "name": "bench",
            "model": {"arch": "gpt2", "size": "tiny"},
            "stages": [
                {
                    "name": "pt",
                    "objective": "causal_lm",
                    "data": [{"source": "builtin:prose"}],
                    "steps": steps,
                    "batch_size": 16,
                    "seq_len": 64,
                    "schedule": {"kind": "cosine", "warmup_steps": 10},
                }
            ],
        }
    )


def bare_loop(plan) -> float:
    """Steps/s of the plainest equivalent loop: pre-built batches, AdamW, clip."""
    st = plan.stages[0]
    tok = plan_tokenizer(plan)
    seed_everything(0)
    model = objectives.build_model(plan.model, tok.get_vocab_size(), eos_id(tok)).train()
    mix = stage_mixture(plan, 0, tok)
    batches = [to_tensors(mix.batch(s)) for s in range(1, st.num_steps + 1)]
    opt = torch.optim.AdamW(model.parameters(), lr=st.optimizer.lr, betas=st.optimizer.betas)
    times = []
    for ids, labels in batches:
        loss = objectives.lm_loss(model, ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def engine_loop(plan) -> float:
    mem = MemorySink()
    with tempfile.TemporaryDirectory() as d:
        run_stage(plan, 0, Path(d), MultiSink(mem, JsonlSink(Path(d) / "metrics.jsonl")))
    t = [p.time for p in mem.all_points if p.key == "train/loss"]
    return (len(t) - 1) / (t[-1] - t[0])


EXAMPLE = Path(__file__).resolve().parents[1] / "trainers/examples/arith_pt_cpt_sft_rl.json"
RL = 3  # the example's rl stage


def make_rl_plan(steps: int, sft_steps: int = 60):
    """The arithmetic example with pt/cpt cut to one step, a short sft, ``steps`` rl steps
    and no evaluation (only training is timed)."""
    data = json.loads(EXAMPLE.read_text())
    for st, n in zip(data["stages"], (1, 1, sft_steps, steps), strict=True):
        st.update(steps=n, eval_sets=[], task=None, checkpoint_interval=None)
    return validate_plan(data)


def rl_setup(plan, out: Path) -> Path:
    """Train the stages before the rl stage once; the rl stage's starting checkpoint."""
    for i in range(RL):
        run_stage(plan, i, out, MemorySink())
    return out / "checkpoints" / f"step-{plan.stage_bounds()[RL][0]:08d}"


def bare_rl_loop(plan, origin: Path) -> float:
    """Steps/s of a plain loop over the same GRPO loss (sampling, rewards, update) on
    pre-built batches: AdamW, clip; no schedule, mixture, logging or checkpoints."""
    st = plan.stages[RL]
    tok = load_tokenizer(origin / "tokenizer.json")
    device = resolve_device()
    model = objectives.load_saved_model(plan.model, origin / "model").to(device).train()
    ref = objectives.load_saved_model(plan.model, origin / "model").to(device).eval()
    ref.requires_grad_(False)
    seed_everything(plan.seed * 1_000_003 + RL)  # as the engine's stage: the same samples
    method = GRPO(MethodContext(plan, st, model, tok, device, lambda: ref))
    mix = stage_mixture(plan, RL, tok)
    start = plan.stage_bounds()[RL][0]
    steps = range(start + 1, start + st.num_steps + 1)
    batches = [tuple(t.to(device) for t in to_tensors(mix.batch(s))) for s in steps]
    opt = _continued_adamw(model, st.optimizer, origin)
    times, losses = [], []
    for batch in batches:
        loss, _ = method.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0]), torch.stack(losses).tolist()


def _continued_adamw(model, o, origin: Path) -> torch.optim.AdamW:
    """AdamW with the moments of the sft stage's end, as the engine's rl stage continues
    them (parameter groups as trainers.engine builds them: no decay on biases and norms), so
    both loops sample the same completions and make the same updates."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay}, {"params": rest}]
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)
    opt.load_state_dict(load_checkpoint(origin).state["optimizer"])
    for g, wd in zip(opt.param_groups, (o.weight_decay, 0.0), strict=True):
        g.update(lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=wd)
    return opt


def engine_rl_loop(plan, origin: Path):
    mem = MemorySink()
    with tempfile.TemporaryDirectory() as d:
        sink = MultiSink(mem, JsonlSink(Path(d) / "metrics.jsonl"))
        run_stage(plan, RL, Path(d), sink, init_from=origin)
    t = [p.time for p in mem.all_points if p.key == "train/loss"]
    return (len(t) - 1) / (t[-1] - t[0]), [v for _, v in mem.series("train/loss")]


def _report(name: str, bare: list[float], eng: list[float], per_step: int = 0) -> None:
    b, e = max(bare), max(eng)
    extra = f", {e * per_step:.0f} completions/s" if per_step else ""
    print(
        f"{name} bare loop       : {b:7.2f} steps/s  (rounds: {', '.join(f'{x:.2f}' for x in bare)})"
    )
    print(
        f"{name} engine + logging: {e:7.2f} steps/s  (rounds: {', '.join(f'{x:.2f}' for x in eng)}){extra}"
    )
    print(f"{name} ratio engine/bare: {e / b:.3f}  (target >= 0.95)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=["lm", "rl", "both"], default="both")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rl-steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.case in ("lm", "both"):
        plan = make_plan(args.steps)
        bare, eng = [], []
        for _ in range(args.rounds):  # interleaved so drift affects both alike
            bare.append(bare_loop(plan))
            eng.append(engine_loop(plan))
        _report("lm", bare, eng)
    if args.case in ("rl", "both"):
        plan = make_rl_plan(args.rl_steps)
        with tempfile.TemporaryDirectory() as d:
            origin = rl_setup(plan, Path(d))
            bare, eng, same = [], [], []
            for _ in range(args.rounds):
                (b, b_losses), (e, e_losses) = (
                    bare_rl_loop(plan, origin),
                    engine_rl_loop(plan, origin),
                )
                bare.append(b)
                eng.append(e)
                same.append(b_losses == e_losses)
        rl = plan.stages[RL]
        _report("rl", bare, eng, rl.batch_size * rl.rl.group_size)
        print(f"rl losses of the two loops identical in every round: {all(same)}")


if __name__ == "__main__":
    main()
