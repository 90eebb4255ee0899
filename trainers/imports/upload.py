"""One source of points (a TensorBoard run directory, one run of a table) → one Stagewise run,
sent through the client (``trainers.client``: buffered, retried, spooled when the server is
away) with the user's stage marks, and what was imported, for the summary.

Points are sorted by step before they are logged, so a mark ``600:code-cpt`` applies where
it should: the points at steps <= 600 belong to the stage before, ``run.stage("code-cpt",
step=600)`` comes before the first point past 600. A mark no point falls in (it is followed
by another mark before the next point, or comes after the last point) creates no stage: the
summary names it. Points before the first mark form a stage ``train`` from step 0.
"""

from __future__ import annotations

import inspect
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainers.imports.common import MAX_RUN_NAME, MAX_STEP, BadInput, Mark, check_key

DEFAULT_STAGE = "train"  # trainers.client.DEFAULT_STAGE: the stage before the first mark


@dataclass
class Source:
    """The points of one future run as columns: point i is (keys[code[i]], step[i],
    value[i], time[i]), sorted by step, each (key, step) once. Build it with ``source()``."""

    name: str
    origin: dict  # stored in the run's config as "imported_from"
    keys: list[str]
    code: np.ndarray  # int64
    step: np.ndarray  # int64
    value: np.ndarray  # float64, finite
    time: np.ndarray  # float64 unix seconds; NaN = not known
    skipped: int = 0  # values not stored: empty, NaN or infinite
    replaced: int = 0  # points whose (key, step) came again later: the later one is kept

    @property
    def size(self) -> int:
        return len(self.step)


def source(name: str, origin: dict, keys: list[str], code, step, value, time=None) -> Source:
    """Check the points (keys, steps) and sort them by step; of a (key, step) given twice the
    later one is kept, as the server would. Raises BadInput."""
    where = origin.get("path", name)
    for key in keys:
        check_key(key, where)
    code, step = np.asarray(code, np.int64), np.asarray(step, np.int64)
    value = np.asarray(value, np.float64)
    time = np.full(len(step), np.nan) if time is None else np.array(time, np.float64)
    time[~np.isfinite(time)] = np.nan  # not known: the server stamps the point
    if len(step) and (step.min() < 0 or step.max() > MAX_STEP):
        bad = int(step[(step < 0) | (step > MAX_STEP)][0])
        raise BadInput(f"{where}: step {bad} is outside 0..{MAX_STEP}")
    finite = np.isfinite(value)
    skipped = int((~finite).sum())
    code, step, value, time = code[finite], step[finite], value[finite], time[finite]
    order = np.lexsort((np.arange(len(step)), code, step))  # by step, key, then input order
    code, step, value, time = code[order], step[order], value[order], time[order]
    last = np.ones(len(step), dtype=bool)  # the last of each run of equal (step, key)
    last[:-1] = (step[1:] != step[:-1]) | (code[1:] != code[:-1])
    replaced = int((~last).sum())
    code, step, value, time = code[last], step[last], value[last], time[last]
    return Source(name[:MAX_RUN_NAME], origin, keys, code, step, value, time, skipped, replaced)


@dataclass(frozen=True)
class StagePlan:
    stages: list[tuple[str, int, int]]  # (name, start step, index of its first point)
    empty: list[Mark]  # marks no point falls in: no stage is created for them


def plan_stages(marks: list[Mark], step: np.ndarray) -> StagePlan:
    """Where each stage begins in ``step`` (sorted): a mark at s takes the points after s,
    a mark at 0 all of them; of marks that would begin at the same point the last wins."""
    n = len(step)
    firsts = [0 if m.step == 0 else int(np.searchsorted(step, m.step, side="right")) for m in marks]
    stages, empty = [], []
    for i, (mark, first) in enumerate(zip(marks, firsts, strict=True)):
        if first >= n or (i + 1 < len(marks) and firsts[i + 1] == first):
            empty.append(mark)
        else:
            stages.append((mark.name, mark.step, first))
    if not stages or stages[0][2] > 0:
        stages.insert(0, (DEFAULT_STAGE, 0, 0))
    return StagePlan(stages, empty)


@dataclass
class Imported:
    """What one import stored, for the summary."""

    name: str
    run_id: int | None
    url: str | None
    spool: Path | None  # where points waited (offline: all of them): ``trainers sync DIR``
    keys: list[str]
    points: int
    steps: tuple[int, int]
    stages: list[tuple[str, int, int]]  # (name, start, end)
    empty: list[Mark] = field(default_factory=list)
    skipped: int = 0
    replaced: int = 0


def send(src: Source, marks: list[Mark], *, url: str, token: str, team: str | None,
         progress: bool) -> Imported:  # fmt: skip
    """Create the run, log every point with the marks, finish it. Raises StagewiseError."""
    from trainers import client
    from trainers.spool import default_spool_root

    plan = plan_stages(marks, src.step)
    spool = default_spool_root() / f"import-{uuid.uuid4().hex[:12]}"
    run = client.init(url=url, token=token, name=src.name, team=team,
                      config={"imported_from": src.origin}, spool_dir=spool)  # fmt: skip
    try:
        _log_points(run, src, plan, progress)
    except BaseException:
        run.finish("failed")
        raise
    run.finish()
    last = int(src.step[-1])
    starts = [start for _, start, _ in plan.stages]
    ends = [*starts[1:], last]
    return Imported(
        name=src.name, run_id=run.id, url=run.url,
        spool=spool if spool.exists() else None,
        keys=[src.keys[c] for c in np.unique(src.code)], points=src.size,
        steps=(int(src.step[0]), last),
        stages=[(name, start, end) for (name, start, _), end in zip(plan.stages, ends, strict=True)],
        empty=plan.empty, skipped=src.skipped, replaced=src.replaced,
    )  # fmt: skip


def log_takes_time() -> bool:
    """Whether this client's ``Run.log`` takes the points' wall time (``time=``); without it
    the server stamps each point with the time it arrives."""
    from trainers.client import Run

    return "time" in inspect.signature(Run.log).parameters


def time_note(sources: list[Source]) -> str | None:
    """A note when the input has wall times this client cannot pass on."""
    if log_takes_time() or all(np.isnan(s.time).all() for s in sources):
        return None
    return ("the points' wall times are not kept (trainers.client's Run.log takes no time=); "
            "the server stamps each point when it arrives")  # fmt: skip


def _log_points(run, src: Source, plan: StagePlan, progress: bool) -> None:
    """One ``run.log`` per step (per step and wall time when the client keeps times)."""
    from tqdm import tqdm

    keys = src.keys
    code, step, value, time = (a.tolist() for a in (src.code, src.step, src.value, src.time))
    bounds = [0, *(np.flatnonzero(np.diff(src.step)) + 1).tolist(), src.size]
    stage_at = {first: (name, start) for name, start, first in plan.stages}
    timed = log_takes_time() and not np.isnan(src.time).all()
    bar = tqdm(total=src.size, unit="pt", desc=src.name[-30:], file=sys.stderr,
               disable=not progress, leave=False)  # fmt: skip
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if lo in stage_at:
            name, start = stage_at[lo]
            run.stage(name, step=start)
        if timed:
            for t, metrics in _by_time(keys, code[lo:hi], value[lo:hi], time[lo:hi]).items():
                run.log(metrics, step=step[lo], time=t)
        else:
            run.log({keys[c]: v for c, v in zip(code[lo:hi], value[lo:hi], strict=True)},
                    step=step[lo])  # fmt: skip
        bar.update(hi - lo)
    bar.close()


def _by_time(keys: list[str], code: list, value: list, time: list) -> dict:
    """{wall time or None: {key: value}} for the points of one step."""
    out: dict = {}
    for c, v, t in zip(code, value, time, strict=True):
        out.setdefault(None if t != t else t, {})[keys[c]] = v  # t != t: NaN, not known
    return out


def summary(done: list[Imported]) -> str:
    """Per run: where it is, its keys, points, steps and stages, and what was left out."""
    lines = [f"imported {len(done)} run{'' if len(done) == 1 else 's'}:"]
    for d in done:
        if d.run_id is not None:
            where = f"run {d.run_id}: {d.url}"
        else:
            where = f"offline, in {d.spool} (upload it with: python -m trainers sync {d.spool})"
        if d.run_id is not None and d.spool is not None:
            where += f" (points also waited in {d.spool}: python -m trainers sync sends any left)"
        keys = sorted(d.keys)
        shown = ", ".join(keys[:6]) + (", ..." if len(d.keys) > 6 else "")
        lines += [
            f"{d.name}: {where}",
            f"  {_count(len(keys), 'key')} ({shown}), {_count(d.points, 'point')}, "
            f"steps {d.steps[0]}..{d.steps[1]}",
            "  stages: " + ", ".join(f"{name} {a}..{b}" for name, a, b in d.stages),
        ]  # fmt: skip
        left = [f"stage {m.name!r} (from step {m.step}): no points, not created" for m in d.empty]
        if d.skipped:
            left.append(_count(d.skipped, "empty or non-finite value"))
        if d.replaced:
            left.append(f"{_count(d.replaced, 'value')} given again later for the same key and "
                        "step (the later one is stored)")  # fmt: skip
        if left:
            lines.append("  not stored: " + "; ".join(left))
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"
