"""Training methods: how a stage's objective turns a batch into a loss, and how an eval
set's kind measures a model. The engine (trainers/engine.py) owns the loop, the optimizer,
checkpoints and metrics; a method only computes.

A method is built once per ``run_stage`` call with a ``MethodContext`` and gives
``loss(batch) -> (loss, extras)``: ``extras`` are scalar tensors logged as ``train/<name>``
at the same step (kept as tensors until the engine drains them: no device sync per step).
Batches are the rows of the stage's mixture (``trainers/data/build.py`` picks their format
from the objective).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from tokenizers import Tokenizer
from torch import nn

from trainers import objectives
from trainers.plan import EvalSetSpec, Plan, StageSpec

Batch = tuple[torch.Tensor, ...]
Extras = dict[str, torch.Tensor]


@dataclass
class MethodContext:
    plan: Plan
    stage: StageSpec
    model: nn.Module
    tok: Tokenizer | None
    device: torch.device
    # The stage's starting weights, frozen (built on first call; the same after a resume)
    reference: Callable[[], nn.Module]


class Method(Protocol):
    def loss(self, batch: Batch) -> tuple[torch.Tensor, Extras]: ...


class _Supervised:
    """causal_lm, sft (masked prompts: the rows carry the labels) and classification."""

    def __init__(self, ctx: MethodContext):
        self.model = ctx.model
        self.fn = objectives.class_loss if ctx.stage.objective == "classification" else None

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Extras]:
        if self.fn is not None:
            return self.fn(self.model, *batch), {}
        return objectives.lm_loss(self.model, *batch), {}


def make_method(ctx: MethodContext) -> Method:
    objective = ctx.stage.objective
    if objective == "dpo":
        from trainers.methods.dpo import DPO

        return DPO(ctx)
    if objective == "rl":
        from trainers.methods.grpo import GRPO

        return GRPO(ctx)
    return _Supervised(ctx)


def evaluate(
    model: nn.Module, batches: list[Batch], es: EvalSetSpec, tok: Tokenizer | None
) -> dict[str, float]:
    """The eval set's metrics (``eval/<set>/<metric>``) for the model, in eval mode."""
    if es.kind == "lm":
        return objectives.evaluate_lm(model, batches)
    if es.kind == "classification":
        return objectives.evaluate_classification(model, batches)
    if es.kind == "preference":
        from trainers.methods.dpo import evaluate_preference

        return evaluate_preference(model, batches)
    from trainers.methods.grpo import evaluate_exact_match

    return evaluate_exact_match(model, batches, es, tok)
