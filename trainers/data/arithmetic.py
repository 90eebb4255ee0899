"""builtin:arithmetic: generated addition problems, prompt ``"37+58="`` and answer ``"95"``.

``digits`` on the source picks the difficulty: the number of digits of both operands (1: 0-9,
2: 10-99, ...). A digit count with at most MAX_PER_DIGITS problems gives all of them (1 digit:
100, 2 digits: 8,100); a larger one a fixed sample of MAX_PER_DIGITS pairs seeded by the digit
count. The key of a problem is its prompt, so the held-out split (sources.py ``_split``: a
hash of the key) is the same in every plan, stage and objective. A causal_lm stage reads each
problem as the text ``"37+58=95"``, an sft stage as a prompt/response pair, an rl stage and an
exact_match eval set as a prompt with its answer (trainers/data/prompts.py).
"""

from __future__ import annotations

import functools

import numpy as np

MAX_PER_DIGITS = 10_000

Problem = tuple[str, tuple[str, str]]  # (key, (prompt, answer))


def _operand_pairs(d: int) -> list[tuple[int, int]]:
    """Every (a, b) with d-digit operands, or a seeded sample of MAX_PER_DIGITS of them."""
    lo, hi = (0 if d == 1 else 10 ** (d - 1)), 10**d  # operands in [lo, hi)
    n = hi - lo
    if n * n <= MAX_PER_DIGITS:
        return [(a, b) for a in range(lo, hi) for b in range(lo, hi)]
    flat = np.random.default_rng(d).choice(n * n, size=MAX_PER_DIGITS, replace=False)
    return [(lo + int(k) // n, lo + int(k) % n) for k in np.sort(flat)]


@functools.cache
def _problems(d: int) -> tuple[Problem, ...]:
    out = []
    for a, b in _operand_pairs(d):
        prompt = f"{a}+{b}="
        out.append((prompt, (prompt, str(a + b))))
    return tuple(out)


def arithmetic_examples(digits: list[int]) -> list[Problem]:
    """(stable key, (prompt, answer)) for every problem of these digit counts, in order."""
    return [p for d in dict.fromkeys(digits) for p in _problems(d)]
