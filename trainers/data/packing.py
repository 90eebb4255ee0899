"""Turn documents and prompt/response pairs into fixed-length (input_ids, labels) rows.

Rows always have seq_len tokens so LM chunks and SFT rows can share one batch (replay of
pre-training text inside an SFT stage). Labels follow the HF convention: same positions as
the inputs (the loss shifts them) and -100 where no loss is taken.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100


def pack(docs: list[np.ndarray], seq_len: int, eos: int) -> np.ndarray:
    """Concatenate docs with an EOS after each and cut into (n, seq_len) chunks.

    The ragged tail is dropped. Returns int64 ids; labels are the ids themselves.
    """
    if not docs:
        return np.zeros((0, seq_len), dtype=np.int64)
    parts = []
    for d in docs:
        parts += [d, np.array([eos], dtype=np.int64)]
    stream = np.concatenate(parts)
    n = len(stream) // seq_len
    return stream[: n * seq_len].reshape(n, seq_len)


def sft_rows(
    prompts: list[np.ndarray], responses: list[np.ndarray], seq_len: int, eos: int
) -> tuple[np.ndarray, np.ndarray]:
    """prompt + response + EOS, right-padded with EOS; loss only on response and its EOS.

    Pairs whose prompt leaves fewer than 4 tokens for the response are skipped; long
    responses are truncated.
    """
    ids_out, lab_out = [], []
    for p, r in zip(prompts, responses, strict=True):
        if len(p) > seq_len - 4:
            continue
        seq = np.concatenate([p, r, [eos]])[:seq_len]
        lab = seq.copy()
        lab[: len(p)] = IGNORE
        pad = seq_len - len(seq)
        ids_out.append(np.pad(seq, (0, pad), constant_values=eos))
        lab_out.append(np.pad(lab, (0, pad), constant_values=IGNORE))
    if not ids_out:
        z = np.zeros((0, seq_len), dtype=np.int64)
        return z, z.copy()
    return np.stack(ids_out).astype(np.int64), np.stack(lab_out).astype(np.int64)
