"""Direct Preference Optimization (Rafailov et al., 2023) and the preference eval.

Batches are preference rows (trainers/data/preferences.py): (chosen_ids, chosen_labels,
rejected_ids, rejected_labels), prompt tokens labelled -100. A response's log-probability is
the sum over its labelled tokens (response + EOS) given the prompt.

loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged over the batch, where
pi / ref are the summed log-probs under the model / the stage's frozen starting weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.methods import Batch, Extras, MethodContext
from trainers.objectives import lm_loss
from trainers.plan import DPOSpec


def response_logps(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) summed log-probability of each row's labelled tokens."""
    nll = lm_loss(model, ids, labels, reduction="none")  # (B * (T - 1),), 0 where -100
    return -nll.view(ids.shape[0], -1).sum(1)


def _pair_logps(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probs, from one forward pass over both sides."""
    c_ids, c_lab, r_ids, r_lab = batch
    logps = response_logps(model, torch.cat([c_ids, r_ids]), torch.cat([c_lab, r_lab]))
    return logps[: len(c_ids)], logps[len(c_ids) :]


class DPO:
    """A dpo stage's loss; extras: reward_margin (mean beta-scaled implicit reward of chosen
    minus rejected), chosen_logp / rejected_logp (mean summed log-probs under the model) and
    pref_acc (fraction of pairs whose chosen reward is the higher)."""

    def __init__(self, ctx: MethodContext):
        self.model = ctx.model
        self.reference = ctx.reference()
        self.beta = (ctx.stage.dpo or DPOSpec()).beta

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Extras]:
        pi_c, pi_r = _pair_logps(self.model, batch)
        with torch.no_grad():
            ref_c, ref_r = _pair_logps(self.reference, batch)
        reward_c = self.beta * (pi_c - ref_c)
        reward_r = self.beta * (pi_r - ref_r)
        margin = reward_c - reward_r
        loss = -F.logsigmoid(margin).mean()
        extras = {
            "reward_margin": margin.detach().mean(),
            "chosen_logp": pi_c.detach().mean(),
            "rejected_logp": pi_r.detach().mean(),
            "pref_acc": (margin.detach() > 0).float().mean(),
        }
        return loss, extras


@torch.no_grad()
def evaluate_preference(model: nn.Module, batches: list[Batch]) -> dict[str, float]:
    """Reference-free: acc = fraction of pairs where the model gives the chosen response the
    higher summed log-prob; margin = mean (chosen - rejected) summed log-prob, in nats."""
    wins, diff, count = 0.0, 0.0, 0
    for batch in batches:
        pi_c, pi_r = _pair_logps(model, batch)
        wins += (pi_c > pi_r).sum().item()
        diff += (pi_c - pi_r).sum().item()
        count += len(pi_c)
    return {"acc": wins / count, "margin": diff / count}
