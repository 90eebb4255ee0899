"""Log any training to Stagewise: ``init()``, ``log()``, ``stage()``, ``finish()``.

    import trainers.client as sw

    with sw.init(name="prose then code", config={"lr": 3e-4}) as run:   # STAGEWISE_URL/_TOKEN
        run.stage("prose-pt")
        for step in range(1, 601):
            run.log({"train/loss": loss, "lr": lr}, step=step)
        run.stage("code-cpt")            # the boundary: the next logged step starts this stage
        ...
        run.log({"eval/prose/loss": 3.2, "eval/code/loss": 2.9}, step=1200)

Standard library only (no torch, no Django). ``log()`` never waits for the network: points
are buffered and sent from a background thread (``trainers.sender.BufferedSender``) in
batches, with retries and backoff while the server is away; past ``max_buffered`` points
the oldest are spilled to the local spool instead of memory. A run without a plan is
*free-form*: its stages are declared as they happen (``stage()``); with ``plan=`` its stages
are the plan's, started in order.

Offline (``mode="offline"``, or when the server cannot be reached at ``init()``), everything
goes to a spool directory, and ``python -m trainers sync DIR`` uploads it later
(``trainers.spool``). The server keeps one value per (run, key, step): a step logged again
replaces the earlier value, so re-sent batches and resumed trainings never duplicate points.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import threading
import uuid
from pathlib import Path
from time import time as _now
from typing import Any

from trainers.events import Point
from trainers.remote import (
    ApiError,
    ServerUnreachable,
    StagewiseError,
    create_external_run,
    declare_stage,
    get_run,
    post_points,
    report_stage,
    run_page_url,
    with_retries,
)
from trainers.sender import BufferedSender, Refused
from trainers.spool import Spool, default_spool_root

log = logging.getLogger(__name__)

URL_ENV, TOKEN_ENV, MODE_ENV = "STAGEWISE_URL", "STAGEWISE_TOKEN", "STAGEWISE_MODE"
MODES = ("online", "offline")
MAX_BUFFERED = 200_000  # points held in memory while the server is away (~40 MB)
FINISH_WAIT = 60.0  # seconds finish() waits for the server before spooling what is left
DEFAULT_STAGE = "train"


class ServerRun:
    """One run on a server as the client (or ``sync``) writes it: stages started in order
    (declared for a free-form run, reported running for a planned one), points posted, the
    end reported. Every call may be repeated: the server answers a repeat unchanged."""

    def __init__(self, url: str, token: str, run_id: int, *, planned: bool, started: int = 0):
        self.url, self.token, self.run_id, self.planned = url, token, run_id, planned
        self.started = started  # stages the server shows as started

    def start_stage(self, index: int, name: str, start: int) -> None:
        if index < self.started:
            return
        if self.planned:
            if index > 0:
                report_stage(self.url, self.token, self.run_id, index - 1, "succeeded")
            report_stage(self.url, self.token, self.run_id, index, "running")
        else:
            declare_stage(self.url, self.token, self.run_id, index, name, start)
        self.started = index + 1

    def points(self, points: list[Point]) -> None:
        post_points(self.url, self.token, self.run_id, points)

    def finish(self, index: int, state: str) -> None:
        report_stage(self.url, self.token, self.run_id, index, state)


def _env(value: str | None, env: str) -> str:
    return (value if value is not None else os.environ.get(env, "")).strip()


def init(
    url: str | None = None,
    token: str | None = None,
    name: str | None = None,
    team: str | None = None,
    config: dict[str, Any] | None = None,
    plan: dict[str, Any] | None = None,
    mode: str | None = None,
    *,
    tags: list[str] | None = None,
    run_id: int | None = None,
    spool_dir: str | Path | None = None,
    max_buffered: int = MAX_BUFFERED,
) -> Run:
    """Start (or, with ``run_id``, continue) a run and return it. ``url`` and ``token``
    default to $STAGEWISE_URL and $STAGEWISE_TOKEN. ``mode="offline"`` writes to
    ``spool_dir`` (default ``$STAGEWISE_SPOOL_DIR`` or ``./stagewise-spool/<id>``); an
    online run whose server cannot be reached at start goes offline with a warning. ``mode``
    defaults to $STAGEWISE_MODE, else online."""
    mode = mode or os.environ.get(MODE_ENV, "").strip() or "online"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    meta = {"name": name, "team": team, "config": config or {}, "plan": plan,
            "tags": tags or []}  # fmt: skip
    url, token = _env(url, URL_ENV).rstrip("/"), _env(token, TOKEN_ENV)
    spool_path = Path(spool_dir) if spool_dir else default_spool_root() / uuid.uuid4().hex[:12]
    if mode == "offline":
        return Run(None, meta, spool_path=spool_path, max_buffered=max_buffered)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"no Stagewise URL: pass url= or set ${URL_ENV} (got {url!r})")
    if not token:
        raise ValueError(f"no API token: pass token= or set ${TOKEN_ENV}")
    try:
        server = _open_run(url, token, meta, run_id)
    except ServerUnreachable as e:
        log.warning("%s; logging offline to %s (upload it later with: python -m trainers "
                    "sync %s)", e, spool_path, spool_path)  # fmt: skip
        return Run(None, {**meta, "url": url}, spool_path=spool_path, max_buffered=max_buffered)
    return Run(server, meta, spool_path=spool_path, max_buffered=max_buffered)


def _open_run(url: str, token: str, meta: dict, run_id: int | None) -> tuple[ServerRun, dict]:
    """(ServerRun, the run as the API shows it): a new run, or ``run_id`` continued."""
    if run_id is None:
        shown = create_external_run(url, token, meta["plan"], name=meta["name"],
                                    team=meta["team"], tags=meta["tags"],
                                    config=meta["config"])  # fmt: skip
    else:
        shown = get_run(url, token, run_id)
        if not shown.get("external") or shown.get("state") != "running":
            raise StagewiseError(
                f"run {run_id} is {'not external' if not shown.get('external') else shown['state']}"
                "; it cannot be continued"
            )
    planned = bool(meta["plan"]) or bool(shown.get("plan"))
    started = len(started_stages(shown))
    return ServerRun(url, token, shown["id"], planned=planned, started=started), shown


class Run:
    """A run being logged; see the module doc. Also a context manager: leaving the block
    finishes the run, ``failed`` when it is left by an exception."""

    def __init__(self, server, meta: dict, *, spool_path: Path, max_buffered: int):
        self._server: ServerRun | None = server[0] if server else None
        shown = server[1] if server else {}
        self.id: int | None = self._server.run_id if self._server else None
        self.url: str | None = run_page_url(self._server.url, self.id) if self._server else None
        self.mode = "online" if self._server else "offline"
        self.canceled = False
        self.finished: str | None = None
        self._meta, self._spool_path, self._spool = meta, spool_path, None
        self._stage_lock = threading.Lock()
        self._stages = _known_stages(shown)  # [(name, start)]; the last is the current one
        self._planned = _plan_stages(shown) if server and server[0].planned else None
        self._step = _last_stored_step(shown, self._stages)
        self._any = False  # anything logged by this process
        self._fresh = not self._stages  # nothing logged in the current stage yet
        self._warned: set[str] = set()
        if self._server is None:
            self._open_spool()
        self._sender = BufferedSender(
            self._deliver if self._server else self._spool.points,
            name=f"Stagewise run {self.id}" if self.id else "Stagewise spool",
            max_buffered=max_buffered,
            on_overflow=self._spill,
        )
        atexit.register(self._at_exit)
        if self.url:
            print(f"Stagewise run {self.id}: {self.url}", file=sys.stderr, flush=True)

    @property
    def last_step(self) -> int:
        """The highest step logged so far (for a continued run: stored on the server)."""
        return self._step

    @property
    def stages(self) -> list[tuple[str, int]]:
        """The stages marked so far, (name, start step); the last is the current one."""
        return list(self._stages)

    # -- the training loop's side
    def log(
        self, metrics: dict[str, Any], step: int | None = None, *, time: float | None = None
    ) -> None:
        """Record ``metrics`` (key -> number) at ``step`` (default: the last step + 1), measured
        at unix ``time`` (default: now; importers pass the original). Never blocks; a value
        that is not a finite number is not stored."""
        if step is None:
            step = self._step + 1 if self._any or self._stages else 0
        stage = len(self._stages) - 1
        if stage < 0:
            stage = self._begin_stage(DEFAULT_STAGE, 0)
        if step < self._stages[stage][1]:
            return self._warn_once("past", f"step {step} is before the current stage's start "
                                   f"{self._stages[stage][1]}; not logged")  # fmt: skip
        now = _now() if time is None else float(time)
        try:
            points = [Point(k, step, float(v), now, stage) for k, v in metrics.items()]
        except (TypeError, ValueError) as e:
            return self._warn_once("value", f"log(): {e}; values must be numbers")
        if step > self._step:
            self._step = step
        self._fresh, self._any = False, True
        try:
            self._sender.put(points)
        except Exception as e:
            self._warn_once("sender", f"Stagewise stopped storing points: {e}")

    def stage(self, name: str, step: int | None = None) -> int:
        """Start stage ``name``: the boundary is at ``step`` (default: the last logged step),
        and the points logged from now on belong to the new stage. Returns its index."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a stage needs a name")
        return self._begin_stage(name.strip(), self._step if step is None else int(step))

    def finish(self, state: str = "succeeded") -> None:
        """Send what is buffered and mark the run ``succeeded`` or ``failed``. Waits up to a
        minute for the server; what it cannot send then stays in the spool (sync it later)."""
        if state not in ("succeeded", "failed"):
            raise ValueError(f"state must be 'succeeded' or 'failed', not {state!r}")
        if self.finished:
            return
        self.finished = state
        if not self._stages:
            self._begin_stage(DEFAULT_STAGE, 0)
        index = len(self._stages) - 1
        if self._server is not None and self._finish_online(index, state):
            return
        self._sender.stop()
        self._spill(self._sender.take())
        self._spool.finish(state)
        print(f"Stagewise: run written to {self._spool_path}; upload it with: "
              f"python -m trainers sync {self._spool_path}", file=sys.stderr)  # fmt: skip

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish("failed" if exc_type is not None else "succeeded")

    # -- internals
    def _begin_stage(self, name: str, start: int) -> int:
        with self._stage_lock:
            if self._planned is not None:
                self._next_planned(name)
            elif self._stages and self._fresh:
                self._stages[-1] = (name, self._stages[-1][1])  # nothing logged: rename it
            elif self._stages and start <= self._stages[-1][1]:
                raise ValueError(f"stage {name!r} must start after step "
                                 f"{self._stages[-1][1]} (where the current stage starts)")  # fmt: skip
            else:
                self._stages.append((name, start))
            self._fresh = True
            index = len(self._stages) - 1
        if self._spool is not None:
            self._spool.stage(index, *self._stages[index])
        return index

    def _next_planned(self, name: str) -> None:
        """A planned run's stages are the plan's, in order, at the plan's steps."""
        if self._stages and self._stages[-1][0] == name:
            return
        i = len(self._stages)
        if i >= len(self._planned) or self._planned[i][0] != name:
            expected = self._planned[i][0] if i < len(self._planned) else "no further stage"
            raise ValueError(f"the run's plan has {expected!r} next, not {name!r}")
        self._stages.append(self._planned[i])

    def _deliver(self, points: list[Point]) -> None:
        """Send a chunk: each stage started on the server before its points."""
        assert self._server is not None
        try:
            for stage in sorted({p.stage for p in points}):
                self._server.start_stage(stage, *self._stages[stage])
            self._server.points(points)
        except ApiError as e:
            if e.transient:
                raise
            if e.status == 409 and e.detail == "run canceled":
                self.canceled = True
                raise Refused(None) from None
            self._warn_once(f"refused {e.status}", f"Stagewise refused points: {e}")

    def _open_spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self._spool_path, self._meta)
            if self._server is not None:
                self._spool.set_run(self._server.url, self._server.run_id)
            for i, (name, start) in enumerate(self._stages):
                self._spool.stage(i, name, start)
        return self._spool

    def _spill(self, points: list[Point]) -> None:
        if points:
            self._open_spool().points(points)

    def _finish_online(self, index: int, state: str) -> bool:
        """Send the rest and the end; False when the server stayed away (spool it)."""
        server = self._server
        if not self._sender.close(FINISH_WAIT):
            return False
        try:
            with_retries(lambda: server.start_stage(index, *self._stages[index]),
                         retry_for=FINISH_WAIT, what="start the last stage")  # fmt: skip
            if self._spool is not None:  # points spilled during an outage go first
                from trainers.sync import sync_spool

                sync_spool(self._spool_path, server.url, server.token, finish=False)
            with_retries(lambda: server.finish(index, state), retry_for=FINISH_WAIT,
                         what=f"mark run {server.run_id} {state}")  # fmt: skip
            if self._spool is not None:  # all of it is stored now
                self._spool.close()
                shutil.rmtree(self._spool_path, ignore_errors=True)
        except ServerUnreachable:
            return False
        except ApiError as e:
            if not (e.status == 409 and e.detail == "run canceled"):
                log.warning("Stagewise refused the end of run %s: %s", server.run_id, e)
        return True

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s", message)

    def _at_exit(self) -> None:
        """The process ends without finish(): send what is buffered (the run stays
        running; a person or a later finish() ends it)."""
        if not self.finished:
            self._sender.close(10.0)


def _last_stored_step(shown: dict, started: list[tuple[str, int]]) -> int:
    """Where a continued run stands: its stages' latest reported step (0 for a new run)."""
    steps = [st.get("last_step") for st in shown.get("stages") or []]
    return max([s for s in steps if s is not None] + [start for _, start in started], default=0)


def _plan_stages(shown: dict) -> list[tuple[str, int]]:
    """A planned run's stages (name, start step), from the server's answer."""
    stages = sorted(shown.get("stages") or [], key=lambda st: st["stage_index"])
    return [(st["name"], st["start_step"]) for st in stages]


def started_stages(shown: dict) -> list[dict]:
    """The stages of a run (as the API shows it) that have started, in order."""
    stages = sorted(shown.get("stages") or [], key=lambda st: st["stage_index"])
    return [st for st in stages if st["state"] not in ("pending", "queued")]


def _known_stages(shown: dict) -> list[tuple[str, int]]:
    """The stages a continued run already started on the server."""
    return [(st["name"], st["start_step"]) for st in started_stages(shown)]
