"""An rl stage's prompts with their answers, as row-aligned arrays. To be written."""

from __future__ import annotations


def prompt_rows(tok, pairs, seq_len):
    raise NotImplementedError("prompt rows")
