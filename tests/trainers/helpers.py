"""Tiny plans shared by the trainers tests (a few dozen steps each)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EVALS = [
    {"name": "prose", "source": "builtin:prose", "max_batches": 1, "batch_size": 8, "seq_len": 32},
    {"name": "code", "source": "builtin:code", "max_batches": 1, "batch_size": 8, "seq_len": 32},
    {
        "name": "doc",
        "source": "builtin:docstrings",
        "max_batches": 1,
        "batch_size": 8,
        "seq_len": 32,
    },
]


def lm_plan(steps=(12, 10, 8), **over) -> dict:
    """Three-stage tiny LM plan: prose -> code (+ prose replay) -> SFT on docstrings."""
    common = {"batch_size": 4, "seq_len": 32, "eval_interval": 5, "checkpoint_interval": 4}
    plan = {
        "name": "tiny-lm",
        "seed": 3,
        "model": {
            "arch": "gpt2",
            "n_layer": 1,
            "n_embd": 32,
            "n_head": 2,
            "vocab_size": 300,
            "max_positions": 64,
        },
        "eval_sets": copy.deepcopy(EVALS),
        "log_interval": 3,
        "stages": [
            {
                "name": "pt",
                "objective": "causal_lm",
                "data": [{"source": "builtin:prose"}],
                "steps": steps[0],
                "eval_sets": ["prose", "code"],
                "schedule": {"kind": "cosine", "warmup_steps": 3},
                **common,
            },
            {
                "name": "cpt",
                "objective": "causal_lm",
                "data": [{"source": "builtin:code"}],
                "replay": [{"source": "builtin:prose", "ratio": 0.25}],
                "steps": steps[1],
                "eval_sets": ["prose", "code", "doc"],
                "dense_eval": {"interval": 1, "steps": 3},
                "schedule": {"kind": "wsd", "warmup_steps": 2, "warmup_from": "previous"},
                **common,
            },
            {
                "name": "sft",
                "objective": "sft",
                "data": [{"source": "builtin:docstrings"}],
                "steps": steps[2],
                "eval_sets": ["prose", "doc"],
                **common,
            },
        ],
    }
    plan.update(over)
    return plan


def digits_plan(n_tasks=2, steps=10) -> dict:
    tasks = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]][:n_tasks]
    evals = [
        {
            "name": f"t{i}",
            "source": "builtin:digits",
            "kind": "classification",
            "classes": c,
            "max_batches": 1,
            "batch_size": 64,
        }
        for i, c in enumerate(tasks)
    ]
    return {
        "name": "tiny-digits",
        "model": {"arch": "mlp", "hidden": [16]},
        "eval_sets": evals,
        "stages": [
            {
                "name": f"t{i}",
                "objective": "classification",
                "data": [{"source": "builtin:digits", "classes": c}],
                "steps": steps,
                "batch_size": 16,
                "eval_sets": [e["name"] for e in evals],
                "eval_interval": 5,
                "optimizer": {"lr": 0.01},
                "task": f"t{i}",
            }
            for i, c in enumerate(tasks)
        ],
    }


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "STAGEWISE_TORCH_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainers", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metric_rows(out: Path) -> list[tuple[str, int, float]]:
    """(key, step, value) of OUT/metrics.jsonl, sorted; each (key, step) must occur once."""
    from trainers.sinks import read_jsonl

    rows = [(r["key"], r["step"], r["value"]) for r in read_jsonl(out / "metrics.jsonl")]
    keys = [(k, s) for k, s, _ in rows]
    assert len(keys) == len(set(keys)), "duplicated (key, step)"
    return sorted(rows)


def kill_run_at(plan_file: Path, out: Path, step: int, timeout: float = 60) -> None:
    """Start `python -m trainers run PLAN --out OUT` and SIGKILL it as soon as its
    metrics.jsonl holds the train/loss of ``step`` (or later; or after ``timeout`` s)."""
    from trainers.sinks import read_jsonl

    env = {**os.environ, "STAGEWISE_TORCH_THREADS": "1"}
    args = ["run", str(plan_file), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainers", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and any(
            r["key"] == "train/loss" and r["step"] >= step for r in read_jsonl(metrics)
        ):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
