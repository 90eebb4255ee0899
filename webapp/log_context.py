"""Which run and stage a log line is about: ``log_context(run_id=..., stage_index=...)``
sets them for the code it wraps (a worker executing a stage), and ``ContextFilter`` adds
them to every record logged meanwhile in that thread or task (JSON logs show them as
fields; plain text ignores them)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_context: contextvars.ContextVar[tuple[tuple[str, int], ...]] = contextvars.ContextVar(
    "stagewise_log_context", default=()
)


@contextlib.contextmanager
def log_context(**ids: int) -> Iterator[None]:
    token = _context.set(tuple({**dict(_context.get()), **ids}.items()))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            setattr(record, key, value)
        return True
