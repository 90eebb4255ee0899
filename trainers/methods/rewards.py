"""Verifiable rewards of rl stages, by name (``rl.reward``; the names are
trainers.plan.REWARDS).

A reward function takes a completion and the reference answer and returns a float in [0, 1].
The completion is the decoded text of the sampled tokens, with an end-of-text token written
as ``EOS`` ("<|endoftext|>") and nothing after it (sampling stops a row there).

* ``exact_match``: the completion's final answer (its text before the first end-of-text or
  newline, stripped of spaces) equals the answer (stripped): 1, else 0.
* ``format``: the completion is a well-formed answer: one or more digits, then end-of-text or
  a newline: 1, else 0 (whatever the digits are).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from trainers.data.tokenizer import EOS

Reward = Callable[[str, str], float]
_WELL_FORMED = re.compile(r"[0-9]+(?:\n|" + re.escape(EOS) + ")")


def final_answer(completion: str) -> str:
    """The text before the first end-of-text or newline, stripped."""
    return completion.split(EOS, 1)[0].split("\n", 1)[0].strip()


def exact_match(completion: str, answer: str) -> float:
    return float(final_answer(completion) == answer.strip())


def well_formed(completion: str, answer: str) -> float:
    return float(_WELL_FORMED.match(completion) is not None)


REWARD_FNS: dict[str, Reward] = {"exact_match": exact_match, "format": well_formed}


def reward_fn(name: str) -> Reward:
    """The reward called ``name``; ValueError naming the known ones otherwise."""
    if name not in REWARD_FNS:
        raise ValueError(f"unknown reward {name!r}; known: {', '.join(REWARD_FNS)}")
    return REWARD_FNS[name]
