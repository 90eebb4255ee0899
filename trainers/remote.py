"""Report a run trained here (your own GPU box, a cluster job) to a Stagewise server.

Like ``wandb.init()`` / ``wandb.log()``, over Stagewise's REST API with the standard library
only (urllib):

    run = create_external_run(url, token, plan.model_dump(mode="json"), name="lr sweep 3")
    sink = StagewiseSink(url, token, run["id"])
    run_plan(plan, out, MultiSink(JsonlSink(out / "metrics.jsonl"), sink), control=sink)

The sink buffers points and sends them every 250 ms or 1,000 points from a background thread,
each batch filed under its stage; it reports each stage's start and end (and a failure) and
sends everything buffered before a stage is marked finished. Connection errors and 5xx
answers are retried with backoff for ``retry_for`` seconds, so a short server outage delays
points but loses none (the server stores each (key, step) once, so a re-sent batch is
harmless). When the run is canceled in Stagewise the server answers 409 "run canceled": the
sink then raises ``RunCanceled`` from its next hook and, used as the engine's ``control``,
stops the stage at its next step.

``python -m trainers run --report-to`` records the run it creates in ``OUT/stagewise.json``
(``save_run_ref``), so that ``--resume`` continues the same run (``get_run``,
``load_run_ref``; trainers/cli.py).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from trainers.events import Point, StageCanceled
from trainers.sinks import BaseSink

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
FLUSH_POINTS = 1000
MAX_POINTS_PER_REQUEST = 50_000  # the server's limit per metrics request
RETRY_SECONDS = 300.0
TIMEOUT_SECONDS = 30.0
_MAX_BACKOFF = 5.0


class StagewiseError(RuntimeError):
    """The server refused a request for good, or stayed unreachable; ``str`` is one line."""


class ServerUnreachable(StagewiseError):
    """No answer from the server (connection refused or reset, DNS, timeout)."""


class ApiError(StagewiseError):
    """The server answered with an error status; ``body`` is its parsed JSON (or text)."""

    def __init__(self, status: int, body: Any, what: str):
        self.status, self.body = status, body
        super().__init__(f"{what}: HTTP {status}: {'; '.join(self.reasons())}")

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status == 429

    @property
    def detail(self) -> str:
        return str(self.body.get("detail", "")) if isinstance(self.body, dict) else ""

    def reasons(self) -> list[str]:
        """One "field: reason" line per problem the server named (or its detail)."""
        body = self.body
        if not isinstance(body, dict):
            return [str(body)[:300] or "no reason given"]
        errors = body.get("errors") if isinstance(body.get("errors"), dict) else None
        fields = errors or {k: v for k, v in body.items() if k != "detail"}
        lines = []
        for field, why in fields.items():
            for reason in why if isinstance(why, list) else [why]:
                lines.append(f"{field}: {reason}")
        return lines or [self.detail or "no reason given"]


class RunCanceled(StageCanceled):
    """The run was canceled in Stagewise: training stops (the engine treats it as a cancel)."""

    def __init__(self, run_id: int, stage_index: int, step: int):
        super().__init__(stage_index, step)
        self.run_id = run_id
        self.args = (f"run {run_id} was canceled in Stagewise (stage {stage_index}, step {step})",)


def api_request(
    base_url: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout: float = TIMEOUT_SECONDS,
) -> Any:
    """One JSON request to the Stagewise API; the parsed answer, or ApiError /
    ServerUnreachable."""
    url = base_url.rstrip("/") + path
    data = None if body is None else json.dumps(body, allow_nan=False).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Token {token}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode("utf-8", "replace").strip()
        raise ApiError(e.code, parsed, f"{method} {path}") from None
    except urllib.error.URLError as e:
        raise ServerUnreachable(f"cannot reach Stagewise at {base_url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:  # reset, timeout, cut-off answer
        raise ServerUnreachable(
            f"cannot reach Stagewise at {base_url}: {type(e).__name__}: {e}"
        ) from None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise StagewiseError(
            f"{method} {path}: the answer is not JSON; is {base_url} a Stagewise server?"
        ) from None


def create_external_run(
    base_url: str,
    token: str,
    plan: dict[str, Any],
    name: str | None = None,
    team: str | None = None,
    tags: list[str] | None = None,
) -> dict:
    """Create an external run for ``plan`` (a plan dict) and return it as the API shows it
    (``id``, ``state``, ``stages``, ...). Not retried: a lost answer could mean two runs."""
    body: dict[str, Any] = {"external": True, "plan": plan}
    if name:
        body["name"] = name
    if team:
        body["team"] = team
    if tags:
        body["tags"] = tags
    return api_request(base_url, token, "POST", "/api/runs/", body)


def get_run(base_url: str, token: str, run_id: int) -> dict:
    """The run as the API shows it (``state``, ``external``, ``stages``, ...)."""
    return api_request(base_url, token, "GET", f"/api/runs/{run_id}/")


RUN_FILE = "stagewise.json"  # in the output directory: the run that --report-to created


def save_run_ref(out_dir: Path, base_url: str, run_id: int) -> Path:
    """Record the external run of an output directory, so that ``--resume`` continues it."""
    path = Path(out_dir) / RUN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": base_url.rstrip("/"), "run_id": run_id}) + "\n")
    os.replace(tmp, path)
    return path


def load_run_ref(out_dir: Path) -> dict | None:
    """``{"url", "run_id"}`` recorded by ``save_run_ref``; None if there is none (or it is
    unreadable)."""
    try:
        ref = json.loads((Path(out_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(ref, dict) and isinstance(ref.get("url"), str)
            and isinstance(ref.get("run_id"), int)):  # fmt: skip
        return None
    return ref


def run_page_url(base_url: str, run_id: int) -> str:
    return f"{base_url.rstrip('/')}/runs/{run_id}/"


def _stage_chunks(points: list[Point]):
    """(stage, points) for each run of consecutive points of one stage, at most
    MAX_POINTS_PER_REQUEST each."""
    start = 0
    for i in range(1, len(points) + 1):
        if (
            i == len(points)
            or points[i].stage != points[start].stage
            or i - start == MAX_POINTS_PER_REQUEST
        ):
            yield points[start].stage, points[start:i]
            start = i


class StagewiseSink(BaseSink):
    """Streams the engine's points and stage events to an external run on a Stagewise server.

    Also a ``Control``: ``should_stop()`` turns True once the server said the run was
    canceled, so the engine stops at its next step."""

    def __init__(
        self,
        base_url: str,
        token: str,
        run_id: int,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_points: int = FLUSH_POINTS,
        retry_for: float = RETRY_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
        next_stage: int = 0,
    ):
        """``next_stage``: the first stage not finished yet (a resumed run's), the one a
        failure before any stage started is reported on."""
        self.base_url, self.token, self.run_id = base_url, token, run_id
        self.flush_seconds, self.flush_points = flush_seconds, flush_points
        self.retry_for, self.timeout = retry_for, timeout
        self.points_sent = 0
        self.requests_failed = 0  # transient failures that were retried
        self._buf: list[Point] = []
        self._lock = threading.Lock()  # the buffer
        self._flush_lock = threading.Lock()  # one sender at a time, batches in order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._canceled = threading.Event()
        self._fatal: StagewiseError | None = None
        self._last_error = ""
        self._stage: int | None = None  # started and not finished
        self._next_stage = next_stage
        self._step = 0
        self._dropped_nonfinite = 0
        self._failure_reported = False
        self._thread = threading.Thread(target=self._loop, name="stagewise-flush", daemon=True)
        self._thread.start()

    @property
    def canceled(self) -> bool:
        return self._canceled.is_set()

    # -- Control
    def should_stop(self) -> bool:
        return self._canceled.is_set()

    # -- MetricSink
    def stage_started(self, stage_index: int, start_step: int) -> None:
        self.flush()
        self._report(stage_index, "running")
        self._stage, self._step = stage_index, start_step

    def points(self, points: list[Point]) -> None:
        self._raise_pending()
        # The server refuses NaN/inf (JSON has no such numbers); the local JSONL keeps them.
        finite = [p for p in points if math.isfinite(p.value)]
        if len(finite) < len(points):
            if not self._dropped_nonfinite:
                log.warning("not sending non-finite metric values to Stagewise (NaN/inf)")
            self._dropped_nonfinite += len(points) - len(finite)
        with self._lock:
            self._buf.extend(finite)
            full = len(self._buf) >= self.flush_points
        if points:
            self._step = max(self._step, max(p.step for p in points))
        if full:
            self._wake.set()

    def checkpoint_saved(self, info) -> None:
        self._raise_pending()  # checkpoints stay on this machine; nothing to send

    def stage_finished(self, stage_index: int, end_step: int) -> None:
        self.flush()  # every point is stored before the stage shows as succeeded
        self._report(stage_index, "succeeded")
        self._stage, self._next_stage, self._step = None, stage_index + 1, end_step

    def run_finished(self) -> None:
        self.close()

    def error(self, message: str, traceback: str) -> None:
        """Send what is buffered and mark the stage failed, briefly (the engine re-raises
        the original error after this hook, so this never raises)."""
        self._shutdown_thread()
        if self._canceled.is_set() or self._failure_reported:
            return
        self._failure_reported = True
        index = self._stage if self._stage is not None else self._next_stage
        try:
            self.flush(retry_for=10.0)
        except Exception as e:  # best effort: the report matters more
            log.warning("could not send the last metrics to Stagewise: %s", e)
        try:
            self._report(index, "failed", error=message, traceback=traceback, retry_for=10.0)
        except Exception as e:
            log.warning("could not report the failure to Stagewise: %s", e)

    def report_canceled(self) -> None:
        """The training here was stopped (e.g. Ctrl-C): mark the run canceled, briefly."""
        self._shutdown_thread()
        if self._canceled.is_set():
            return
        index = self._stage if self._stage is not None else self._next_stage
        try:
            self.flush(retry_for=5.0)
            self._report(index, "canceled", retry_for=5.0)
        except StageCanceled:
            pass
        except Exception as e:
            log.warning("could not report the cancel to Stagewise: %s", e)

    # -- sending
    def flush(self, *, retry_for: float | None = None) -> None:
        """Send everything buffered now, retrying connection errors and 5xx with backoff for
        ``retry_for`` seconds (default: the sink's). Raises RunCanceled or StagewiseError."""
        retry_for = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + retry_for
        delay = 0.25
        while True:
            self._raise_pending()
            if self._flush_once():
                self._raise_pending()
                return
            if time.monotonic() + delay > deadline:
                raise ServerUnreachable(
                    f"could not send metrics to Stagewise for {retry_for:.0f} s: {self._last_error}"
                )
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    def close(self) -> None:
        """Stop the background sender and send what is left (raises like ``flush``)."""
        self._shutdown_thread()
        self.flush()

    def abandon(self) -> None:
        """Stop the background sender without sending what is left (never raises)."""
        self._shutdown_thread()

    def _shutdown_thread(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.timeout + 5)

    def _raise_pending(self) -> None:
        if self._canceled.is_set():
            stage = self._stage if self._stage is not None else self._next_stage
            raise RunCanceled(self.run_id, stage, self._step)
        if self._fatal is not None:
            raise self._fatal

    def _flush_once(self) -> bool:
        """Send the buffer. False: a transient failure, and the unsent points are back in
        the buffer. True: sent, or dropped because the run is canceled or the server
        refused them for good (``_raise_pending`` then raises)."""
        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if not batch or self._canceled.is_set() or self._fatal is not None:
                return True
            sent = 0
            try:
                for stage, chunk in _stage_chunks(batch):
                    body = {
                        "stage": stage,
                        "points": [
                            {"key": p.key, "step": p.step, "value": p.value, "time": p.time}
                            for p in chunk
                        ],
                    }
                    self._post(f"/api/runs/{self.run_id}/metrics/", body)
                    sent += len(chunk)
                    self.points_sent += len(chunk)
            except (ServerUnreachable, ApiError) as e:
                if isinstance(e, ApiError) and not e.transient:
                    self._refused(e, "metrics")
                    return True
                self._last_error = str(e)
                self.requests_failed += 1
                with self._lock:
                    self._buf[:0] = batch[sent:]
                return False
            return True

    def _refused(self, e: ApiError, what: str) -> None:
        if e.status == 409 and e.detail == "run canceled":
            self._canceled.set()
        else:
            self._fatal = StagewiseError(f"Stagewise refused the {what}: {e}")

    def _post(self, path: str, body: dict) -> Any:
        return api_request(self.base_url, self.token, "POST", path, body, timeout=self.timeout)

    def _report(
        self,
        index: int,
        state: str,
        *,
        error: str = "",
        traceback: str = "",
        retry_for: float | None = None,
    ) -> None:
        """POST the stage's new state, retrying transient failures (a repeated report is
        harmless: the server ignores a state the stage already has)."""
        body = {"state": state, "error": error, "traceback": traceback}
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        delay = 0.25
        while True:
            try:
                self._post(f"/api/runs/{self.run_id}/stages/{index}/", body)
                return
            except (ServerUnreachable, ApiError) as e:
                if isinstance(e, ApiError) and not e.transient:
                    self._refused(e, f"report that stage {index} is {state}")
                    self._raise_pending()
                self._last_error = str(e)
                self.requests_failed += 1
            if time.monotonic() + delay > deadline:
                raise ServerUnreachable(
                    f"could not report stage {index} {state} to Stagewise: {self._last_error}"
                )
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    def _loop(self) -> None:
        failing_since: float | None = None
        delay = 0.25
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._flush_once():
                failing_since, delay = None, 0.25
                continue
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self.retry_for:
                self._fatal = ServerUnreachable(
                    f"could not send metrics to Stagewise for {self.retry_for:.0f} s: "
                    f"{self._last_error}"
                )
                return
            self._stop.wait(delay)  # back off instead of retrying at every new point
            delay = min(delay * 2, _MAX_BACKOFF)
