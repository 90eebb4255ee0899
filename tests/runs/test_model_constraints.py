"""Every database constraint refuses the invalid row it exists for.

Each case names the constraint it expects in the database error, so dropping a constraint
from the models (and a migration) makes its case fail.
"""

import math

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.models import MetricPoint, SeriesRollup
from tests import factories as f

now = timezone.now


def _rollup(**kw):
    series = f.SeriesFactory()
    base = dict(series=series, level=0, bucket=0, min_value=0.0, max_value=1.0, last_step=1,
                last_value=1.0, count=1)  # fmt: skip
    return SeriesRollup.objects.create(**{**base, **kw})


def _point(**kw):
    series = f.SeriesFactory()
    return MetricPoint.objects.create(**{"series": series, "step": 1, "value": 1.0,
                                         "wall_time": 0.0, **kw})  # fmt: skip


CASES = {
    "membership_unique_user_team": lambda: (
        (m := f.MembershipFactory()),
        f.MembershipFactory(user=m.user, team=m.team),
    ),
    "membership_role_valid": lambda: f.MembershipFactory(role="owner"),
    "dataset_unique_team_name": lambda: (
        (d := f.DatasetFactory()),
        f.DatasetFactory(team=d.team, name=d.name),
    ),
    "datasetversion_unique_version": lambda: (
        (v := f.DatasetVersionFactory()),
        f.DatasetVersionFactory(dataset=v.dataset, version=v.version),
    ),
    "datasetversion_unique_content": lambda: (
        (v := f.DatasetVersionFactory()),
        f.DatasetVersionFactory(dataset=v.dataset, content_hash=v.content_hash),
    ),
    "datasetversion_version_gte_1": lambda: f.DatasetVersionFactory(version=0),
    "datasetversion_size_gte_0": lambda: f.DatasetVersionFactory(size_bytes=-1),
    "datasetversion_hash_sha256": lambda: f.DatasetVersionFactory(content_hash="not-a-hash"),
    "datasetversion_format_valid": lambda: f.DatasetVersionFactory(format="csv"),
    "pipeline_unique_team_name": lambda: (
        (p := f.PipelineFactory()),
        f.PipelineFactory(team=p.team, name=p.name),
    ),
    "pipeline_name_is_plan_name": lambda: f.PipelineFactory(plan={"name": "another", "stages": []}),
    "queue_max_concurrent_gte_1": lambda: f.QueueFactory(max_concurrent=0),
    "queue_name_key": lambda: ((q := f.QueueFactory()), f.QueueFactory(name=q.name)),
    "lease_expires_after_beat": lambda: f.WorkerLeaseFactory(
        expires_at=now() - timezone.timedelta(days=1)
    ),
    "lease_beat_after_acquire": lambda: f.WorkerLeaseFactory(
        heartbeat_at=now() - timezone.timedelta(days=1),
        expires_at=now() + timezone.timedelta(days=1),
    ),
    "runs_workerlease_stage_run_id_key": lambda: (
        (lease := f.WorkerLeaseFactory()),
        f.WorkerLeaseFactory(stage_run=lease.stage_run),
    ),
    "run_state_valid": lambda: f.RunFactory(state="exploded"),
    "run_seed_gte_0": lambda: f.RunFactory(seed=-5),
    "run_fork_checkpoint_needs_parent": lambda: f.RunFactory(fork_checkpoint=f.CheckpointFactory()),
    "run_terminal_has_finished_at": lambda: f.RunFactory(state="succeeded"),
    "run_finished_at_only_terminal": lambda: f.RunFactory(state="running", finished_at=now()),
    "stagerun_unique_index": lambda: (
        (s := f.StageRunFactory()),
        f.StageRunFactory(run=s.run, stage_index=s.stage_index),
    ),
    "stagerun_state_valid": lambda: f.StageRunFactory(state="limbo"),
    "stagerun_start_gte_0": lambda: f.StageRunFactory(start_step=-1),
    "stagerun_end_after_start": lambda: f.StageRunFactory(start_step=100, end_step=100),
    "stagerun_last_step_in_range": lambda: f.StageRunFactory(last_step=101),
    "checkpoint_unique_step": lambda: (
        (c := f.CheckpointFactory()),
        f.CheckpointFactory(stage_run=c.stage_run, step=c.step),
    ),
    "checkpoint_step_gte_0": lambda: f.CheckpointFactory(step=-1),
    "checkpoint_size_gte_0": lambda: f.CheckpointFactory(size_bytes=-1),
    "series_unique_run_key": lambda: (
        (s := f.SeriesFactory()),
        f.SeriesFactory(run=s.run, key=s.key),
    ),
    "series_key_not_empty": lambda: f.SeriesFactory(key=""),
    "series_count_gte_0": lambda: f.SeriesFactory(count=-1),
    "point_step_gte_0": lambda: _point(step=-1),
    "point_step_lt_2_53": lambda: _point(step=2**53),
    "point_value_finite": lambda: _point(value=math.inf),
    "rollup_level_gte_0": lambda: _rollup(level=-1),
    "rollup_min_le_max": lambda: _rollup(min_value=2.0, max_value=1.0),
    "rollup_count_gt_0": lambda: _rollup(count=0),
}


@pytest.mark.django_db
@pytest.mark.parametrize("constraint", sorted(CASES))
def test_constraint_refuses_invalid_row(constraint):
    with pytest.raises(IntegrityError) as err, transaction.atomic():
        CASES[constraint]()
    assert constraint in str(err.value)


@pytest.mark.django_db
@pytest.mark.parametrize("value", [math.nan, -math.inf])
def test_point_value_must_be_finite(value):
    with pytest.raises(IntegrityError, match="point_value_finite"), transaction.atomic():
        _point(value=value)


@pytest.mark.django_db
def test_point_primary_key_is_series_and_step():
    p = _point(step=7)
    with pytest.raises(IntegrityError), transaction.atomic():
        MetricPoint.objects.create(series=p.series, step=7, value=2.0, wall_time=0.0)


@pytest.mark.django_db
def test_valid_rows_are_accepted():
    run = f.RunFactory(state="succeeded", finished_at=now())
    ckpt = f.CheckpointFactory(stage_run=f.StageRunFactory(run=run))
    fork = f.RunFactory(parent=run, fork_checkpoint=ckpt)
    assert fork.parent_id == run.pk
    f.PipelineFactory()
