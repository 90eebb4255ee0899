"""Shared storage (runs/storage.py, runs/services/stored_files.py) against a local folder and
a real S3-compatible server: moto's server mode on a free port, reached through s3fs.

The last test is two machines: a worker with data dir A trains until killed mid-stage, a
worker with data dir B resumes from the checkpoint A stored and finishes, then trains a fork
from the fork's own copy in the store."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from io import BytesIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError

from runs.storage import MANIFEST, Store, StoreError, configured_store
from tests import factories as f
from tests.servers import free_port
from tests.workers import ROOT


@pytest.fixture(scope="module")
def moto():
    """A moto S3 server on a free port and one bucket: (bucket, fsspec options)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.2)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "test", "secret": "test"}
    bucket = f"sw-{uuid.uuid4().hex[:10]}"
    Store(f"s3://{bucket}", options).fs.mkdir(bucket)
    yield bucket, options
    proc.terminate()
    proc.wait(timeout=30)


def _url(moto, kind: str, tmp_path: Path) -> tuple[str, dict]:
    """A fresh store root of ``kind`` ("local" or "s3") and its options."""
    if kind == "local":
        return str(tmp_path / "store"), {}
    bucket, options = moto
    return f"s3://{bucket}/{uuid.uuid4().hex[:8]}", options


@pytest.fixture(params=["local", "s3"])
def store(request, moto, tmp_path) -> Store:
    return Store(*_url(moto, request.param, tmp_path))


@pytest.fixture
def shared(moto, settings, tmp_path) -> Store:
    """STAGEWISE_STORAGE_URL set to a fresh prefix of the moto bucket, for this process."""
    bucket, options = moto
    settings.STAGEWISE_STORAGE_URL = f"s3://{bucket}/{uuid.uuid4().hex[:8]}"
    settings.STAGEWISE_STORAGE_OPTIONS = json.dumps(options)
    return configured_store()


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _keys(store: Store, key: str = "") -> set[str]:
    """Every stored file under ``key``, relative to the store's root."""
    root = store.path("x")[:-1]
    return {p.removeprefix(root) for p in store.fs.find(store.path(key) if key else store.root)}


def _stored_checkpoints(store: Store, run) -> set[str]:
    """The run's checkpoint folders in the store; each must be complete (have a manifest)."""
    from runs.selectors.run_files import run_dir

    keys = _keys(store, f"runs/{run_dir(run).name}/checkpoints")
    names = {k.split("/")[3] for k in keys}
    assert {
        n for n in names if f"runs/{run_dir(run).name}/checkpoints/{n}/{MANIFEST}" not in keys
    } == set()
    return names


# ------------------------------------------------------------------ the interface


def test_a_directory_round_trips_and_only_its_manifest_files_come_back(store, tmp_path):
    src = _folder(tmp_path / "src", {"meta.json": b"{}", "model/w.bin": b"w" * 5000})
    assert store.put_dir(src, "runs/1/checkpoints/step-1") == {"meta.json": 2, "model/w.bin": 5000}
    # a stray file written beside it later (a re-upload under way) is not part of it
    store.fs.pipe_file(store.path("runs/1/checkpoints/step-1/stray.bin"), b"s")
    out = tmp_path / "b" / "step-1"
    assert store.get_dir("runs/1/checkpoints/step-1", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "meta.json",
        "model/w.bin",
    ]
    assert (out / "model/w.bin").read_bytes() == b"w" * 5000
    assert not list(out.parent.glob(".fetch-*"))


def test_a_directory_without_its_manifest_is_not_there(store, tmp_path):
    # files uploaded, manifest not yet written: a half upload is never read
    store.fs.pipe_file(store.path("k/step-2/meta.json"), b"{}")
    assert store.dir_files("k/step-2") is None
    assert not store.get_dir("k/step-2", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_differs_from_the_manifest_is_refused(store, tmp_path):
    store.put_dir(_folder(tmp_path / "src", {"state.pt": b"s" * 100}), "k/step-3")
    store.fs.pipe_file(store.path("k/step-3/state.pt"), b"cut")
    with pytest.raises(StoreError, match="size differs"):
        store.get_dir("k/step-3", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_copy_and_delete_a_directory(store, tmp_path):
    store.put_dir(_folder(tmp_path / "src", {"a": b"1", "m/b": b"22"}), "runs/1/c/step-4")
    assert store.copy_dir("runs/1/c/step-4", "runs/2/c/step-4")
    assert not store.copy_dir("runs/1/c/missing", "runs/2/c/missing")
    store.delete("runs/1")
    assert store.dir_files("runs/1/c/step-4") is None
    assert _keys(store, "runs/1") == set()
    assert store.dir_files("runs/2/c/step-4") == {"a": 1, "m/b": 2}
    store.delete("runs/1/c/never-there")  # not an error


def test_a_file_round_trips_without_leftover_keys(store, tmp_path):
    src = _folder(tmp_path, {"v1.jsonl": b'{"text": "hi"}\n'}) / "v1.jsonl"
    store.put_file(src, "uploads/datasets/1/2/v1.jsonl")
    assert _keys(store, "uploads") == {"uploads/datasets/1/2/v1.jsonl"}
    assert store.has_file("uploads/datasets/1/2/v1.jsonl")
    store.get_file("uploads/datasets/1/2/v1.jsonl", tmp_path / "got" / "v1.jsonl")
    assert (tmp_path / "got" / "v1.jsonl").read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.get_file("uploads/none.jsonl", tmp_path / "got" / "none.jsonl")
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["v1.jsonl"]


def test_no_url_means_no_store_and_bad_options_name_the_variable(settings):
    settings.STAGEWISE_STORAGE_URL = ""
    assert configured_store() is None
    settings.STAGEWISE_STORAGE_URL = "s3://bucket/prefix"
    settings.STAGEWISE_STORAGE_OPTIONS = "{endpoint_url: x}"
    with pytest.raises(ImproperlyConfigured, match="STAGEWISE_STORAGE_OPTIONS is not JSON"):
        configured_store()
    settings.STAGEWISE_STORAGE_OPTIONS = '["a"]'
    with pytest.raises(ImproperlyConfigured, match="must be a JSON object"):
        configured_store()


# ------------------------------------------------------------------ checkpoints and uploads


def _engine_checkpoint(root: Path, step: int, stage_end: bool = False) -> Path:
    """A folder shaped like the engine's (trainers/checkpoints.py) at ``step``."""
    meta = {"step": step, "stage_index": 0, "stage_end": stage_end, "plan": "p"}
    files = {"meta.json": json.dumps(meta).encode(), "model/config.json": b"{}"}
    return _folder(root / "checkpoints" / f"step-{step:08d}", files)


@pytest.mark.django_db
def test_checkpoints_are_stored_and_pruned_by_keep_last(shared, django_capture_on_commit_callbacks):
    from runs.models import Checkpoint
    from runs.selectors.run_files import run_dir
    from runs.services.stages import checkpoint_record
    from runs.services.stored_files import checkpoint_key, checkpoint_publish

    stage = f.StageRunFactory(run=f.RunFactory(plan={"keep_last": 2}))
    run = stage.run
    for step, end in [(10, False), (20, False), (30, True), (40, False), (50, False)]:
        path = _engine_checkpoint(run_dir(run), step, end)
        checkpoint_publish(run=run, path=str(path))
        with django_capture_on_commit_callbacks(execute=True):
            checkpoint_record(stage_run=stage, path=str(path), step=step, stage_end=end)
    # every stage end, plus the newest keep_last others, whatever is on this disk
    rows = sorted(Checkpoint.objects.filter(run=run).values_list("step", flat=True))
    assert rows == [30, 40, 50]
    assert _stored_checkpoints(shared, run) == {f"step-{s:08d}" for s in rows}
    assert shared.dir_files(checkpoint_key(run, "step-00000050")) == {
        "meta.json": len(
            json.dumps({"step": 50, "stage_index": 0, "stage_end": False, "plan": "p"})
        ),
        "model/config.json": 2,
    }


@pytest.mark.django_db
def test_folders_a_killed_worker_left_in_the_store_are_deleted_before_the_next_stage(shared):
    from runs.selectors.run_files import run_dir
    from runs.services.stored_files import checkpoint_key, checkpoints_unstore_unindexed

    parent = f.StageRunFactory()
    start = _engine_checkpoint(run_dir(parent.run), 20, stage_end=True)
    shared.put_dir(start, checkpoint_key(parent.run, start.name))
    fork = f.StageRunFactory(
        run=f.RunFactory(
            parent=parent.run,
            fork_checkpoint=f.CheckpointFactory(stage_run=parent, step=20, path=str(start)),
        )
    )
    run = fork.run
    shared.copy_dir(checkpoint_key(parent.run, start.name), checkpoint_key(run, start.name))
    kept = _engine_checkpoint(run_dir(run), 30)
    shared.put_dir(kept, checkpoint_key(run, kept.name))
    f.CheckpointFactory(stage_run=fork, step=30, path=str(kept))
    # killed mid-upload (no manifest), and killed mid-delete of a pruned one (row gone)
    shared.fs.pipe_file(shared.path(f"{checkpoint_key(run, 'step-00000040')}/meta.json"), b"{}")
    gone = _engine_checkpoint(run_dir(run), 10)
    shared.put_dir(gone, checkpoint_key(run, gone.name))
    assert checkpoints_unstore_unindexed(run) == ["step-00000010", "step-00000040"]
    assert _stored_checkpoints(shared, run) == {"step-00000020", "step-00000030"}
    assert checkpoints_unstore_unindexed(run) == []


@pytest.mark.django_db
def test_a_fork_copies_the_checkpoint_inside_the_store(shared, settings, tmp_path):
    from runs.selectors.run_files import run_dir
    from runs.services.stored_files import (
        checkpoint_available,
        checkpoint_fork_copy,
        checkpoint_key,
        checkpoint_publish,
        checkpoints_fetch_for_stage,
    )

    parent = f.StageRunFactory()
    path = _engine_checkpoint(run_dir(parent.run), 40, stage_end=True)
    checkpoint_publish(run=parent.run, path=str(path))
    ckpt = f.CheckpointFactory(stage_run=parent, step=40, path=str(path), stage_end=True)
    settings.STAGEWISE_DATA_DIR = tmp_path / "machine-b"  # the parent's files are not here
    assert not run_dir(parent.run).exists() and checkpoint_available(ckpt)
    fork = f.RunFactory(parent=parent.run, fork_checkpoint=ckpt)
    checkpoint_fork_copy(checkpoint=ckpt, run=fork)
    assert shared.dir_files(checkpoint_key(fork, "step-00000040")) is not None
    checkpoints_fetch_for_stage(fork)  # the fork's worker, on machine B
    assert (run_dir(fork) / "checkpoints/step-00000040/model/config.json").is_file()
    shared.delete(checkpoint_key(parent.run, "step-00000040"))
    assert not checkpoint_available(ckpt)


@pytest.mark.django_db
def test_a_checkpoint_a_plan_reads_is_checked_in_the_store_and_fetched_by_the_worker(
    shared, settings, tmp_path
):
    from runs.selectors.run_files import run_dir
    from runs.services.data_access import plan_for_engine, plan_reads
    from runs.services.stored_files import checkpoint_publish
    from tests.runs.test_data_access import tiny_plan
    from trainers.plan import validate_plan

    parent = f.StageRunFactory()
    path = _engine_checkpoint(run_dir(parent.run), 30, stage_end=True)
    checkpoint_publish(run=parent.run, path=str(path))
    f.CheckpointFactory(stage_run=parent, step=30, path=str(path), stage_end=True)
    settings.STAGEWISE_DATA_DIR = tmp_path / "machine-b"
    data = tiny_plan(path=f"run:{parent.run_id}@30")
    plan = validate_plan(data, check_files=False)
    fetched = run_dir(parent.run) / "checkpoints" / "step-00000030" / "model"
    plan_reads(plan, team=parent.run.team)  # the web server: checked in the store, not fetched
    assert not fetched.exists()
    resolved = plan_for_engine(plan, data, team=parent.run.team)  # a worker on machine B
    assert resolved["model"]["path"] == str(fetched.resolve())
    assert (fetched / "config.json").is_file()
    shared.delete(f"runs/{run_dir(parent.run).name}")
    shutil.rmtree(fetched.parent)
    with pytest.raises(ValidationError, match="is gone"):
        plan_reads(plan, team=parent.run.team)


class _Upload(BytesIO):
    def chunks(self):
        yield self.getvalue()


@pytest.mark.django_db
def test_an_upload_is_stored_and_fetched_on_another_machine(shared, settings, tmp_path):
    from runs.services.data_access import plan_for_engine
    from runs.services.datasets import dataset_preview, dataset_version_create
    from runs.services.stored_files import dataset_file, dataset_key
    from trainers.plan import validate_plan

    team = f.TeamFactory()
    settings.MEDIA_ROOT = tmp_path / "a-uploads"
    body = b"".join(b'{"text": "record %d"}\n' % i for i in range(30))
    version, _ = dataset_version_create(
        team=team, name="notes", upload=_Upload(body), filename="n.jsonl"
    )
    assert shared.has_file(dataset_key(version))
    settings.MEDIA_ROOT = tmp_path / "b-uploads"  # a worker on another machine
    Path(version.storage_path).unlink()  # nor is it where it was uploaded
    local = dataset_file(version)
    assert local.is_relative_to(tmp_path / "b-uploads") and local.read_bytes() == body
    assert dataset_preview(version, limit=2) == [
        json.dumps({"text": "record 0"}, indent=1),
        json.dumps({"text": "record 1"}, indent=1),
    ]
    data = {
        "name": "p",
        "stages": [
            {
                "name": "s",
                "objective": "causal_lm",
                "data": [{"source": "dataset:notes"}],
                "steps": 5,
            }
        ],
    }
    resolved = plan_for_engine(validate_plan(data, check_files=False), data, team=team)
    assert resolved["stages"][0]["data"][0]["source"] == f"file:{local.resolve()}"


@pytest.mark.django_db
def test_deleting_a_run_or_a_dataset_deletes_its_files_in_the_store(
    shared, settings, tmp_path, django_capture_on_commit_callbacks
):
    from django.db import transaction
    from django.utils import timezone

    from runs.selectors.run_files import run_dir
    from runs.services.datasets import dataset_version_create
    from runs.services.datasets_api import dataset_delete
    from runs.services.runs_edit import run_delete
    from runs.services.stored_files import checkpoint_publish, dataset_key

    settings.MEDIA_ROOT = tmp_path / "uploads"
    kept, gone = (f.RunFactory(state="succeeded", finished_at=timezone.now()) for _ in range(2))
    for run in (kept, gone):
        checkpoint_publish(run=run, path=str(_engine_checkpoint(run_dir(run), 10)))
    version, _ = dataset_version_create(
        team=f.TeamFactory(), name="d", upload=_Upload(b"some text\n"), filename="d.txt"
    )
    assert shared.has_file(dataset_key(version))
    with django_capture_on_commit_callbacks(execute=True):
        run_delete(run=gone)
        with transaction.atomic():
            dataset_delete(dataset=version.dataset)
    assert _keys(shared, f"runs/{run_dir(gone).name}") == set()
    assert _stored_checkpoints(shared, kept) == {"step-00000010"}
    assert not shared.has_file(dataset_key(version))


# ------------------------------------------------------------------ two machines, one store


def _points(run) -> set[tuple[str, int, float]]:
    from runs.models import MetricPoint

    rows = list(
        MetricPoint.objects.filter(series__run=run).values_list("series__key", "step", "value")
    )
    assert len(rows) == len({(k, s) for k, s, _ in rows}), "a (key, step) was stored twice"
    return set(rows)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_resumes_and_forks_on_another_machine_from_the_store(moto, settings, tmp_path):
    from runs.models import Checkpoint, Run, StageRun
    from runs.selectors.run_files import run_dir
    from runs.services.dispatch import requeue_expired
    from runs.services.runs import run_fork, run_submit
    from tests.runs.reduced_plan import reduced_lm_plan
    from tests.workers import Workers, wait_for

    bucket, options = moto
    url, opts = f"s3://{bucket}/{uuid.uuid4().hex[:8]}", json.dumps(options)
    settings.STAGEWISE_STORAGE_URL, settings.STAGEWISE_STORAGE_OPTIONS = url, opts
    settings.STAGEWISE_LEASE_SECONDS = 4
    store = configured_store()
    workers = Workers(tmp_path, lease_seconds=4)
    workers.env.update(STAGEWISE_STORAGE_URL=url, STAGEWISE_STORAGE_OPTIONS=opts)
    machine = {name: tmp_path / name for name in ("a", "b")}

    def start(name: str, label: str):
        workers.env["STAGEWISE_DATA_DIR"] = str(machine[name])
        return workers.start(queue.name, label)

    def local(name: str, r) -> Path:  # the run's checkpoints folder on that machine
        return machine[name] / "runs" / run_dir(r).name / "checkpoints"

    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    try:
        first = start("a", "on-a")
        run = run_submit(team=f.TeamFactory(), queue=queue, plan=reduced_lm_plan(), name="s")

        def mid_stage_two() -> bool:
            return (
                Checkpoint.objects.filter(run=run, step__gt=40, step__lt=80).exists()
                and (StageRun.objects.get(run=run, stage_index=1).last_step or 0) >= 55
            )

        wait_for(mid_stage_two, 300, "stage 2 to pass a checkpoint", workers.logs)
        workers.kill(first)
        resumed = Checkpoint.objects.filter(run=run).order_by("-step").first().step  # A's newest
        start("b", "on-b")
        wait_for(lambda: requeue_expired() > 0, 30, "the lease to expire", workers.logs)
        wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 300, "the run", workers.logs)
        run.refresh_from_db()
        assert run.state == "succeeded", (run.error, workers.logs())
        assert run.stage_runs.get(stage_index=1).attempts == 2
        # B continued from what A stored: A's newest checkpoint, and A's stage end (which a
        # resumed stage starts from), fetched; B never trained stage 1 before that step.
        assert 40 < resumed < 80
        assert (
            f"stage 1 trains from step {resumed + 1}\n"
            in (tmp_path / "worker-on-b.log").read_text()
        )
        assert (local("b", run) / "step-00000040" / "model").is_dir()
        assert not (local("a", run) / "step-00000100").exists()
        rows = set(Checkpoint.objects.filter(run=run).values_list("step", flat=True))
        assert {40, 80, 100} <= rows
        assert _stored_checkpoints(store, run) == {f"step-{s:08d}" for s in rows}
        parent_points = _points(run)

        # A fork from the end of stage 2 (made inside the store, where B's copy of the
        # parent's files is not looked at) starts from the store's copy and repeats the parent.
        fork = run_fork(checkpoint=Checkpoint.objects.get(run=run, step=80))
        wait_for(lambda: Run.objects.get(pk=fork.pk).is_terminal, 300, "the fork", workers.logs)
        fork.refresh_from_db()
        assert fork.state == "succeeded", (fork.error, workers.logs())
        forked = _points(fork)
        assert forked <= parent_points
        assert {(k, s) for k, s, _ in forked} >= {(k, s) for k, s, _ in parent_points if s > 80}
        assert (local("b", fork) / "step-00000080" / "model").is_dir()  # fetched
        assert (local("b", fork) / "step-00000100").is_dir()
        fork_rows = Checkpoint.objects.filter(run=fork).values_list("step", flat=True)
        assert {f"step-{s:08d}" for s in fork_rows} | {"step-00000080"} == _stored_checkpoints(
            store, fork
        )
    finally:
        workers.stop_all()
