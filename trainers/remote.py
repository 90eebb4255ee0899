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
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from trainers.events import Point, StageCanceled
from trainers.sender import (
    FIRST_BACKOFF,
    FLUSH_POINTS,
    FLUSH_SECONDS,
    MAX_BACKOFF,
    BufferedSender,
    Refused,
)
from trainers.sinks import BaseSink

log = logging.getLogger(__name__)

RETRY_SECONDS = 300.0
TIMEOUT_SECONDS = 30.0


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
    plan: dict[str, Any] | None,
    name: str | None = None,
    team: str | None = None,
    tags: list[str] | None = None,
    config: dict[str, Any] | None = None,
) -> dict:
    """Create an external run and return it as the API shows it (``id``, ``state``,
    ``stages``, ...). With ``plan`` (a plan dict) its stages are the plan's; without, it is a
    free-form run whose stages the client declares as they happen (``declare_stage``). Not
    retried: a lost answer could mean two runs."""
    body: dict[str, Any] = {"external": True}
    for field, value in (("plan", plan), ("name", name), ("team", team), ("tags", tags),
                         ("config", config)):  # fmt: skip
        if value:
            body[field] = value
    return api_request(base_url, token, "POST", "/api/runs/", body)


def declare_stage(
    base_url: str, token: str, run_id: int, index: int, name: str, start_step: int
) -> dict:
    """Start stage ``index`` of a free-form run at ``start_step`` (the previous stage ends
    there). Idempotent: declaring the same stage again answers it unchanged."""
    body = {"index": index, "name": name, "start_step": start_step}
    return api_request(base_url, token, "POST", f"/api/runs/{run_id}/stages/", body)


def report_stage(
    base_url: str, token: str, run_id: int, index: int, state: str, error: str = "",
    traceback: str = "", *, timeout: float = TIMEOUT_SECONDS,
) -> dict:  # fmt: skip
    """Report stage ``index``'s new state (running, succeeded, failed, canceled); a state
    the stage already has changes nothing."""
    body = {"state": state, "error": error, "traceback": traceback}
    return api_request(base_url, token, "POST", f"/api/runs/{run_id}/stages/{index}/", body,
                       timeout=timeout)  # fmt: skip


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
    """(stage, points) for each run of consecutive points of one stage."""
    start = 0
    for i in range(1, len(points) + 1):
        if i == len(points) or points[i].stage != points[start].stage:
            yield points[start].stage, points[start:i]
            start = i


def with_retries(call, *, retry_for: float, what: str, on_failure=None):
    """``call()`` until it answers, retrying connection errors, 5xx and 429 with backoff for
    ``retry_for`` seconds; a refusal (another 4xx) is raised at once, and ServerUnreachable
    when time is up. ``on_failure(error)`` sees each retried failure."""
    deadline = time.monotonic() + retry_for
    delay = FIRST_BACKOFF
    while True:
        try:
            return call()
        except (ServerUnreachable, ApiError) as e:
            if isinstance(e, ApiError) and not e.transient:
                raise
            if on_failure is not None:
                on_failure(e)
            if time.monotonic() + delay > deadline:
                raise ServerUnreachable(f"could not {what} for {retry_for:.0f} s: {e}") from None
        time.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF)


def post_points(base_url: str, token: str, run_id: int, points: list[Point], *,
                timeout: float = TIMEOUT_SECONDS) -> None:  # fmt: skip
    """POST ``points`` to the run, each stage's under its index (``stage=None``: no index,
    the server places them by step)."""
    for stage, chunk in _stage_chunks(points):
        body: dict[str, Any] = {
            "points": [
                {"key": p.key, "step": p.step, "value": p.value, "time": p.time} for p in chunk
            ]  # fmt: skip
        }
        if stage is not None:
            body["stage"] = stage
        api_request(base_url, token, "POST", f"/api/runs/{run_id}/metrics/", body,
                    timeout=timeout)  # fmt: skip


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
        self.retry_for, self.timeout = retry_for, timeout
        self._report_failures = 0  # transient report failures that were retried
        self._canceled = threading.Event()
        self._stage: int | None = None  # started and not finished
        self._next_stage = next_stage
        self._step = 0
        self._failure_reported = False
        self.sender = BufferedSender(
            self._deliver,
            name=f"Stagewise run {run_id}",
            flush_seconds=flush_seconds,
            flush_points=flush_points,
            retry_for=retry_for,
            give_up=ServerUnreachable,
        )

    @property
    def canceled(self) -> bool:
        return self._canceled.is_set()

    @property
    def points_sent(self) -> int:
        return self.sender.points_sent

    @property
    def requests_failed(self) -> int:
        """Transient failures (metrics and reports) that were retried."""
        return self.sender.failures + self._report_failures

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
        self.sender.put(points)  # the local JSONL keeps what the server cannot (NaN/inf)
        if points:
            self._step = max(self._step, max(p.step for p in points))

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
        self.sender.stop()
        if self._canceled.is_set() or self._failure_reported:
            return
        self._failure_reported = True
        index = self._open_stage()
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
        self.sender.stop()
        if self._canceled.is_set():
            return
        try:
            self.flush(retry_for=5.0)
            self._report(self._open_stage(), "canceled", retry_for=5.0)
        except StageCanceled:
            pass
        except Exception as e:
            log.warning("could not report the cancel to Stagewise: %s", e)

    # -- sending
    def flush(self, *, retry_for: float | None = None) -> None:
        """Send everything buffered now, retrying connection errors and 5xx with backoff for
        ``retry_for`` seconds (default: the sink's). Raises RunCanceled or StagewiseError."""
        retry_for = self.retry_for if retry_for is None else retry_for
        self._raise_pending()
        if not self.sender.flush(retry_for):
            raise ServerUnreachable(
                f"could not send metrics to Stagewise for {retry_for:.0f} s: "
                f"{self.sender.last_error}"
            )
        self._raise_pending()

    def close(self) -> None:
        """Stop the background sender and send what is left (raises like ``flush``)."""
        self.sender.stop()
        self.flush()

    def abandon(self) -> None:
        """Stop the background sender without sending what is left (never raises)."""
        self.sender.abandon()

    def _open_stage(self) -> int:
        return self._stage if self._stage is not None else self._next_stage

    def _raise_pending(self) -> None:
        if self._canceled.is_set():
            raise RunCanceled(self.run_id, self._open_stage(), self._step)
        self.sender.raise_error()

    def _deliver(self, points: list[Point]) -> None:
        try:
            post_points(self.base_url, self.token, self.run_id, points, timeout=self.timeout)
        except ApiError as e:
            if e.transient:
                raise
            raise Refused(self._refusal(e, "metrics")) from None

    def _refusal(self, e: ApiError, what: str) -> StagewiseError | None:
        """What a refusal means: None once the run is canceled (``canceled`` is set)."""
        if e.status == 409 and e.detail == "run canceled":
            self._canceled.set()
            return None
        return StagewiseError(f"Stagewise refused the {what}: {e}")

    def _count_failure(self, e: Exception) -> None:
        self._report_failures += 1

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
        path = f"/api/runs/{self.run_id}/stages/{index}/"
        try:
            with_retries(
                lambda: api_request(
                    self.base_url, self.token, "POST", path, body, timeout=self.timeout
                ),  # fmt: skip
                retry_for=self.retry_for if retry_for is None else retry_for,
                what=f"report stage {index} {state} to Stagewise",
                on_failure=self._count_failure,
            )
        except ApiError as e:
            refusal = self._refusal(e, f"report that stage {index} is {state}")
            self._raise_pending()
            raise refusal from None
