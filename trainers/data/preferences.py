"""Preference pairs: builtin:docstring_prefs and preference rows. To be written."""

from __future__ import annotations


def docstring_preferences() -> list[tuple[str, tuple[str, str, str]]]:
    """(stable key, (prompt, chosen, rejected))."""
    raise NotImplementedError("builtin:docstring_prefs")


def preference_rows(tok, triples, seq_len):
    """Row-aligned arrays for a dpo stage / preference eval."""
    raise NotImplementedError("preference rows")
