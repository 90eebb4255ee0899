"""Direct Preference Optimization (Rafailov et al., 2023). To be written."""

from __future__ import annotations


class DPO:
    def __init__(self, ctx):
        raise NotImplementedError("dpo")

    def loss(self, batch):
        raise NotImplementedError("dpo")


def evaluate_preference(model, batches) -> dict[str, float]:
    raise NotImplementedError("preference eval")
