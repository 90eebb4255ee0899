"""Growing a GPT-2 or Llama model between stages (a stage's ``grow``) and carrying the
optimizer state over to the grown model.

``stack`` (G_stack): the layer stack repeated ``factor`` times, layers 0..n-1, 0..n-1, ...; the
first copy is the original stack, the others are new. ``identity`` (LLaMA Pro): after every
block ``factor - 1`` copies of it whose output projections (attention and MLP, weights and
biases) are zero: each copy adds nothing to the residual stream, so the grown model computes
exactly what the original did. Original blocks keep their AdamW moments, new ones start fresh.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn

from trainers.plan import GrowSpec


@dataclass(frozen=True)
class _Layout:
    """Where an architecture keeps its blocks, and which of a block's linears write to the
    residual stream."""

    blocks: str  # the ModuleList of blocks, as a dotted path from the model
    out_proj: tuple[str, ...]  # the block's output projections, relative to the block


LAYOUTS = {
    "gpt2": _Layout("transformer.h", ("attn.c_proj", "mlp.c_proj")),
    "llama": _Layout("model.layers", ("self_attn.o_proj", "mlp.down_proj")),
}
_BLOCK_NAME = re.compile(
    r"^(?P<prefix>" + "|".join(re.escape(lo.blocks) for lo in LAYOUTS.values()) + r")\."
    r"(?P<index>\d+)\.(?P<rest>.+)$"
)


@dataclass
class Grown:
    model: nn.Module
    # new parameter name -> the old parameter whose optimizer state it keeps (None: new,
    # fresh AdamW moments)
    source_of: dict[str, str | None]


def _layout(model: nn.Module) -> _Layout:
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in LAYOUTS:
        raise ValueError(f"growth applies to gpt2/llama models, not {kind or type(model).__name__}")
    return LAYOUTS[kind]


def block_plan(n_layers: int, spec: GrowSpec) -> list[tuple[int, bool]]:
    """For each block of the grown model: (the old block it copies, is it that block itself?)
    ``identity`` copies that are not the block itself get zero output projections."""
    f = spec.factor
    if spec.method == "stack":
        return [(j % n_layers, j < n_layers) for j in range(f * n_layers)]
    return [(i, c == 0) for i in range(n_layers) for c in range(f)]


def _zero_out_proj(block: nn.Module, layout: _Layout) -> None:
    """Make a block add nothing to the residual stream: its output projections are zero."""
    with torch.no_grad():
        for name in layout.out_proj:
            proj = block.get_submodule(name)
            proj.weight.zero_()
            if getattr(proj, "bias", None) is not None:
                proj.bias.zero_()


def _renumber(blocks: nn.ModuleList) -> None:
    """Each attention's layer_idx is its block's new position (KV caches index by it)."""
    for j, block in enumerate(blocks):
        for mod in block.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = j


def grow_model(model: nn.Module, spec: GrowSpec) -> Grown:
    """A grown copy of ``model`` (the input is left as it is); its config holds the new layer
    count, so save_pretrained/from_pretrained round-trip it. Draws no random numbers."""
    layout = _layout(model)
    grown = copy.deepcopy(model)  # one deepcopy: tied embeddings stay tied
    parent_path, _, attr = layout.blocks.rpartition(".")
    parent = grown.get_submodule(parent_path)
    old_blocks: nn.ModuleList = getattr(parent, attr)
    plan = block_plan(len(old_blocks), spec)
    new_blocks = []
    for src, original in plan:
        block = old_blocks[src] if original else copy.deepcopy(old_blocks[src])
        if not original and spec.method == "identity":
            _zero_out_proj(block, layout)
        new_blocks.append(block)
    setattr(parent, attr, nn.ModuleList(new_blocks))
    _renumber(getattr(parent, attr))
    grown.config.num_hidden_layers = len(new_blocks)
    return Grown(grown, _sources(grown, plan))


def _sources(grown: nn.Module, plan: list[tuple[int, bool]]) -> dict[str, str | None]:
    """New parameter name -> the old name it is (original blocks and everything outside the
    blocks) or None (a new block's parameter)."""
    out: dict[str, str | None] = {}
    for name, _ in grown.named_parameters():
        m = _BLOCK_NAME.match(name)
        if m is None:
            out[name] = name
            continue
        src, original = plan[int(m["index"])]
        out[name] = f"{m['prefix']}.{src}.{m['rest']}" if original else None
    return out


def _template(name: str) -> str:
    """The parameter of block 0 a block parameter corresponds to (blocks share one shape)."""
    m = _BLOCK_NAME.match(name)
    return name if m is None else f"{m['prefix']}.0.{m['rest']}"


def remap_optimizer_state(
    state: dict, old_names: list[str], new_names: list[str], source_of: dict[str, str | None]
) -> dict:
    """An AdamW state_dict for the grown model (params in ``new_names`` order) from the old
    one (``old_names`` order). A parameter with a source keeps that source's moments and step
    count; a new one has no entry (AdamW starts it fresh). A new parameter joins the param
    group of its block-0 counterpart, with that group's settings."""
    old_groups = state["param_groups"]
    group_of: dict[str, int] = {}
    for g, group in enumerate(old_groups):
        for pid in group["params"]:
            group_of[old_names[pid]] = g
    new_group = [group_of[_template(n)] for n in new_names]
    if new_group != sorted(new_group):
        raise ValueError("new_names must list the parameters group by group (optimizer order)")
    old_id = {n: k for k, n in enumerate(old_names)}
    moments = {}
    for k, name in enumerate(new_names):
        src = source_of.get(name)
        if src is not None and old_id[src] in state["state"]:
            moments[k] = dict(state["state"][old_id[src]])
    groups = [
        {**group, "params": [k for k, g in enumerate(new_group) if g == i]}
        for i, group in enumerate(old_groups)
    ]
    return {"state": moments, "param_groups": groups}
