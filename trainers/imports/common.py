"""What every importer shares and needs no third-party package for: the error the user sees
(``BadInput``, one line), stage marks (``--stage STEP:NAME``), column maps (``--map``), and
the server's limits, checked here so that a bad input stops before any run is created."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_STEP = 2**53 - 1  # the server's limit (runs.api.serializers.MAX_STEP): exact in float64
MAX_KEY_LENGTH = 200  # runs.models.metrics.MAX_KEY_LENGTH
MAX_STAGE_NAME = 100  # a stage declaration's name
MAX_RUN_NAME = 200  # Run.name
ROLES = ("run", "key", "step", "value", "time")  # the columns of a long table


class BadInput(ValueError):
    """Input that cannot be imported; its message is one line for the user."""


@dataclass(frozen=True)
class Mark:
    """``--stage STEP:NAME``: stage NAME starts at STEP (STEP's own points belong to the stage
    before; a mark at step 0 names the first stage)."""

    step: int
    name: str


def parse_marks(texts: list[str]) -> list[Mark]:
    """``["0:prose-pt", "600:code-cpt"]`` → marks sorted by step, one per step."""
    marks = []
    for text in texts:
        step, sep, name = text.partition(":")
        name = name.strip()
        if not sep or not name or not re.fullmatch(r"\s*[0-9]+\s*", step):
            raise BadInput(f"--stage {text!r}: expected STEP:NAME, e.g. --stage 600:code-cpt")
        if int(step) > MAX_STEP - 2:
            raise BadInput(f"--stage {text!r}: the step must be below {MAX_STEP - 1}")
        if len(name) > MAX_STAGE_NAME:
            raise BadInput(
                f"--stage {text!r}: a stage name has at most {MAX_STAGE_NAME} characters"
            )
        marks.append(Mark(int(step), name))
    marks.sort(key=lambda m: m.step)
    for a, b in zip(marks, marks[1:], strict=False):
        if a.step == b.step:
            raise BadInput(f"--stage: two stages start at step {a.step} ({a.name!r}, {b.name!r})")
    return marks


def parse_map(texts: list[str]) -> dict[str, str]:
    """``["run=RunCol,key=metric", "step=_step"]`` → {"run": "RunCol", ...}."""
    mapping: dict[str, str] = {}
    for text in texts:
        for item in filter(None, (s.strip() for s in text.split(","))):
            role, sep, column = item.partition("=")
            role = role.strip()
            if not sep or not column.strip():
                raise BadInput(f"--map {item!r}: expected ROLE=COLUMN, e.g. --map step=_step")
            if role not in ROLES:
                raise BadInput(f"--map {item!r}: the roles are {', '.join(ROLES)}")
            mapping[role] = column.strip()
    return mapping


def check_key(key: str, where: str) -> None:
    """A series key the server stores: non-empty, at most 200 characters, no NUL."""
    if not key:
        raise BadInput(f"{where}: an empty key")
    if len(key) > MAX_KEY_LENGTH:
        raise BadInput(f"{where}: key {key[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
    if "\x00" in key:
        raise BadInput(f"{where}: key {key!r} holds a NUL character")


def one_line(error: BaseException) -> str:
    """The first line of a library's error message (pyarrow's may span several)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
