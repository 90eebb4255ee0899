"""Checks of untrusted input shared by the API, the selectors and the pages: query values
(integers in range, text within its column length and without NUL, choices) and the checks of
a whole JSON body (nesting depth, NUL in any string or key).

A failed check raises django's ``ValidationError({field: [reason]})``; the API's exception
handler answers it as ``400 {"detail": "invalid input", "errors": {field: [reason]}}``.
Postgres refuses NUL in text and jsonb, and a value longer than its column would otherwise be
cut or fail at the database: both are refused here, before any query."""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import chain
from typing import Any

from django.core.exceptions import ValidationError

NUL = "\x00"
BIGINT_MAX = 2**63 - 1  # ids are BigAutoField; a larger number cannot name a row
NUL_REASON = "must not contain NUL characters (\\u0000)"
_INT = re.compile(r"-?[0-9]{1,30}")  # ASCII digits only; int() also takes "١٢" and " 1_0 "


def invalid(field: str, reason: str) -> ValidationError:
    return ValidationError({field: [reason]})


def int_value(
    raw: object, field: str, *, min_value: int = 0, max_value: int = BIGINT_MAX, what: str = ""
) -> int:
    """``raw`` (a query string value or an int) as an int in [min_value, max_value]."""
    reason = what or f"must be an integer from {min_value} to {max_value}"
    if isinstance(raw, bool):
        raise invalid(field, reason)
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip()
        if not _INT.fullmatch(text):
            raise invalid(field, reason)
        value = int(text)
    if not min_value <= value <= max_value:
        raise invalid(field, reason)
    return value


def id_value(raw: object, field: str) -> int:
    """A primary key: a positive integer that fits the id column."""
    return int_value(raw, field, min_value=1, what="must be an id (a positive integer)")


def text_value(raw: object, field: str, *, max_length: int) -> str:
    """``raw`` as text of at most ``max_length`` characters without NUL: never cut."""
    text = str(raw)
    if NUL in text:
        raise invalid(field, NUL_REASON)
    if len(text) > max_length:
        raise invalid(field, f"must be at most {max_length} characters (it has {len(text)})")
    return text


def choices_value(raw: object, field: str, choices: Iterable[str]) -> list[str]:
    """A comma-separated list (or a list) of values, each one of ``choices``."""
    allowed = list(choices)
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    values = [str(v).strip() for v in items if str(v).strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        shown = repr(bad[0][:50]) if bad else "nothing"
        raise invalid(field, f"{shown} is not one of {', '.join(allowed)}")
    return values


def nul_in_query(query) -> str | None:
    """The first query parameter (a QueryDict) whose name or a value contains NUL."""
    for key, values in query.lists():
        if NUL in key or any(NUL in v for v in values):
            return key
    return None


# ------------------------------------------------------------------ whole JSON bodies


def _children(level: list) -> Iterable[Any]:
    """The values of a level's objects and the items of its lists, lazily (in C)."""
    kinds = set(map(type, level))
    if kinds == {dict}:
        return chain.from_iterable(map(dict.values, level))
    if kinds == {list}:
        return chain.from_iterable(level)
    dicts = [o for o in level if type(o) is dict]
    lists = [o for o in level if type(o) is list]
    return chain(chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(lists))


def nesting_exceeds(obj: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests lists/objects deeper than ``limit`` levels.

    Breadth first, one level at a time, with the per-item work in C (map, chain, set): a
    50,000-point metric batch costs a few milliseconds, far less than a recursive walk. The
    last level (scalars only, the bulk of a batch) is passed over once, without a list."""
    level = [obj] if type(obj) is dict or type(obj) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        if {dict, list}.isdisjoint(map(type, _children(level))):
            return False
        level = [v for v in _children(level) if type(v) is dict or type(v) is list]
    return False


def find_nul(obj: Any, path: str = "") -> str | None:
    """The dotted path (``plan.stages.1.name``) of the first string or object key in a parsed
    JSON value that contains NUL, or None. Recursive: call it after ``nesting_exceeds``."""
    if type(obj) is str:
        return (path or "(body)") if NUL in obj else None
    if type(obj) is dict:
        for key, value in obj.items():
            here = f"{path}.{key}" if path else str(key)
            if NUL in key:
                return here.replace(NUL, "\\u0000")
            found = find_nul(value, here)
            if found is not None:
                return found
    elif type(obj) is list:
        for i, value in enumerate(obj):
            found = find_nul(value, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None
