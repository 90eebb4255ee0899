"""Growing a model between stages. To be written."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from trainers.plan import GrowSpec


@dataclass
class Grown:
    model: nn.Module
    # new parameter name -> the old parameter whose optimizer state it keeps (None: new,
    # fresh AdamW moments)
    source_of: dict[str, str | None]


def grow_model(model: nn.Module, spec: GrowSpec) -> Grown:
    raise NotImplementedError("grow")


def remap_optimizer_state(
    state: dict, old_names: list[str], new_names: list[str], source_of: dict[str, str | None]
) -> dict:
    """An AdamW state_dict for the grown model (params in ``new_names`` order) from the old
    one (``old_names`` order)."""
    raise NotImplementedError("grow")
