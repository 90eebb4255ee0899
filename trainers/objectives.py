"""Models and losses: causal LM / SFT with transformers GPT-2 or Llama, and an MLP
classifier for the digits tasks.

Batches are tuples of CPU tensors:
  LM objectives (causal_lm, sft):  (input_ids (B, T) int64, labels (B, T) int64, -100 = no loss)
  classification:                  (x (B, 64) float32, y (B,) int64)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.plan import ModelSpec

N_CLASSES = 10
N_PIXELS = 64
# Fixed so a model built fresh and one loaded from a checkpoint run the same kernels
# (bit-identical resume).
ATTN = "sdpa"


class MLP(nn.Module):
    def __init__(self, hidden: list[int], n_in: int = N_PIXELS, n_out: int = N_CLASSES):
        super().__init__()
        dims = [n_in, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], n_out))  # one shared head (class-incremental)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, n_out) logits


def _quiet_transformers() -> None:
    # Progress bars for loading/saving a 2-layer model are noise on stderr.
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def build_model(spec: ModelSpec, vocab_size: int, eos: int) -> nn.Module:
    """A freshly initialised model (weights from torch's RNG: seed before calling)."""
    if spec.arch == "mlp":
        return MLP(list(spec.hidden))
    _quiet_transformers()
    if spec.path is not None:
        return load_pretrained(Path(spec.path), vocab_size)
    d = spec.dims()
    if spec.arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        p = spec.dropout
        cfg = GPT2Config(
            vocab_size=vocab_size,
            n_positions=spec.max_positions,
            n_embd=d["n_embd"],
            n_layer=d["n_layer"],
            n_head=d["n_head"],
            resid_pdrop=p,
            embd_pdrop=p,
            attn_pdrop=p,
            bos_token_id=eos,
            eos_token_id=eos,
        )
        cfg._attn_implementation = ATTN
        return GPT2LMHeadModel(cfg)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d["n_embd"],
        intermediate_size=4 * d["n_embd"],
        num_hidden_layers=d["n_layer"],
        num_attention_heads=d["n_head"],
        num_key_value_heads=d["n_head"],
        max_position_embeddings=spec.max_positions,
        attention_dropout=spec.dropout,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    cfg._attn_implementation = ATTN
    return LlamaForCausalLM(cfg)


def load_pretrained(path: Path, vocab_size: int | None = None) -> nn.Module:
    """A local HF causal LM directory (e.g. a checkpoint's model/ folder)."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=ATTN)
    if vocab_size is not None and model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


def save_model(model: nn.Module, path: Path) -> None:
    if isinstance(model, MLP):
        path.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path / "mlp.pt")
    else:
        _quiet_transformers()
        model.save_pretrained(str(path))


def load_saved_model(spec: ModelSpec, path: Path) -> nn.Module:
    """The model saved by save_model at path (a checkpoint's model/ folder)."""
    if spec.arch == "mlp":
        model = MLP(list(spec.hidden))
        model.load_state_dict(torch.load(path / "mlp.pt", weights_only=True, map_location="cpu"))
        return model
    if not (path / "config.json").is_file():
        raise ValueError(f"no language model saved in {path}")
    return load_pretrained(path)


def lm_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"):
    """Next-token cross entropy; labels == -100 positions are ignored."""
    logits = model(input_ids=ids).logits  # (B, T, V)
    v = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, v),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
        reduction=reduction,
    )


def class_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"):
    return F.cross_entropy(model(x), y, reduction=reduction)


def train_loss(objective: str, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if objective == "classification":
        return class_loss(model, *batch)
    return lm_loss(model, *batch)


@torch.no_grad()
def evaluate_lm(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Token-weighted mean loss over the batches, and its perplexity."""
    total, count = 0.0, 0
    for ids, labels in batches:
        total += float(lm_loss(model, ids, labels, reduction="sum").double())
        count += int((labels[:, 1:] != -100).sum())
    loss = float(total) / max(count, 1)
    return {"loss": loss, "ppl": float(np.exp(min(loss, 50.0)))}


@torch.no_grad()
def evaluate_classification(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    total, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        count += len(y)
    return {"loss": total / max(count, 1), "acc": correct / max(count, 1)}


@torch.no_grad()
def row_losses(
    model: nn.Module, ids: np.ndarray, labels: np.ndarray, batch: int = 64
) -> np.ndarray:
    """Mean loss per row under a reference model: the curriculum's difficulty score."""
    out = []
    for i in range(0, len(ids), batch):
        x, y = torch.from_numpy(ids[i : i + batch]), torch.from_numpy(labels[i : i + batch])
        logits = model(input_ids=x).logits[:, :-1]
        tok = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            y[:, 1:].reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view(len(x), -1)
        mask = (y[:, 1:] != -100).float()
        out.append((tok * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out).numpy() if out else np.zeros(0)
