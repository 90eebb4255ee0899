"""SIGTERM to a worker that trains a stage: it checkpoints at the next step and gives the
stage back, and a second worker continues from that step at once, long before the lease
would expire, without training any step twice."""

from __future__ import annotations

import signal
import uuid

import pytest

from runs.models import MetricPoint, Run, StageRun, WorkerLease
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan
from tests.workers import Workers, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
LEASE_SECONDS = 120  # far beyond the 10 s allowed: only the graceful path can be that fast


@pytest.fixture
def workers(tmp_path, settings):
    settings.STAGEWISE_LEASE_SECONDS = LEASE_SECONDS
    w = Workers(tmp_path, lease_seconds=LEASE_SECONDS)
    yield w
    w.stop_all()


def _plan() -> dict:
    from runs.services.plans import apply_overrides

    return apply_overrides(reduced_lm_plan(), {"stages.1.steps": 200})


def test_sigterm_checkpoints_requeues_and_the_next_worker_continues(workers, tmp_path):
    team = f.TeamFactory()
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    procs = [workers.start(queue.name, name) for name in ("a", "b")]
    for name in ("a", "b"):
        ready = lambda n=name: "ready." in (tmp_path / f"worker-{n}.log").read_text()  # noqa: E731
        wait_for(ready, 120, f"worker {name} to be ready", workers.logs)
    run = run_submit(team=team, queue=queue, plan=_plan(), name="graceful")
    stage2 = lambda: StageRun.objects.get(run=run, stage_index=1)  # noqa: E731
    wait_for(lambda: (stage2().last_step or 0) >= 60, 300, "stage 2 to train", workers.logs)
    holder = WorkerLease.objects.get(stage_run=stage2()).worker_id
    leaving = next(p for p in procs if holder.endswith(f":{p.pid}"))
    name = "ab"[procs.index(leaving)]

    assert stage2().attempts == 1
    leaving.send_signal(signal.SIGTERM)
    # continued by the other worker within 10 s (the lease would hold it for 120 s)
    wait_for(lambda: stage2().attempts == 2, 10, "the next worker to take over", workers.logs)
    wait_for(lambda: leaving.poll() is not None, 30, "the worker to exit", workers.logs)
    assert leaving.returncode == 0  # a warm shutdown, not a crash

    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 300, "the run", workers.logs)
    run.refresh_from_db()
    assert run.state == "succeeded", (run.error, workers.logs())
    log = (tmp_path / f"worker-{name}.log").read_text()
    preempted_at = int(log.split("preempted at step ")[1].split()[0])
    assert 60 <= preempted_at < 240
    # the other worker continued from exactly there: no step trained twice
    other = (tmp_path / f"worker-{'ba'[procs.index(leaving)]}.log").read_text()
    assert f"stage 1 trains from step {preempted_at + 1}" in other, other[-3000:]
    losses = list(
        MetricPoint.objects.filter(series__run=run, series__key="train/loss").values_list(
            "step", flat=True
        )
    )
    assert sorted(losses) == list(range(1, 261))  # every step once
