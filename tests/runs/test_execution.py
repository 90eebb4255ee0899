"""Real workers on the embedded Postgres and Redis execute real (tiny) training."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runs.models import Checkpoint, MetricPoint, Run, StageRun
from runs.services.dispatch import requeue_expired
from runs.services.runs import run_fork, run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan
from tests.workers import ROOT, Workers, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory) -> set[tuple[str, int, float]]:
    """The same plan and seed through the CLI, without any server."""
    out = tmp_path_factory.mktemp("cli")
    plan_path = out / "plan.json"
    plan_path.write_text(json.dumps(reduced_lm_plan()))
    subprocess.run(
        [sys.executable, "-m", "trainers", "run", str(plan_path), "--out", str(out / "run")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return {(r["key"], r["step"], r["value"]) for r in rows}


@pytest.fixture
def workers(tmp_path, settings):
    settings.STAGEWISE_LEASE_SECONDS = 4
    w = Workers(tmp_path, lease_seconds=4)
    yield w
    w.stop_all()


def _stored(run: Run) -> list[tuple[str, int, float]]:
    return list(
        MetricPoint.objects.filter(series__run=run).values_list("series__key", "step", "value")
    )


def _submit(queue, team) -> Run:
    return run_submit(team=team, queue=queue, plan=reduced_lm_plan(), name="it")


def test_submitted_pipeline_runs_through_all_stages_and_matches_cli(workers, cli_reference):
    team = f.TeamFactory()
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    workers.start(queue.name, "w1")
    run = _submit(queue, team)
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 300, "the run to finish", workers.logs)
    run.refresh_from_db()
    assert run.state == "succeeded", (run.error, workers.logs())
    assert list(run.stage_runs.values_list("state", flat=True)) == ["succeeded"] * 3
    stored = _stored(run)
    assert len(stored) == len(set((k, s) for k, s, _ in stored)), "a (key, step) was stored twice"
    assert set(stored) == cli_reference
    # every stage end has a checkpoint row pointing at files on disk
    ends = Checkpoint.objects.filter(run=run, stage_end=True)
    assert sorted(ends.values_list("step", flat=True)) == [40, 80, 100]
    assert all(Path(c.path).is_dir() for c in ends)

    # A fork from the end of stage 1 with the same later stages repeats the parent exactly.
    fork = run_fork(checkpoint=ends.get(step=40))
    assert [s.state for s in fork.stage_runs.order_by("stage_index")][0] == "skipped"
    wait_for(lambda: Run.objects.get(pk=fork.pk).is_terminal, 300, "the fork", workers.logs)
    fork.refresh_from_db()
    assert fork.state == "succeeded", (fork.error, workers.logs())
    assert fork.parent_id == run.pk
    forked = set(_stored(fork))
    assert forked <= cli_reference
    assert {(k, s) for k, s, _ in forked} >= {(k, s) for k, s, _ in cli_reference if s > 40}


def test_killed_worker_is_replaced_and_the_run_resumes_exactly(workers, cli_reference):
    team = f.TeamFactory()
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    first = workers.start(queue.name, "doomed")
    run = _submit(queue, team)

    def mid_stage_two() -> bool:
        return (
            Checkpoint.objects.filter(run=run, step__gt=40, step__lt=80).exists()
            and (StageRun.objects.get(run=run, stage_index=1).last_step or 0) >= 55
        )

    wait_for(mid_stage_two, 300, "stage 2 to pass a checkpoint", workers.logs)
    workers.kill(first)
    workers.start(queue.name, "rescuer")
    # The periodic job (celery beat in production) requeues the expired lease.
    wait_for(lambda: requeue_expired() > 0, 30, "the lease to expire", workers.logs)
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 300, "the run to finish", workers.logs)
    run.refresh_from_db()
    assert run.state == "succeeded", (run.error, workers.logs())
    stage2 = run.stage_runs.get(stage_index=1)
    assert stage2.attempts == 2
    # The run page's events lane: the lost worker's requeue, then the resume from the
    # checkpoint the rescuer started from (runs.selectors.run_events).
    from runs.selectors.run_events import run_event_list

    events = [e for e in run_event_list(run=run, forks=[]) if e.get("stage") == 1]
    kinds = {e["kind"]: e for e in events if e["kind"] in ("requeue", "resume")}
    assert kinds["requeue"]["attempt"] == 1 and kinds["resume"]["attempt"] == 2, events
    # (its step is the newest checkpoint still indexed before the requeue: pruned ones are
    # gone once the run ends, so it may be the stage start)
    assert 40 <= kinds["resume"]["step"] < 80, events
    stored = _stored(run)
    assert len(stored) == len({(k, s) for k, s, _ in stored}), "a (key, step) was stored twice"
    assert set(stored) == cli_reference


def test_cancel_stops_a_running_stage_within_seconds(workers):
    import time

    from runs.services.plans import apply_overrides
    from runs.services.runs import run_cancel

    team = f.TeamFactory()
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    workers.start(queue.name, "w1")
    plan = apply_overrides(reduced_lm_plan(), {"stages.0.steps": 5000})
    run = run_submit(team=team, queue=queue, plan=plan)
    stage = run.stage_runs.get(stage_index=0)
    wait_for(
        lambda: (StageRun.objects.get(pk=stage.pk).last_step or 0) >= 5,
        120,
        "training to start",
        workers.logs,
    )
    t0 = time.monotonic()
    run_cancel(run=run)
    wait_for(
        lambda: StageRun.objects.get(pk=stage.pk).state == "canceled", 10, "cancel", workers.logs
    )
    assert time.monotonic() - t0 < 10
    stage.refresh_from_db()
    assert stage.last_step < 5000
    assert Run.objects.get(pk=run.pk).state == "canceled"
    assert set(run.stage_runs.exclude(stage_index=0).values_list("state", flat=True)) == {
        "canceled"
    }
    from runs.models import WorkerLease

    assert not WorkerLease.objects.filter(stage_run=stage).exists()


def test_digits_analysis_served_equals_offline_analysis_of_cli_metrics(workers, tmp_path):
    from rest_framework.test import APIClient

    from runs.services.demo import EXAMPLES_DIR
    from tests.runs.analysis_offline import offline_analysis

    plan = json.loads((EXAMPLES_DIR / "digits_class_incremental.json").read_text())
    out = tmp_path / "cli"
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    subprocess.run(
        [sys.executable, "-m", "trainers", "run", str(tmp_path / "plan.json"), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    team = f.TeamFactory()
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team, role="viewer")
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    workers.start(queue.name, "w1")
    run = run_submit(team=team, queue=queue, plan=plan)
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 300, "the run to finish", workers.logs)
    assert Run.objects.get(pk=run.pk).state == "succeeded", workers.logs()

    client = APIClient()
    client.force_authenticate(user)
    served = client.get(f"/api/runs/{run.pk}/analysis/").json()
    expected = offline_analysis(rows, run.plan)
    for key, value in expected.items():
        assert served[key] == value, key
    gaps = served["stability_gaps"]
    assert len(gaps) == 4 * 5 and any(g["dropped"] for g in gaps)
    # class-incremental forgetting: the first task is worse at the end than after stage 0
    assert served["matrix"][-1][0] < served["matrix"][0][0]

    # The run page's gap table and matrix (the UI endpoint) show the same numbers.
    page = client.get(f"/api/ui/runs/{run.pk}/analysis/").json()
    acc_gaps = [
        {k: v for k, v in g.items() if k not in ("metric", "eval_set", "stage_after")}
        for g in page["gaps"]
        if g["metric"] == "acc"
    ]
    # only the tasks learned before each boundary: 4 + 3 + 2 + 1 pairs, rows for those
    # that dropped, the others counted per boundary
    old = [g for g in expected["stability_gaps"] if g["eval_index"] <= g["boundary_index"]]
    assert acc_gaps == [g for g in old if g["dropped"]]
    covered = sum(len(b["dropped"]) + b["without_drop"] for b in page["gap_boundaries"])
    assert covered == len(old) == 10
    (acc_matrix,) = [m for m in page["matrices"] if m["metric"] == "acc"]
    assert acc_matrix["eval_sets"] == served["eval_sets"]  # task0..task4 sort the same way
    assert acc_matrix["values"] == expected["matrix"]
