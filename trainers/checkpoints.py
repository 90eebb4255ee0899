"""Self-contained checkpoint directories: OUT/checkpoints/step-00000123/

  model/          HF save_pretrained folder (or mlp.pt): usable as a plan's model.path
  tokenizer.json  the run's tokenizer (a fork needs nothing else)
  state.pt        optimizer, data-stream positions, RNG states (python, numpy, torch)
  meta.json       step, stage_index, stage_end, plan name (readable without torch)

Writes go to a hidden temporary folder that is renamed into place, so a process killed
mid-write never leaves a half checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.events import CheckpointInfo

CKPT_DIR = "checkpoints"


def ckpt_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Loaded:
    info: CheckpointInfo
    state: dict[str, Any]  # optimizer, streams, rng, last_loss
    path: Path


def save_checkpoint(
    out_dir: Path,
    *,
    step: int,
    stage_index: int,
    stage_end: bool,
    write_model,  # callable(Path) that saves the model into the given folder
    tokenizer_json: str | None,
    state: dict[str, Any],
    plan_name: str,
) -> CheckpointInfo:
    root = out_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / ckpt_name(step)
    tmp = root / f".tmp-{ckpt_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_model(tmp / "model")
    if tokenizer_json is not None:
        (tmp / "tokenizer.json").write_text(tokenizer_json)
    torch.save(state, tmp / "state.pt")
    meta = {"step": step, "stage_index": stage_index, "stage_end": stage_end, "plan": plan_name}
    (tmp / "meta.json").write_text(json.dumps(meta))
    if final.exists():  # re-written after a resume: replace atomically enough (same content)
        shutil.rmtree(final)
    os.replace(tmp, final)
    return CheckpointInfo(str(final), step, stage_index, stage_end)


def read_info(path: Path) -> CheckpointInfo | None:
    try:
        m = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return CheckpointInfo(str(path), int(m["step"]), int(m["stage_index"]), bool(m["stage_end"]))


def list_checkpoints(out_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints in out_dir, by step."""
    root = out_dir / CKPT_DIR
    if not root.is_dir():
        return []
    infos = [read_info(p) for p in root.iterdir() if p.name.startswith("step-")]
    return sorted((i for i in infos if i is not None), key=lambda i: i.step)


def load_checkpoint(path: Path) -> Loaded:
    info = read_info(path)
    if info is None:
        raise FileNotFoundError(f"not a checkpoint directory: {path}")
    # map to CPU: a checkpoint written on a GPU worker resumes anywhere; the optimizer's
    # load_state_dict moves its tensors to the parameters' device.
    state = torch.load(path / "state.pt", weights_only=False, map_location="cpu")
    return Loaded(info, state, path)


def prune(out_dir: Path, keep_last: int) -> None:
    """Keep the newest keep_last checkpoints plus every stage end; drop the rest."""
    infos = list_checkpoints(out_dir)
    regular = [i for i in infos if not i.stage_end]
    for info in regular[: max(len(regular) - keep_last, 0)]:
        shutil.rmtree(info.path, ignore_errors=True)
    for p in (out_dir / CKPT_DIR).glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)  # leftovers of a killed writer
