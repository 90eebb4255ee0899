"""The client's offline spool: a run written to a local directory, uploaded later by
``python -m trainers sync DIR``.

A spool directory holds one run:

* ``run.json``: what ``init()`` was given (name, team, config, plan, tags), the server URL,
  and ``run_id`` once the run exists on a server;
* ``events.jsonl``: one JSON object per line, in the order they happened:
  ``{"stage": i, "name": ..., "start": step}`` (a stage mark), ``{"stage": i, "points":
  [[key, step, value, time], ...]}`` and ``{"finish": "succeeded" | "failed"}``;
* ``sync.json``: written by ``sync``: the run it created and how many events are stored.

``sync`` is idempotent: it resumes after the last event it recorded as stored, and anything
sent twice (a partial sync, a crash between a send and its record) is stored once by the
server, which keeps one value per (run, key, step).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainers.events import Point

FORMAT = 1
RUN_FILE, EVENTS_FILE, SYNC_FILE = "run.json", "events.jsonl", "sync.json"
SPOOL_ENV = "STAGEWISE_SPOOL_DIR"


class SpoolError(RuntimeError):
    """Not a spool directory, or an unreadable one; ``str`` is one line."""


def default_spool_root() -> Path:
    return Path(os.environ.get(SPOOL_ENV) or Path.cwd() / "stagewise-spool")


def write_json(path: Path, data: dict) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Spool:
    """Appends a run's events to its directory (thread-safe; each line flushed at once)."""

    def __init__(self, path: Path | str, meta: dict[str, Any]):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        existing = read_json(self.path / RUN_FILE)
        if existing is None:
            write_json(self.path / RUN_FILE, {"format": FORMAT, "created": time.time(), **meta})
        self._f = (self.path / EVENTS_FILE).open("a", encoding="utf-8")

    def set_run(self, url: str, run_id: int) -> None:
        """Record the server run these events belong to (sync then continues it)."""
        meta = read_json(self.path / RUN_FILE) or {}
        write_json(self.path / RUN_FILE, {**meta, "url": url, "run_id": run_id})

    def _append(self, event: dict) -> None:
        line = json.dumps(event, allow_nan=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def stage(self, index: int, name: str, start: int) -> None:
        self._append({"stage": index, "name": name, "start": start})

    def points(self, points: list[Point]) -> None:
        """Append points, one event per run of the same stage."""
        start = 0
        for i in range(1, len(points) + 1):
            if i == len(points) or points[i].stage != points[start].stage:
                rows = [[p.key, p.step, p.value, p.time] for p in points[start:i]]
                self._append({"stage": points[start].stage, "points": rows})
                start = i

    def finish(self, state: str) -> None:
        self._append({"finish": state})

    def close(self) -> None:
        with self._lock:
            self._f.close()


def read_events(path: Path) -> Iterator[dict]:
    """The spool's events in order; a last line cut short by a killed writer is skipped."""
    try:
        f = (path / EVENTS_FILE).open(encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def read_spool(path: Path | str) -> tuple[dict, list[dict]]:
    """(run.json, events) of a spool directory, or SpoolError."""
    path = Path(path)
    meta = read_json(path / RUN_FILE)
    if meta is None:
        raise SpoolError(f"{path} is not a Stagewise spool directory (no readable {RUN_FILE})")
    if meta.get("format") != FORMAT:
        raise SpoolError(f"{path / RUN_FILE}: unknown spool format {meta.get('format')!r}")
    return meta, list(read_events(path))
