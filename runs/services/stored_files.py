"""Checkpoints and dataset uploads in the shared store (``runs.storage``), when one is set.

Without a store (``STAGEWISE_STORAGE_URL`` unset) each function here does what the data dir
alone does: nothing is copied, a checkpoint's files are at ``Checkpoint.path``, an upload's
at ``DatasetVersion.storage_path``. With a store:

- a checkpoint is uploaded before it is indexed (``runs.execution.sink``), so every
  ``Checkpoint`` row is in the store; its local copy on any machine is at the same place
  under that machine's data dir (``checkpoint_dir``), fetched when a stage needs it;
- pruning follows the plan's ``keep_last`` over the run's rows (a worker may hold only some
  of them) and deletes the pruned ones in the store too;
- a fork's starting copy is made inside the store; a deleted run's files go with it;
- an upload is put in the store as its version is created and fetched where it is read.

Rows keep the writer's local path (``Checkpoint.path``, ``storage_path``); keys follow
from the run and the file names (``runs.storage`` describes the layout), the same on every
machine, so no row needs a second path.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from runs.models import Checkpoint, DatasetVersion, Run
from runs.selectors.run_files import run_dir
from runs.storage import configured_store
from trainers.plan import Plan

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"  # trainers.checkpoints.CKPT_DIR (not imported: it loads torch)
COMPLETE = "meta.json"  # written last by the engine, fetched as a whole: a complete copy


# ------------------------------------------------------------------ checkpoints


def run_key(run: Run) -> str:
    return f"runs/{run_dir(run).name}"


def checkpoint_key(run: Run, name: str) -> str:
    """The store key of the run's checkpoint folder ``name`` (``step-00000040``)."""
    return f"{run_key(run)}/{CKPT_DIR}/{name}"


def checkpoint_dir(ckpt: Checkpoint) -> Path:
    """Where the checkpoint's files are on this machine (with a store: where they are
    fetched to, under this machine's data dir)."""
    if configured_store() is None:
        return Path(ckpt.path)
    return run_dir(ckpt.run) / CKPT_DIR / Path(ckpt.path).name


def checkpoint_files(ckpt: Checkpoint) -> set[str] | None:
    """The relative paths of the checkpoint's files (here, else in the store); None when
    they are gone (pruned, deleted or moved)."""
    local = checkpoint_dir(ckpt)
    if local.is_dir():
        return {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    store = configured_store()
    files = store.dir_files(checkpoint_key(ckpt.run, local.name)) if store else None
    return None if files is None else set(files)


def checkpoint_publish(*, run: Run, path: str) -> None:
    """Upload the checkpoint the engine wrote at ``path`` to the store (none: nothing)."""
    store = configured_store()
    if store is not None:
        store.put_dir(Path(path), checkpoint_key(run, Path(path).name))


def checkpoint_fetch(ckpt: Checkpoint) -> Path:
    """The checkpoint's local folder, downloaded from the store first when it is not here.
    A checkpoint the store lacks stays missing: the checks that follow name it."""
    local = checkpoint_dir(ckpt)
    store = configured_store()
    if store is not None and not (local / COMPLETE).is_file():
        if store.get_dir(checkpoint_key(ckpt.run, local.name), local):
            log.info("fetched checkpoint %s of run %s from the store", ckpt.step, ckpt.run_id)
    return local


def checkpoints_fetch_for_stage(run: Run) -> None:
    """Before a stage starts on this worker: fetch what it continues from, the run's newest
    checkpoint (this stage's, to resume, or the previous stage's end) and its newest stage
    end (a resumed stage rebuilds its start from it), or else a fork's own starting copy.
    Every other checkpoint it reads is fetched as its plan is resolved
    (``runs.services.data_access.plan_for_engine``)."""
    store = configured_store()
    if store is None:
        return
    newest = run.checkpoints.order_by("-step").first()
    end = run.checkpoints.filter(stage_end=True).order_by("-step").first()
    for ckpt in {c.pk: c for c in (newest, end) if c is not None}.values():
        checkpoint_fetch(ckpt)
    if newest is None and run.fork_checkpoint_id:
        name = Path(run.fork_checkpoint.path).name
        local = run_dir(run) / CKPT_DIR / name
        if not (local / COMPLETE).is_file():
            store.get_dir(checkpoint_key(run, name), local)


def checkpoints_unstore_unindexed(run: Run) -> list[str]:
    """Before a stage starts: delete the run's checkpoint folders in the store that have no
    row (a worker killed while uploading one, or while deleting a pruned one, leaves its
    files behind). A fork's copied starting checkpoint is kept. Returns the names deleted."""
    store = configured_store()
    if store is None:
        return []
    keep = {Path(p).name for p in run.checkpoints.values_list("path", flat=True)}
    if run.fork_checkpoint_id:
        keep.add(Path(run.fork_checkpoint.path).name)
    prefix = store.path(f"{run_key(run)}/{CKPT_DIR}")
    try:
        names = {Path(p).name for p in store.fs.ls(prefix, detail=False, refresh=True)}
    except FileNotFoundError:
        return []
    dropped = sorted(names - keep)
    for name in dropped:
        store.delete(checkpoint_key(run, name))
    return dropped


def checkpoint_available(ckpt: Checkpoint) -> bool:
    """Whether the checkpoint's files still exist (here, or in the store)."""
    if configured_store() is None:
        return Path(ckpt.path).is_dir()
    return checkpoint_files(ckpt) is not None


def checkpoint_fork_copy(*, checkpoint: Checkpoint, run: Run) -> None:
    """Give the fork ``run`` its own copy of ``checkpoint`` to start from (the parent may
    prune its own): inside the store when one is set, else in the data dir."""
    name = Path(checkpoint.path).name
    store = configured_store()
    if store is None:
        shutil.copytree(checkpoint.path, run_dir(run) / CKPT_DIR / name)
    elif not store.copy_dir(checkpoint_key(checkpoint.run, name), checkpoint_key(run, name)):
        raise FileNotFoundError(f"checkpoint {checkpoint.step} of run {checkpoint.run_id}")


def checkpoints_pruned(*, newest: Checkpoint) -> list[Checkpoint]:
    """The rows of ``newest``'s run that the engine's pruning removed as it wrote
    ``newest``. Without a store: those whose files are gone. With one: the plan's
    ``keep_last`` rule over all the run's rows (stage ends are always kept), since this
    worker may have fetched only some of them."""
    rows = list(
        Checkpoint.objects.filter(run_id=newest.run_id, stage_end=False)
        .exclude(pk=newest.pk)
        .select_related("run")
    )
    if configured_store() is None:
        return [c for c in rows if not Path(c.path).exists()]
    keep = newest.run.plan.get("keep_last") or Plan.model_fields["keep_last"].default
    regular = sorted(rows + ([] if newest.stage_end else [newest]), key=lambda c: c.step)
    return [c for c in regular[: max(len(regular) - keep, 0)] if c.pk != newest.pk]


def checkpoints_unstore(ckpts: list[Checkpoint]) -> None:
    """Delete these checkpoints' folders in the store (none: nothing); a failure only
    leaves unreferenced files, logged."""
    store = configured_store()
    for c in ckpts if store is not None else []:
        try:
            store.delete(checkpoint_key(c.run, Path(c.path).name))
        except Exception:
            log.warning("could not delete %s in the store", c, exc_info=True)


def run_unstore_on_commit(run: Run) -> None:
    """After the commit, delete everything the store holds for ``run``."""
    store = configured_store()
    if store is not None:
        key = run_key(run)  # now: the row loses its pk when deleted
        transaction.on_commit(lambda: store.delete(key), robust=True)


# ------------------------------------------------------------------ dataset uploads


def _dataset_rel(version: DatasetVersion) -> str:
    """The upload's path under the uploads folder (``runs.services.datasets`` lays it out)."""
    dataset = version.dataset
    return f"datasets/{dataset.team_id}/{dataset.pk}/{Path(version.storage_path).name}"


def dataset_key(version: DatasetVersion) -> str:
    return f"uploads/{_dataset_rel(version)}"


def dataset_publish(version: DatasetVersion) -> None:
    """Put the new version's file in the store (none: nothing)."""
    store = configured_store()
    if store is not None:
        store.put_file(Path(version.storage_path), dataset_key(version))


def dataset_file(version: DatasetVersion) -> Path:
    """The version's file on this machine: where it was uploaded, or (with a store) this
    machine's copy under its uploads folder, downloaded first when missing. Raises
    FileNotFoundError when it is nowhere."""
    path = Path(version.storage_path)
    store = configured_store()
    if store is None or path.is_file():
        return path
    local = Path(settings.MEDIA_ROOT) / _dataset_rel(version)
    if not local.is_file():
        store.get_file(dataset_key(version), local)
    return local


def datasets_unstore_on_commit(versions: list[DatasetVersion]) -> None:
    """After the commit, delete these versions' files in the store."""
    store = configured_store()
    if store is not None:
        keys = [dataset_key(v) for v in versions]  # now: the rows are deleted next
        transaction.on_commit(lambda: [store.delete(k) for k in keys], robust=True)
