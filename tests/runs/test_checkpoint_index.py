import json

import pytest

from runs.selectors.run_files import run_dir
from runs.services.stages import checkpoints_drop_unindexed
from tests import factories as f

pytestmark = pytest.mark.django_db


def _fake_checkpoint(root, step, stage_index=0, stage_end=False):
    path = root / "checkpoints" / f"step-{step:08d}"
    path.mkdir(parents=True)
    meta = {"step": step, "stage_index": stage_index, "stage_end": stage_end}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_checkpoints_without_a_row_are_dropped_before_a_resume():
    stage = f.StageRunFactory()
    run = stage.run
    out = run_dir(run)
    kept = _fake_checkpoint(out, 60)
    orphan = _fake_checkpoint(out, 70)  # files written, worker killed before its points
    f.CheckpointFactory(stage_run=stage, step=60, path=str(kept))
    assert checkpoints_drop_unindexed(run=run, out_dir=out) == [70]
    assert kept.is_dir() and not orphan.exists()


def test_a_forks_copied_starting_checkpoint_is_kept():
    parent_stage = f.StageRunFactory()
    ckpt = f.CheckpointFactory(stage_run=parent_stage, step=40)
    fork = f.RunFactory(parent=parent_stage.run, fork_checkpoint=ckpt)
    copied = _fake_checkpoint(run_dir(fork), 40, stage_end=True)
    assert checkpoints_drop_unindexed(run=fork, out_dir=run_dir(fork)) == []
    assert copied.is_dir()
