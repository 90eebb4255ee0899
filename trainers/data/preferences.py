"""Preference pairs: builtin:docstring_prefs and the rows a dpo stage / preference eval uses.

builtin:docstring_prefs turns each builtin:docstrings pair (signature prompt, first docstring
sentence) into (prompt, chosen, rejected): chosen is the function's own sentence; rejected is
the sentence of a function of another module, of about the same length, picked by a hash of
the function's name among the functions of the same split (train or held-out). Only the
prompt tells the two sides apart, not their length (which summed log-probs would favour).
The key is the function's name, so the held-out split is the one of builtin:docstrings.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
from tokenizers import Tokenizer

from trainers.data.packing import sft_rows
from trainers.data.sources import _docstrings, _heldout
from trainers.data.tokenizer import encode, eos_id

Triple = tuple[str, str, str]  # (prompt, chosen, rejected)


NEIGHBOURS = 12  # rejected: among this many sentences either side in length order


def _module(key: str) -> str:
    return key.split(".")[0]


def _rejected(pool: list[tuple[str, str]], k: int) -> str:
    """The rejected sentence for pool[k] (pool: (key, sentence) sorted by sentence length):
    one of another module's sentences among its NEIGHBOURS either side, picked by a hash of
    the key. Similar length, so a summed log-prob cannot prefer a side for its length."""
    key, own = pool[k]
    near = pool[max(0, k - NEIGHBOURS) : k + NEIGHBOURS + 1]
    cands = [s for kk, s in near if _module(kk) != _module(key) and s != own]
    if not cands:
        cands = [s for _, s in pool if s != own]
    if not cands:
        raise ValueError("builtin:docstring_prefs needs two different sentences in a split")
    return cands[zlib.crc32(f"rejected|{key}".encode()) % len(cands)]


@functools.cache
def docstring_preferences() -> list[tuple[str, Triple]]:
    """(function name, (prompt, its own first sentence, another function's sentence)), in
    the order of builtin:docstrings."""
    pairs = _docstrings()
    rejected: dict[int, str] = {}  # index in pairs -> its rejected sentence
    for heldout in (False, True):
        idx = [i for i, (k, _) in enumerate(pairs) if _heldout(k) == heldout]
        idx.sort(key=lambda i: (len(pairs[i][1][1]), pairs[i][0], i))
        pool = [(pairs[i][0], pairs[i][1][1]) for i in idx]
        for k, i in enumerate(idx):
            rejected[i] = _rejected(pool, k)
    return [(key, (p, s, rejected[i])) for i, (key, (p, s)) in enumerate(pairs)]


def preference_rows(
    tok: Tokenizer, triples: list[Triple], seq_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row-aligned (chosen_ids, chosen_labels, rejected_ids, rejected_labels): each side is
    an SFT row (trainers/data/packing.py sft_rows: prompt masked -100, response + EOS, padded).
    Row k of both sides is triple k; triples whose prompt does not fit are skipped on both."""
    prompts = encode(tok, [p for p, _, _ in triples])
    eos = eos_id(tok)
    chosen = sft_rows(prompts, encode(tok, [c for _, c, _ in triples]), seq_len, eos)
    rejected = sft_rows(prompts, encode(tok, [r for _, _, r in triples]), seq_len, eos)
    return (*chosen, *rejected)
