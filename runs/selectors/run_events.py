"""What the run page draws along a run's steps besides its curves (reads only, nothing is
stored for them): the run's events, the failed stage's error and traceback, the maps from
step to tokens seen and to wall time, and its notes as safe HTML.

Events follow from the rows the services keep: stage runs (states, ``started_at`` /
``finished_at``, ``attempts``), checkpoints, forks. A requeue is not logged anywhere; it follows
from ``StageRun.attempts``: every start of a stage counts one (``transitions.stage_to_running``),
so a stage with n attempts lost n - 1 workers (n while it waits in the queue again). The last
loss is at its ``queued_at`` (``transitions.stage_requeue`` stamps it), and the worker after it
resumed from the newest checkpoint of the stage written before then; the earlier losses of a
stage requeued more than once have no recorded step or time."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.db import connection
from markdown_it import MarkdownIt

from runs.models import Checkpoint, Run, Series, StageRun, StageState, WorkerLease
from runs.models.metrics import ROLLUP_LEVELS, bucket_width
from runs.selectors.series import lineage_sources
from runs.selectors.teams import team_ids_for

MAX_FORKS = 200
CLOCK_SAMPLES = 400  # (step, wall time) pairs per lineage source, about
TRACEBACK_CHARS = 50_000  # the end of a longer one (where the error is)
TOKENS_KEY = "train/tokens"
LM_OBJECTIVES = {"causal_lm", "sft"}
# trainers.events.TrainingDiverged, as the runner stores it: "<Type>: <message>"
DIVERGED = re.compile(
    r"^TrainingDiverged: (?P<metric>\S+) became (?P<value>\S+) at step (?P<step>\d+)"
)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _event(kind: str, step: int | None, at: datetime | None, **detail: Any) -> dict[str, Any]:
    return {"kind": kind, "step": step, "time": _iso(at), **detail}


# ------------------------------------------------------------------ events


def _resume_step(sr: StageRun, ckpts: list[Checkpoint]) -> int:
    """Where the worker after the stage's last lost one started: its newest checkpoint written
    before the requeue (the previous stage's end counts), else the stage's start."""
    before = [
        c.step
        for c in ckpts
        if sr.start_step <= c.step <= sr.end_step
        and (sr.queued_at is None or c.created_at <= sr.queued_at)
    ]
    return max(before, default=sr.start_step)


def _requeue_events(sr: StageRun, ckpts: list[Checkpoint], lease: WorkerLease | None) -> list[dict]:
    """One ``requeue`` per lost worker (attempt k) and one ``resume`` per attempt after it."""
    waiting = sr.state == StageState.QUEUED
    lost = sr.attempts if waiting else max(0, sr.attempts - 1)
    out: list[dict] = []
    resumed_at = (
        lease.acquired_at if lease and not lease.worker_id.startswith("dispatched:") else None
    )
    for k in range(1, lost + 1):
        last = k == lost
        step = _resume_step(sr, ckpts) if last else None
        at_step = (sr.last_step if waiting and sr.last_step is not None else step) if last else None
        out.append(
            _event(
                "requeue",
                at_step,
                sr.queued_at if last else None,
                stage=sr.stage_index,
                attempt=k,
                resume_step=step,
            )  # fmt: skip
        )
        if k + 1 <= sr.attempts:
            at = resumed_at if last and sr.state == StageState.RUNNING else None
            out.append(_event("resume", step, at, stage=sr.stage_index, attempt=k + 1))
    return out


def _stage_end(sr: StageRun) -> dict | None:
    """The stage's end: succeeded, failed (diverged: at the step it broke), canceled."""
    step = sr.last_step if sr.last_step is not None else sr.start_step
    if sr.state == StageState.SUCCEEDED:
        return _event("stage_end", sr.end_step, sr.finished_at, stage=sr.stage_index, name=sr.name)
    if sr.state == StageState.FAILED:
        m = DIVERGED.match(sr.error)
        if m:
            return _event("divergence", int(m["step"]), sr.finished_at, stage=sr.stage_index,
                          metric=m["metric"], value=m["value"], error=sr.error)  # fmt: skip
        return _event("failed", step, sr.finished_at, stage=sr.stage_index, error=sr.error)
    if sr.state == StageState.CANCELED and (sr.attempts or sr.started_at):
        return _event("cancel", step, sr.finished_at, stage=sr.stage_index)
    return None


def _stage_events(sr: StageRun, ckpts: list[Checkpoint], lease: WorkerLease | None) -> list[dict]:
    if sr.state == StageState.SKIPPED:  # a fork's stage inherited from its parent
        return []
    out: list[dict] = []
    if sr.started_at or sr.attempts:
        out.append(
            _event("stage_start", sr.start_step, sr.started_at, stage=sr.stage_index, name=sr.name)
        )
    out += _requeue_events(sr, ckpts, lease)
    end = _stage_end(sr)
    return [*out, end] if end else out


def run_forks(*, run: Run, user) -> list[dict]:
    """The forks taken from this run that the user may see, by fork step."""
    forks = (
        Run.objects.filter(parent=run, team_id__in=team_ids_for(user))
        .select_related("fork_checkpoint")
        .order_by("fork_checkpoint__step", "pk")[:MAX_FORKS]
    )
    return [
        {
            "id": r.pk,
            "name": r.name,
            "state": r.state,
            "created_at": _iso(r.created_at),
            "step": r.fork_checkpoint.step if r.fork_checkpoint_id else None,
            "checkpoint": r.fork_checkpoint_id,
        }  # fmt: skip
        for r in forks
    ]


def run_event_list(*, run: Run, forks: list[dict]) -> list[dict]:
    """The run's events in step order (unknown steps last)."""
    stages = list(run.stage_runs.order_by("stage_index"))
    ckpts = list(Checkpoint.objects.filter(run=run).select_related("stage_run").order_by("step"))
    leases = {lease.stage_run_id: lease for lease in WorkerLease.objects.filter(stage_run__run=run)}
    events: list[dict] = []
    for sr in stages:
        events += _stage_events(sr, ckpts, leases.get(sr.pk))
    for c in ckpts:
        events.append(_event("checkpoint", c.step, c.created_at, stage=c.stage_run.stage_index,
                             stage_end=c.stage_end, id=c.pk))  # fmt: skip
    for fk in forks:
        events.append(_event("fork", fk["step"], None, run=fk["id"], name=fk["name"]))
    if run.state == "canceled" and not any(e["kind"] == "cancel" for e in events):
        events.append(_event("cancel", None, run.finished_at))
    return sorted(events, key=lambda e: (e["step"] is None, e["step"] or 0))


def run_failure(run: Run) -> dict | None:
    """A failed run's error and, when a stage failed, that stage's traceback."""
    if run.state != "failed":
        return None
    sr = run.stage_runs.filter(state=StageState.FAILED).order_by("stage_index").first()
    if sr is None:
        return {"stage": None, "name": None, "error": run.error, "traceback": ""}
    return {"stage": sr.stage_index, "name": sr.name, "error": sr.error or run.error,
            "traceback": sr.traceback[-TRACEBACK_CHARS:]}  # fmt: skip


# ------------------------------------------------------------------ axes


def tokens_axis(run: Run) -> dict | None:
    """How to put tokens seen on the x axis: the run's ``train/tokens`` series when it logs
    one, else tokens per step of each stage from the plan (batch_size x seq_len, LM objectives
    only); None when neither is known (a classification run, a free-form one)."""
    if Series.objects.filter(run=run, key=TOKENS_KEY).exists():
        return {"source": "series", "key": TOKENS_KEY}
    planned = (run.plan or {}).get("stages") or []
    stages = []
    for sr in run.stage_runs.order_by("stage_index"):
        spec = planned[sr.stage_index] if sr.stage_index < len(planned) else {}
        bs, sl = spec.get("batch_size"), spec.get("seq_len")
        if (
            spec.get("objective") not in LM_OBJECTIVES
            or not isinstance(bs, int)
            or not isinstance(sl, int)
        ):
            return None
        stages.append(
            {"start_step": sr.start_step, "end_step": sr.end_step, "tokens_per_step": bs * sl}
        )
    return {"source": "plan", "stages": stages} if stages else None


def _clock_rows(series: Series, upto: int | None) -> list[tuple[int, float]]:
    """About CLOCK_SAMPLES (step, wall time) points of one series up to ``upto``: its first
    point and each rollup bucket's last one, at the level with about that many buckets."""
    span = (series.last_step or 0) - (series.first_step or 0) + 1
    level = next(
        (lv for lv in range(ROLLUP_LEVELS) if span / bucket_width(lv) <= CLOCK_SAMPLES),
        ROLLUP_LEVELS - 1,
    )
    top = upto if upto is not None else series.last_step
    with connection.cursor() as cur:
        cur.execute(
            """(SELECT step, wall_time FROM runs_metricpoint WHERE series_id = %(s)s
                ORDER BY step LIMIT 1)
               UNION
               (SELECT p.step, p.wall_time FROM runs_seriesrollup r
                JOIN runs_metricpoint p ON p.series_id = r.series_id AND p.step = r.last_step
                WHERE r.series_id = %(s)s AND r.level = %(l)s AND r.last_step <= %(top)s)
               ORDER BY 1""",
            {"s": series.pk, "l": level, "top": top},
        )
        return [(step, t) for step, t in cur.fetchall() if upto is None or step <= upto]


def wall_clock(*, run: Run, user) -> dict | None:
    """Step -> wall time samples (unix seconds) over the run's history as its reader may see
    it (a fork's ancestors up to the fork steps, then its own), read from the densest series
    of each run; None with fewer than two distinct times (nothing to put on a time axis)."""
    steps: list[int] = []
    times: list[float] = []
    for run_id, upto in reversed(lineage_sources(run=run, user=user)):
        densest = (
            Series.objects.filter(run_id=run_id, count__gt=0).order_by("-count", "key").first()
        )
        if densest is None:
            continue
        for step, t in _clock_rows(densest, upto):
            if not steps or step > steps[-1]:
                steps.append(step)
                times.append(t)
    if len(set(times)) < 2:
        return None
    return {"steps": steps, "times": times}


# ------------------------------------------------------------------ the page's read


def run_timeline(*, run: Run, user) -> dict[str, Any]:
    """GET /api/runs/{id}/events/: events, forks, failure and the x-axis maps."""
    forks = run_forks(run=run, user=user)
    return {
        "run": run.pk,
        "events": run_event_list(run=run, forks=forks),
        "forks": forks,
        "failure": run_failure(run),
        "axes": {"tokens": tokens_axis(run), "clock": wall_clock(run=run, user=user)},
    }


# ------------------------------------------------------------------ notes

# CommonMark with tables and strikethrough; raw HTML is escaped (html=False), link targets
# are checked by markdown-it's validateLink (no javascript:, vbscript:, file:, data:), and
# images are off (no request to a URL someone typed).
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
_MD.disable("image")


def _link_open(renderer, tokens, idx, options, env):
    tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
    return renderer.renderToken(tokens, idx, options, env)


_MD.add_render_rule("link_open", _link_open)


def notes_html(text: str) -> str:
    """A run's Markdown notes as HTML that is safe to insert: no tag of the author's own."""
    return _MD.render(text or "")
