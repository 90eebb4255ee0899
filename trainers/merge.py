"""Merging checkpoints (weighted parameter averages). To be written."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from trainers.plan import ModelSpec


def merge_models(spec: ModelSpec, entries: list[tuple[Path, float]]) -> nn.Module:
    """The weighted average (weights normalised) of the models of these checkpoint (or
    model) directories."""
    raise NotImplementedError("merge")


def tokenizer_path(entries: list[tuple[Path, float]]) -> Path | None:
    """The merged checkpoints' tokenizer.json (they must share one), or None."""
    raise NotImplementedError("merge")
