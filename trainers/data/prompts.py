"""An rl stage's prompts with their answers (and an exact_match eval set's), as row-aligned
arrays: what a policy samples completions from and what its reward compares them to.

Prompts are left-padded with EOS to ``seq_len`` so that every row ends at the same column
and generation appends to all rows at once; ``prompt_len`` tells the real tokens from the
padding (the sampler masks the padding and numbers positions from the prompt's first token,
so a row computes what its unpadded prompt would). Answers are token ids padded with -1;
decoding them gives the answer string back (byte-level BPE is lossless).
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from trainers.data.tokenizer import encode, eos_id

NO_TOKEN = -1  # padding of answer_ids


def prompt_rows(
    tok: Tokenizer, pairs: list[tuple[str, str]], seq_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt_ids (N, seq_len) left-padded with EOS, prompt_len (N,), answer_ids (N, seq_len)
    right-padded with -1), int64. Pairs whose prompt or answer is longer than seq_len tokens
    (or whose prompt is empty) are skipped."""
    prompts = encode(tok, [p for p, _ in pairs])
    answers = encode(tok, [a for _, a in pairs])
    eos = eos_id(tok)
    keep = [
        k
        for k, (p, a) in enumerate(zip(prompts, answers, strict=True))
        if 0 < len(p) <= seq_len and len(a) <= seq_len
    ]
    ids = np.full((len(keep), seq_len), eos, dtype=np.int64)
    lens = np.zeros(len(keep), dtype=np.int64)
    ans = np.full((len(keep), seq_len), NO_TOKEN, dtype=np.int64)
    for row, k in enumerate(keep):
        p, a = prompts[k], answers[k]
        ids[row, seq_len - len(p) :] = p
        lens[row] = len(p)
        ans[row, : len(a)] = a
    return ids, lens, ans


def answer_texts(tok: Tokenizer, answer_ids: np.ndarray) -> list[str]:
    """The answer strings of rows of answer_ids (padding dropped)."""
    return [tok.decode([int(t) for t in row if t != NO_TOKEN]) for row in answer_ids]
