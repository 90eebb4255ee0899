"""Command line: validate / run / schema. Bad input gives one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from trainers.events import Point, TrainingDiverged
from trainers.plan import Plan, PlanError, validate_plan
from trainers.sinks import BaseSink, JsonlSink, MultiSink

TOKEN_ENV = "STAGEWISE_TOKEN"  # API token for --report-to


def load_plan(path: str) -> Plan:
    p = Path(path)
    if not p.is_file():
        raise PlanError([{"path": "(file)", "message": f"plan file not found: {path}"}])
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PlanError([{"path": "(file)", "message": f"invalid JSON: {e}"}]) from None
    return validate_plan(data)


def cap_steps(plan: Plan, n: int) -> Plan:
    """The same plan with every stage budget cut to at most n steps (quick runs)."""
    data = plan.model_dump(mode="json")
    for st, spec in zip(data["stages"], plan.stages, strict=True):
        st["steps"], st["tokens"] = min(spec.num_steps, n), None
    return validate_plan(data)


class ProgressSink(BaseSink):
    """tqdm bar on stderr: stage, step, loss, ETA. Updated per point batch."""

    def __init__(self, plan: Plan):
        from tqdm import tqdm

        self.plan = plan
        self.bar = tqdm(total=plan.stage_bounds()[-1][1], unit="step", file=sys.stderr)
        self.loss: float | None = None

    def stage_started(self, stage_index: int, start_step: int) -> None:
        self.bar.n = start_step
        self.bar.set_description(f"stage {stage_index} {self.plan.stages[stage_index].name}")
        self.bar.refresh()

    def points(self, points: list[Point]) -> None:
        steps = [p.step for p in points]
        for p in points:
            if p.key == "train/loss":
                self.loss = p.value
        self.bar.n = max(self.bar.n, max(steps))
        if self.loss is not None:
            self.bar.set_postfix(loss=f"{self.loss:.3f}", refresh=False)
        self.bar.refresh()

    def run_finished(self) -> None:
        self.bar.close()

    def error(self, message: str, traceback: str) -> None:
        self.bar.close()


def summary_table(plan: Plan, results) -> str:
    rows = [("stage", "steps", "train loss", "evals")]
    for r in results:
        name = plan.stages[r.stage_index].name
        ev = "  ".join(
            f"{k.removeprefix('eval/')}={v:.3f}"
            for k, v in sorted(r.evals.items())
            if not k.endswith("/ppl")
        )
        loss = "-" if r.final_train_loss is None else f"{r.final_train_loss:.4f}"
        rows.append((f"{r.stage_index} {name}", f"{r.start_step + 1}-{r.end_step}", loss, ev))
    w = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d}" for a, b, c, d in rows)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainers", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a plan file")
    v.add_argument("plan")
    r = sub.add_parser("run", help="run all stages of a plan")
    r.add_argument("plan")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    r.add_argument("--max-steps-per-stage", type=int, default=None, metavar="N")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument(
        "--report-to",
        metavar="URL",
        help="stream stages and metrics to a Stagewise server as an external run "
        f"(API token from ${TOKEN_ENV})",
    )
    r.add_argument("--team", help="with --report-to: the team's slug (default: your first team)")
    r.add_argument("--name", help="with --report-to: the run's name (default: the plan's name)")
    r.add_argument(
        "--run-id",
        type=int,
        metavar="N",
        help="with --report-to --resume: the external run to continue "
        "(default: the one recorded in DIR/stagewise.json)",
    )
    sub.add_parser("schema", help="print the plan JSON schema")
    from trainers.cli_log import add_commands

    add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return args.handler(args)

    if args.cmd == "schema":
        from trainers.plan import plan_schema

        print(json.dumps(plan_schema(), indent=2))
        return 0
    try:
        plan = load_plan(args.plan)
        if args.cmd == "validate":
            print("ok")
            return 0
        if args.max_steps_per_stage is not None:
            if args.max_steps_per_stage < 1:
                raise PlanError([{"path": "--max-steps-per-stage", "message": "must be >= 1"}])
            plan = cap_steps(plan, args.max_steps_per_stage)
    except PlanError as e:
        for err in e.errors:
            print(f"{err['path']}: {err['message']}", file=sys.stderr)
        return 2
    report = None
    if args.report_to:
        report = _report_settings(args)
        if isinstance(report, str):
            print(f"error: {report}", file=sys.stderr)
            return 2
    if args.run_id is not None and report is None:
        print("error: --run-id needs --report-to and --resume", file=sys.stderr)
        return 2
    return _run(plan, Path(args.out), args.resume, not args.no_progress, report)


def _report_settings(args) -> dict | str:
    """What --report-to needs, or the reason it cannot be used."""
    url = args.report_to
    if not url.startswith(("http://", "https://")):
        return f"--report-to: not an http(s) URL: {url!r}"
    if args.run_id is not None and not args.resume:
        return "--run-id continues an earlier run: it needs --resume"
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return f"--report-to needs an API token in ${TOKEN_ENV} (Stagewise admin, Auth Token)"
    return {"url": url.rstrip("/"), "token": token, "team": args.team, "name": args.name,
            "run_id": args.run_id}  # fmt: skip


def _refused(e, url: str) -> int:
    """Print why the server refused a request before training; the exit code (2)."""
    if e.status == 400:
        print(f"error: {url} refused the plan:", file=sys.stderr)
        for line in e.reasons():
            print(line, file=sys.stderr)
    elif e.status in (401, 403):
        print(f"error: {url} refused the request (HTTP {e.status}): "
              f"{'; '.join(e.reasons())}", file=sys.stderr)  # fmt: skip
    else:
        print(f"error: {e}", file=sys.stderr)
    return 2


def _create_remote_run(plan: Plan, report: dict, out: Path):
    """Create the external run and its sink, or print why not and return the exit code.
    The run is recorded in ``out/stagewise.json`` for ``--resume``."""
    from trainers.remote import (
        ApiError,
        StagewiseError,
        StagewiseSink,
        create_external_run,
        run_page_url,
        save_run_ref,
    )

    url = report["url"]
    try:
        run = create_external_run(
            url,
            report["token"],
            plan.model_dump(mode="json"),
            name=report["name"],
            team=report["team"],
        )
    except ApiError as e:
        return _refused(e, url)
    except StagewiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sink = StagewiseSink(url, report["token"], run["id"])
    ends = [st["end_step"] for st in run.get("stages", [])]
    if ends != [end for _, end in plan.stage_bounds()]:
        message = f"the server's stage ends {ends} differ from this plan's; not training"
        sink.error(message, "")
        print(f"error: {message}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    save_run_ref(out, url, run["id"])
    print(f"Stagewise run {run['id']}: {run_page_url(url, run['id'])}", flush=True)
    return sink


def _local_rows(out: Path, stage_index: int, last_step: int) -> list[Point]:
    """The points of one stage up to ``last_step`` in ``out/metrics.jsonl``."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed writer
        if row["stage"] == stage_index and row["step"] <= last_step:
            points.append(Point(row["key"], row["step"], row["value"], row["time"], row["stage"]))
    return points


def _recorded_run_id(report: dict, out: Path) -> int:
    """The run to continue: ``--run-id``, or the one ``out/stagewise.json`` records for this
    URL; raises _Refusal (exit 2) when there is none."""
    from trainers.remote import RUN_FILE, load_run_ref

    if report["run_id"] is not None:
        return report["run_id"]
    url, ref = report["url"], load_run_ref(out)
    if ref is None:
        raise _Refusal(f"--resume --report-to: no Stagewise run recorded in {out / RUN_FILE} "
                       "(pass --run-id N, or run without --resume)")  # fmt: skip
    if ref["url"] != url:
        raise _Refusal(f"{out / RUN_FILE} records run {ref['run_id']} on {ref['url']}, not on "
                       f"{url} (pass --run-id N to continue a run there)")  # fmt: skip
    return ref["run_id"]


class _Refusal(Exception):
    """Not training: ``str`` is the one-line reason, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _resumable_stages(plan: Plan, report: dict, run_id: int) -> list[dict]:
    """The run's stages as the server shows them, after checking it may be continued with
    this plan; raises _Refusal or the API's errors."""
    from trainers.remote import get_run

    run = get_run(report["url"], report["token"], run_id)
    if not run.get("external"):
        raise _Refusal(f"run {run_id} on {report['url']} is not an external run")
    if run["state"] != "running":
        raise _Refusal(f"run {run_id} is already {run['state']} in Stagewise; not training "
                       "(a new run needs a new --out)", code=1)  # fmt: skip
    stages = sorted(run.get("stages", []), key=lambda st: st["stage_index"])
    ends = [st["end_step"] for st in stages]
    if ends != [end for _, end in plan.stage_bounds()]:
        raise _Refusal(f"run {run_id}'s stage ends {ends} differ from this plan's; not training")
    return stages


def _resend_local(sink, plan: Plan, stages: list[dict], first_open: int, out: Path) -> None:
    """Send again what the server may have missed: for every stage not shown as succeeded,
    the local points up to the checkpoint training resumes from, and report a stage that
    finished here as succeeded."""
    from trainers.checkpoints import list_checkpoints

    bounds, ckpts = plan.stage_bounds(), list_checkpoints(out)
    for st in stages[first_open:]:
        i, (start, end) = st["stage_index"], bounds[st["stage_index"]]
        finished = any(c.stage_index == i and c.stage_end and c.step == end for c in ckpts)
        inside = [c.step for c in ckpts if c.stage_index == i and start < c.step <= end]
        if not finished and not inside:
            return  # training starts this stage afresh
        if finished:
            sink.stage_started(i, start)
        sink.points(_local_rows(out, i, end if finished else max(inside)))
        sink.flush()
        if not finished:
            return  # training resumes inside this stage
        sink.stage_finished(i, end)


def _resume_remote_run(plan: Plan, report: dict, out: Path):
    """Continue the external run of ``out`` (or ``--run-id``): its sink, or print why not and
    return the exit code (2: no run to continue or a refused request; 1: the run ended).

    Points sent before the previous process died may have been lost with its buffer, and a
    stage may have finished here after its last report, so those are sent first
    (``_resend_local``; the server stores each (key, step) once). The engine then re-emits
    everything after the checkpoint it resumes from."""
    from trainers.events import StageCanceled
    from trainers.remote import ApiError, StagewiseError, StagewiseSink, run_page_url, save_run_ref

    url = report["url"]
    try:
        run_id = _recorded_run_id(report, out)
        stages = _resumable_stages(plan, report, run_id)
    except _Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except ApiError as e:
        if e.status == 404:
            print(f"error: {url} has no run {run_id} (or not for this token)", file=sys.stderr)
            return 2
        return _refused(e, url)
    except StagewiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first_open = next((st["stage_index"] for st in stages
                       if st["state"] not in ("succeeded", "skipped")), 0)  # fmt: skip
    sink = StagewiseSink(url, report["token"], run_id, next_stage=first_open)
    try:
        _resend_local(sink, plan, stages, first_open, out)
    except (StageCanceled, StagewiseError) as e:
        sink.abandon()
        canceled = isinstance(e, StageCanceled)
        print(f"error: run {run_id} was canceled in Stagewise; not training" if canceled
              else f"error: {e}", file=sys.stderr)  # fmt: skip
        return 1
    save_run_ref(out, url, run_id)
    print(f"Stagewise run {run_id} (resumed): {run_page_url(url, run_id)}", flush=True)
    return sink


def _run(plan: Plan, out: Path, resume: bool, progress: bool, report: dict | None = None) -> int:
    from trainers.checkpoints import list_checkpoints
    from trainers.data.sources import DataError
    from trainers.engine import RunError, run_plan
    from trainers.events import StageCanceled
    from trainers.remote import StagewiseError

    if not resume and list_checkpoints(out):
        print(
            f"error: {out} already holds checkpoints: use --resume or a new --out", file=sys.stderr
        )
        return 1
    remote = None
    if report is not None:
        if resume:
            remote = _resume_remote_run(plan, report, out)
        else:
            remote = _create_remote_run(plan, report, out)
        if isinstance(remote, int):
            return remote
    out.mkdir(parents=True, exist_ok=True)
    sinks = [JsonlSink(out / "metrics.jsonl")]  # first: the local file gets every point
    if remote is not None:
        sinks.append(remote)
    if progress:
        sinks.append(ProgressSink(plan))
    t0 = time.time()
    try:
        result = run_plan(plan, out, MultiSink(*sinks), resume=resume, control=remote)
    except StageCanceled:
        if remote is not None and remote.canceled:
            print(f"\nstopped: run {remote.run_id} was canceled in Stagewise", file=sys.stderr)
            return 1
        print("\ninterrupted: continue with --resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if remote is not None:
            remote.report_canceled()
            print(f"\ninterrupted: run {remote.run_id} marked canceled in Stagewise",
                  file=sys.stderr)  # fmt: skip
            return 130
        print("\ninterrupted: continue with --resume", file=sys.stderr)
        return 130
    except Exception as e:
        if remote is not None:  # (again: a report the engine already sent changes nothing)
            remote.error(f"{type(e).__name__}: {e}", traceback.format_exc())
        expected = (RunError, DataError, FileNotFoundError, ValueError, StagewiseError)
        if isinstance(e, expected + (TrainingDiverged,)):
            print(f"\nerror: {e}", file=sys.stderr)
            return 1
        raise
    print(summary_table(plan, result.stages))
    print(f"done in {time.time() - t0:.1f}s; metrics in {out / 'metrics.jsonl'}")
    if remote is not None:
        from trainers.remote import run_page_url

        print(f"reported to {run_page_url(remote.base_url, remote.run_id)}")
    return 0
