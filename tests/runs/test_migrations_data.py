"""Data migrations keep what users had: a pipeline stored as rows becomes the plan its runs
were snapshotted from, and series split by stage are merged into one per (run, key)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("runs", "0006_run_last_report_at")]
AFTER = [("runs", "0008_series_per_run_key")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_rows_become_the_plan_and_stage_split_series_merge():
    leaf = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    team = old.get_model("runs", "Team").objects.create(name="t", slug="t")
    Pipeline = old.get_model("runs", "Pipeline")
    p = Pipeline.objects.create(
        team=team, name="lm", model_spec={"arch": "gpt2"}, eval_sets=[], seed=4,
        extra={"log_interval": 5},
    )  # fmt: skip
    old.get_model("runs", "StageDefinition").objects.create(
        pipeline=p, order=0, name="pt", objective="causal_lm",
        data_sources=[{"source": "builtin:prose", "weight": 1.0}], budget=30,
        lr_schedule={"kind": "cosine"}, warmup_steps=3,
    )  # fmt: skip
    queue = old.get_model("runs", "Queue").objects.create(name="q")
    run = old.get_model("runs", "Run").objects.create(team=team, queue=queue, name="r", plan={})
    StageRun = old.get_model("runs", "StageRun")
    s0 = StageRun.objects.create(run=run, stage_index=0, name="a", start_step=0, end_step=10)
    Series = old.get_model("runs", "Series")
    Point = old.get_model("runs", "MetricPoint")
    a = Series.objects.create(run=run, stage_run=s0, key="loss", count=2)
    b = Series.objects.create(run=run, stage_run=None, key="loss", count=2)
    Point.objects.create(series=a, step=1, value=1.0, wall_time=1.0)
    Point.objects.create(series=a, step=2, value=2.0, wall_time=1.0)
    Point.objects.create(series=b, step=2, value=9.0, wall_time=2.0)  # later: kept
    Point.objects.create(series=b, step=3, value=3.0, wall_time=2.0)
    try:
        new = _migrate(AFTER)
        plan = new.get_model("runs", "Pipeline").objects.get(pk=p.pk).plan
        assert plan["name"] == "lm" and plan["seed"] == 4 and plan["log_interval"] == 5
        assert plan["stages"][0]["steps"] == 30
        assert plan["stages"][0]["schedule"] == {"kind": "cosine", "warmup_steps": 3}
        merged = new.get_model("runs", "Series").objects.get(run_id=run.pk, key="loss")
        assert (merged.count, merged.first_step, merged.last_step) == (3, 1, 3)
        points = new.get_model("runs", "MetricPoint").objects.filter(series_id=merged.pk)
        assert sorted(points.values_list("step", "value")) == [(1, 1.0), (2, 9.0), (3, 3.0)]
        rollups = new.get_model("runs", "SeriesRollup").objects.filter(series_id=merged.pk)
        top = rollups.filter(level=9).get()
        assert (top.count, top.min_value, top.max_value, top.last_value) == (3, 1.0, 9.0, 3.0)
    finally:
        _migrate(leaf)
