"""A small byte-level BPE tokenizer trained locally (no downloads) and saved with the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
MAX_TRAIN_CHARS = 2_000_000  # enough for a 512-1024 vocab; keeps training ~1 s


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Deterministic for a given text list and vocab size (tested)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    budget, picked = MAX_TRAIN_CHARS, []
    for t in texts:
        if budget <= 0:
            break
        picked.append(t[:budget])
        budget -= len(t)
    tok.train_from_iterator(picked, trainer)
    return tok


def eos_id(tok: Tokenizer) -> int:
    i = tok.token_to_id(EOS)
    assert i is not None, "tokenizer has no end-of-text token"
    return i


def encode(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(texts)]


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    tok.save(str(path))


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))
