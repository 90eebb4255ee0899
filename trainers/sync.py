"""Upload a spool directory (``trainers.spool``) to a Stagewise server: ``python -m trainers
sync DIR [--report-to URL]``.

Idempotent: ``sync.json`` records the run the spool became and how many events are stored;
a second sync sends nothing, and a sync after a partial one resumes where it stopped (what
is sent again is stored once: the server keeps one value per (run, key, step))."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from trainers.events import Point
from trainers.remote import ApiError, create_external_run, get_run, with_retries
from trainers.sender import MAX_BATCH
from trainers.spool import SYNC_FILE, read_json, read_spool, write_json

RETRY_SECONDS = 120.0


@dataclass
class SyncResult:
    run_id: int
    events: int  # events stored by this sync
    points: int  # points sent by this sync
    already: bool  # everything was stored before


def _target(path: Path, meta: dict, url: str, token: str) -> int:
    """The server run for the spool: recorded by the online client or an earlier sync on
    this URL, or created now (and recorded at once)."""
    done = read_json(path / SYNC_FILE) or {}
    if done.get("url") == url and isinstance(done.get("run_id"), int):
        return done["run_id"]
    if meta.get("url", "").rstrip("/") == url and isinstance(meta.get("run_id"), int):
        run_id = meta["run_id"]
    else:
        shown = create_external_run(url, token, meta.get("plan"), name=meta.get("name"),
                                    team=meta.get("team"), tags=meta.get("tags"),
                                    config=meta.get("config"))  # fmt: skip
        run_id = shown["id"]
    write_json(path / SYNC_FILE, {"url": url, "run_id": run_id, "done": 0})
    return run_id


def _points(event: dict) -> list[Point]:
    stage = event["stage"]
    return [Point(k, s, v, t, stage) for k, s, v, t in event["points"]]


def _batches(events: list[dict], first: int):
    """(index after the batch, stage marks, points or None, finish state or None) from
    event ``first`` on: consecutive points events merged up to MAX_BATCH points."""
    i, n = first, len(events)
    while i < n:
        ev = events[i]
        if "points" in ev:
            pts: list[Point] = []
            while i < n and "points" in events[i] and len(pts) < MAX_BATCH:
                pts.extend(_points(events[i]))
                i += 1
            yield i, pts, None
        elif "finish" in ev:
            i += 1
            yield i, None, ev["finish"]
        else:
            i += 1
            yield i, None, None


def sync_spool(
    path: Path | str, url: str, token: str, *, finish: bool = True, progress: bool = False
) -> SyncResult:
    """Store the spool's events on ``url``; see the module doc. ``finish=False`` leaves a
    finish event unsent (the online client sends the end itself)."""
    from trainers.client import ServerRun, started_stages

    path, url = Path(path), url.rstrip("/")
    meta, events = read_spool(path)
    run_id = _target(path, meta, url, token)
    done = first = (read_json(path / SYNC_FILE) or {}).get("done", 0)
    server = ServerRun(url, token, run_id, planned=bool(meta.get("plan")))
    server.started = len(started_stages(get_run(url, token, run_id)))
    stages = {ev["stage"]: (ev["name"], ev["start"]) for ev in events[:done] if "name" in ev}
    total = sum(len(ev["points"]) for ev in events[done:] if "points" in ev)
    bar = _bar(total, progress)
    sent = 0
    for end, points, state in _batches(events, done):
        stages.update(
            {e["stage"]: (e["name"], e["start"]) for e in events[done:end] if "name" in e}
        )
        if points:
            _send(server, stages, points)
            sent += len(points)
            bar.update(len(points))
        elif state and finish:
            _finish(server, stages, state)
        elif state:
            break
        done = end
        write_json(path / SYNC_FILE, {"url": url, "run_id": run_id, "done": done})
    bar.close()
    return SyncResult(run_id, done - first, sent, first >= len(events))


def _send(server, stages: dict, points: list[Point]) -> None:
    def send() -> None:
        for stage in sorted({p.stage for p in points}):
            server.start_stage(stage, *stages[stage])
        server.points(points)

    try:
        with_retries(send, retry_for=RETRY_SECONDS, what="send points")
    except ApiError as e:
        if not _closed(e, server):
            raise


def _finish(server, stages: dict, state: str) -> None:
    index = max(stages) if stages else 0
    name, start = stages.get(index, ("train", 0))
    try:
        with_retries(lambda: server.start_stage(index, name, start), retry_for=RETRY_SECONDS,
                     what="start the last stage")  # fmt: skip
        with_retries(lambda: server.finish(index, state), retry_for=RETRY_SECONDS,
                     what=f"mark the run {state}")  # fmt: skip
    except ApiError as e:
        if not _closed(e, server):
            raise


def _closed(e: ApiError, server) -> bool:
    """A 409 because the run already ended (an earlier sync stored its end, the crash came
    before it was recorded): nothing left to store."""
    if e.status != 409:
        return False
    state = get_run(server.url, server.token, server.run_id)["state"]
    return state in ("succeeded", "failed", "canceled")


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="pt", file=sys.stderr, disable=not progress or not total)
