"""Engine overhead: steps/s of `run_stage` (full metric logging to a JSONL sink, LR
schedule, mixture sampling) against a bare torch loop on the same tiny model and data.

    python benchmarks/engine.py [--steps 300] [--rounds 2]

Prints both rates and their ratio (target >= 0.95). Rates are taken between the first
and last training step, so one-off setup (tokenizer, data, final checkpoint) is excluded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainers import objectives  # noqa: E402
from trainers.checkpoints import seed_everything  # noqa: E402
from trainers.data.build import plan_tokenizer, stage_mixture, to_tensors  # noqa: E402
from trainers.data.tokenizer import eos_id  # noqa: E402
from trainers.engine import run_stage  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    plan = make_plan(args.steps)
    bare, eng = [], []
    for _ in range(args.rounds):  # interleaved so drift affects both alike
        bare.append(bare_loop(plan))
        eng.append(engine_loop(plan))
    b, e = max(bare), max(eng)
    print(f"bare torch loop : {b:7.2f} steps/s  (rounds: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"engine + logging: {e:7.2f} steps/s  (rounds: {', '.join(f'{x:.2f}' for x in eng)})")
    print(f"ratio engine/bare: {e / b:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
