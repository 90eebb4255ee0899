"""builtin:arithmetic: generated addition problems. To be written."""

from __future__ import annotations


def arithmetic_examples(digits: list[int]) -> list[tuple[str, tuple[str, str]]]:
    """(stable key, (prompt, answer)) for every problem of these digit counts."""
    raise NotImplementedError("builtin:arithmetic")
