"""A stage with ``devices: N`` is dispatched only when an online worker on its queue offers N
devices (rows in the worker registry; no real worker needed), waits (and says why on the
queues page) until then without blocking the stages behind it, and a worker with fewer
devices that receives it gives it back."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import torch
from django.utils import timezone

from runs.execution import runner
from runs.execution.registry import local_devices
from runs.models import StageRun, Worker, WorkerLease, WorkerState
from runs.services.dispatch import dispatch, stage_give_back
from runs.services.plans import apply_overrides
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan
from trainers.checkpoints import load_checkpoint
from trainers.distributed import CPU_DEVICES_ENV

pytestmark = pytest.mark.django_db


def _queue(**kw):
    return f.QueueFactory(name=f"dev-{uuid.uuid4().hex[:8]}", **kw)


def _submit(team, queue, devices: int = 1):
    plan = apply_overrides(reduced_lm_plan(), {"stages.0.devices": devices})
    return run_submit(team=team, queue=queue, plan=plan)


def _worker(queue, devices: list[dict], state=WorkerState.ONLINE) -> Worker:
    now = timezone.now()
    return Worker.objects.create(
        name=f"w-{uuid.uuid4().hex[:8]}@host", host="host", pid=1, queues=[queue.name],
        devices=devices, state=state, started_at=now, heartbeat_at=now,
    )  # fmt: skip


def _cpu(count: int | None = None) -> dict:
    entry = {"kind": "cpu", "name": "2 cores", "memory_bytes": None}
    return entry if count is None else {**entry, "count": count}


def _state(run) -> str:
    return StageRun.objects.get(run=run, stage_index=0).state


def test_stage_needing_two_devices_waits_for_a_worker_that_offers_two(team):
    queue, other = _queue(max_concurrent=2), _queue()
    run = _submit(team, queue, devices=2)
    assert dispatch() == 0  # no worker at all
    _worker(queue, [_cpu()])  # a CPU worker counts as 1 device unless it says more
    _worker(queue, [_cpu(2)], state=WorkerState.LOST)
    _worker(queue, [_cpu(2)], state=WorkerState.STOPPED)
    _worker(other, [_cpu(4)])  # enough, but on another queue
    assert dispatch() == 0
    assert _state(run) == "queued"
    _worker(queue, [_cpu(2)])
    assert dispatch() == 1
    assert _state(run) == "running"


def test_gpus_count_one_device_each(team):
    queue = _queue()
    run = _submit(team, queue, devices=2)
    gpu = {"kind": "cuda", "name": "H100", "memory_bytes": 80 * 2**30}
    w = _worker(queue, [gpu])
    assert dispatch() == 0
    w.devices = [gpu, gpu]
    w.save()
    assert dispatch() == 1 and _state(run) == "running"


def test_a_waiting_big_stage_lets_the_stages_behind_it_start(team):
    queue = _queue(max_concurrent=1)
    big = _submit(team, queue, devices=2)  # first in line
    small = _submit(team, queue)  # one device: needs no registered worker (as before)
    assert dispatch() == 1
    assert (_state(big), _state(small)) == ("queued", "running")


def test_a_worker_with_too_few_devices_gives_the_stage_back(
    team, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setenv("STAGEWISE_DEVICE", "cpu")
    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)  # this process offers 1 device
    sent = []
    monkeypatch.setattr("runs.services.dispatch._send", lambda *a: sent.append(a))
    queue = _queue()
    run = _submit(team, queue, devices=2)
    _worker(queue, [_cpu(2)])  # the dispatcher believes a big worker will take it
    with django_capture_on_commit_callbacks(execute=True):
        dispatch()
    (stage_run_id, token, _), = sent  # fmt: skip
    assert runner.execute(stage_run_id, "not-the-token") == (
        "skipped: stage run is held by another worker or not runnable"
    )
    assert _state(run) == "running"  # a stale task changes nothing

    answer = runner.execute(stage_run_id, token)
    assert answer == "given back: the stage needs 2 devices, this worker has 1"
    sr = StageRun.objects.get(pk=stage_run_id)
    assert sr.state == "queued" and sr.started_at is None
    assert not WorkerLease.objects.filter(stage_run_id=stage_run_id).exists()
    assert not stage_give_back(stage_run_id=stage_run_id, token=token)  # only once
    assert dispatch() == 1  # and it is sent again


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine lists its GPUs")
def test_a_cpu_worker_advertises_cpu_devices(monkeypatch):
    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)
    assert [d["count"] for d in local_devices()] == [1]
    monkeypatch.setenv(CPU_DEVICES_ENV, "2")
    (entry,) = local_devices()
    assert entry["kind"] == "cpu" and entry["count"] == 2
    assert Worker(devices=[entry]).device_count == 2


def test_queues_page_says_why_the_stage_waits(client, user, team):
    client.force_login(user)
    queue = _queue()
    _submit(team, queue, devices=2)
    page = client.get("/queues/").content.decode()
    section = re.search(rf'data-queue="{queue.name}">(.*?)</section>', page, re.S).group(1)
    assert "needs 2 devices; no online worker consumes this queue" in section
    _worker(queue, [_cpu()])
    page = client.get("/queues/").content.decode()
    assert "needs 2 devices; the largest online worker on this queue has 1" in page


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_with_two_cpu_devices_runs_the_stage_on_two_ranks(tmp_path, settings):
    """A real worker (``STAGEWISE_CPU_DEVICES=2``, prefork pool as in production: its pool
    process is daemonic) announces 2 devices, gets the stage, and trains it on two gloo
    ranks: the run's points arrive once per step from rank 0."""
    from runs.models import Checkpoint, MetricPoint, Run
    from tests.trainers.helpers import EVALS, lm_plan
    from tests.workers import Workers, wait_for

    settings.STAGEWISE_LEASE_SECONDS = 4
    workers = Workers(tmp_path, lease_seconds=4)
    workers.env.update({CPU_DEVICES_ENV: "2", "STAGEWISE_TORCH_THREADS": "1"})
    queue, team = _queue(), f.TeamFactory()
    plan = lm_plan(steps=(20, 1, 1), eval_sets=[EVALS[0]])
    plan["stages"] = plan["stages"][:1]
    plan["stages"][0].update(devices=2, batch_size=8, eval_sets=["prose"], eval_interval=10)
    try:
        workers.start(queue.name, f"dev-{uuid.uuid4().hex[:6]}", pool="prefork")
        wait_for(lambda: Worker.objects.filter(queues__contains=[queue.name]).exists(), 60,
                 "the worker to announce itself", workers.logs)  # fmt: skip
        assert Worker.objects.get(queues__contains=[queue.name]).device_count == 2
        run = run_submit(team=team, queue=queue, plan=plan)
        wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 240, "the run", workers.logs)
    finally:
        workers.stop_all()
    run.refresh_from_db()
    assert run.state == "succeeded", (run.error, workers.logs())
    points = MetricPoint.objects.filter(series__run=run, series__key="train/loss")
    assert sorted(points.values_list("step", flat=True)) == list(range(1, 21))
    end = Checkpoint.objects.get(run=run, step=20, stage_end=True)
    assert len(load_checkpoint(Path(end.path)).state["rng_ranks"]) == 2  # two ranks trained
