"""Merging checkpoints: a stage's ``init_merge`` starts it from the weighted average of the
models of several checkpoints (model soups, merges of forks).

An entry is ``(path, weight)``: a checkpoint directory (``model/`` inside, its
``tokenizer.json`` beside it) or a model directory (a checkpoint's ``model/`` folder, or an HF
model folder). Weights are normalised to sum to 1. Every floating-point tensor of the state
dict (parameters and persistent buffers) is averaged in float64 and cast back to its dtype, so
``(0.5, 0.5)`` of ``a`` and ``b`` is ``((a + b) / 2)`` computed in float64, rounded once.
Integer and boolean buffers (position ids, masks) must be equal in every entry and are kept.
The models must have the same architecture: the same state-dict names and shapes."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from trainers import objectives
from trainers.plan import ModelSpec

TOKENIZER = "tokenizer.json"


def _label(j: int, path: Path) -> str:
    return f"init_merge.{j} ({path})"


def model_dir(path: Path) -> Path:
    """The model folder of an entry: ``path/model`` for a checkpoint directory, else ``path``."""
    inner = Path(path) / "model"
    return inner if inner.is_dir() else Path(path)


def normalised_weights(entries: list[tuple[Path, float]]) -> list[float]:
    """The entries' weights divided by their sum (each must be finite and positive)."""
    if len(entries) < 2:
        raise ValueError("init_merge needs at least two checkpoints")
    for j, (path, w) in enumerate(entries):
        if not (isinstance(w, int | float) and math.isfinite(w) and w > 0):
            raise ValueError(f"{_label(j, path)}: weight must be a positive number, not {w!r}")
    total = math.fsum(float(w) for _, w in entries)
    return [float(w) / total for _, w in entries]


def _load(spec: ModelSpec, j: int, path: Path) -> nn.Module:
    """The model saved at entry ``j``, or a ValueError naming the entry."""
    folder = model_dir(path)
    if not folder.is_dir():
        raise ValueError(f"{_label(j, path)}: no such checkpoint or model directory")
    try:
        return objectives.load_saved_model(spec, folder)
    except (OSError, ValueError, RuntimeError) as exc:  # a missing file, a broken config
        raise ValueError(f"{_label(j, path)}: cannot load its model: {exc}") from None


def _check_same(first: dict, state: dict, kind: str, first_kind: str, where: str) -> None:
    """``state`` has the architecture of ``first`` (same model type, names and shapes)."""
    if kind != first_kind:
        raise ValueError(f"{where}: a {kind} model; init_merge.0 is a {first_kind} model")
    missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which init_merge.0 lacks"
        raise ValueError(f"{where}: a different architecture: it {what}")
    for name, t in state.items():
        if t.shape != first[name].shape:
            raise ValueError(
                f"{where}: {name} has shape {list(t.shape)}, init_merge.0 has "
                f"{list(first[name].shape)} (a different architecture or size)"
            )


def _model_kind(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def merge_models(spec: ModelSpec, entries: list[tuple[Path, float]]) -> nn.Module:
    """The weighted average (weights normalised) of the models of these checkpoint (or
    model) directories, as a model of the first entry's class (on the CPU). Models are loaded
    one at a time; a missing one, or one of another architecture or shape, is a ValueError
    naming the entry (``init_merge.J (path)``)."""
    weights = normalised_weights(entries)
    merged = _load(spec, 0, Path(entries[0][0]))
    first, kind = merged.state_dict(), _model_kind(merged)
    acc = {n: t.double() * weights[0] for n, t in first.items() if t.is_floating_point()}
    for j, ((path, _), w) in enumerate(zip(entries, weights, strict=True)):
        if j == 0:
            continue
        model = _load(spec, j, Path(path))
        state, where = model.state_dict(), _label(j, Path(path))
        _check_same(first, state, _model_kind(model), kind, where)
        for name, t in state.items():
            if name in acc:
                acc[name] += t.double() * w
            elif not torch.equal(t, first[name]):
                raise ValueError(f"{where}: its {name} (not floating point) differs")
        del model, state
    averaged = {n: acc[n].to(t.dtype) if n in acc else t for n, t in first.items()}
    merged.load_state_dict(averaged)
    return merged


def _tokenizer_file(path: Path) -> Path | None:
    """The tokenizer.json of an entry: in the directory, or beside a checkpoint's model/."""
    path = Path(path)
    for candidate in (path / TOKENIZER, path.parent / TOKENIZER if path.name == "model" else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def tokenizer_path(entries: list[tuple[Path, float]]) -> Path | None:
    """The merged checkpoints' tokenizer.json (they must share one), or None when none of
    them has one (mlp checkpoints, HF model folders without one). A ValueError names the
    entry whose tokenizer differs from the first one's, or is missing while another has one."""
    found = [_tokenizer_file(Path(p)) for p, _ in entries]
    if all(f is None for f in found):
        return None
    first = next(j for j, f in enumerate(found) if f is not None)
    text = found[first].read_bytes()
    for j, f in enumerate(found):
        where = _label(j, Path(entries[j][0]))
        if f is None:
            raise ValueError(
                f"{where}: no {TOKENIZER}, but init_merge.{first} has one: merged models must "
                "share a tokenizer"
            )
        if f.read_bytes() != text:
            raise ValueError(
                f"{where}: its {TOKENIZER} differs from init_merge.{first}'s: merged models "
                "must share a tokenizer (fork them from one run)"
            )
    return found[first]
