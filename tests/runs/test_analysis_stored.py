"""One analysis: the stored state holds what the run page shows, is updated at ingest and sent
with the batch; reads and batches never go back to the stored points once it exists."""

from __future__ import annotations

import random

import pytest

from runs.models import RunAnalysis
from runs.selectors import analysis as selectors
from runs.services.ingest import IngestPoint, ingest_points
from runs.services.runs import run_submit
from tests.runs.analysis_offline import offline_analysis
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db

SETS = ("prose", "code", "docstrings")


def _rows(top: int, seed: int, start: int = 0, metrics=("loss",)) -> list[IngestPoint]:
    rng = random.Random(seed)
    return [IngestPoint(f"eval/{n}/{m}", s, rng.uniform(1, 6))
            for s in range(start, top + 1, 5) for n in SETS for m in metrics]  # fmt: skip


def _batches(run, points, publish=False, seed=0):
    rng = random.Random(seed)
    points = sorted(points, key=lambda p: p.step)
    i = 0
    while i < len(points):
        n = rng.randint(1, 30)
        ingest_points(run_id=run.pk, points=points[i : i + n], publish=publish)
        i += n


@pytest.fixture
def point_reads(monkeypatch):
    """Counts the reads of stored eval points made for the analysis."""
    calls = []
    real = selectors.lineage_eval_points

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(selectors, "lineage_eval_points", counting)
    return calls


def _rebuilt_page(run) -> dict:
    """The run page's analysis of a state built from every stored point of the run's line."""
    stages = selectors.analysis_stages(run.pk)
    points, inherited = selectors.line_eval_points(selectors.run_lineage(run))
    state = selectors.state_from_points(selectors.stage_bounds(run.plan, stages), points)
    return selectors.page_result(run, stages, state, inherited)


def test_batches_and_reads_use_the_stored_state_not_the_points(api, team, queue, point_reads):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    ingest_points(run_id=run.pk, points=_rows(10, seed=1), publish=False)
    first = len(point_reads)  # the run's first eval batch builds its state
    assert first > 0
    _batches(run, _rows(100, seed=2, start=15, metrics=("loss", "acc", "ppl")))
    page = api.get(f"/api/ui/runs/{run.pk}/analysis/").json()
    continual = api.get(f"/api/runs/{run.pk}/analysis/").json()
    assert len(point_reads) == first, "no batch and no read went back to the points"
    assert page == _rebuilt_page(run)
    assert {m["metric"] for m in page["boundary_matrices"]} == {"loss", "acc"}  # ppl: not analysed
    assert page["eval_points"] == 3 * (3 + 18 * 3)
    assert continual == RunAnalysis.objects.get(run=run).result


def test_the_batch_message_carries_both_analyses_as_the_endpoints_answer(
    api, team, queue, monkeypatch, django_capture_on_commit_callbacks
):
    import runs.services.realtime as realtime

    sent = []
    monkeypatch.setattr(realtime, "group_send", lambda group, msg: sent.append((group, msg)))
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    with django_capture_on_commit_callbacks(execute=True):
        ingest_points(run_id=run.pk, points=_rows(60, seed=3), publish=True)
        ingest_points(run_id=run.pk, points=[IngestPoint("train/loss", 61, 2.0)], publish=True)
    (group, with_evals), (_, train_only) = sent
    assert group == f"run-{run.pk}"
    assert with_evals["analysis"] == api.get(f"/api/runs/{run.pk}/analysis/").json()
    assert with_evals["run_analysis"] == api.get(f"/api/ui/runs/{run.pk}/analysis/").json()
    assert with_evals["run_analysis"]["gap_boundaries"][0]["old_tasks"] == ["prose"]
    assert "analysis" not in train_only and "run_analysis" not in train_only


def test_stage_bounds_follow_the_stage_rows_without_rereading_points(team, queue, point_reads):
    """A run that declares stages as it goes: the last stage's end moves with its points and a
    new stage is appended; the stored state follows the StageRun rows."""
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    ingest_points(run_id=run.pk, points=_rows(30, seed=4), publish=False)
    first = len(point_reads)
    stages = list(run.stage_runs.order_by("stage_index"))
    stages[-1].end_step = 130  # the open last stage reached step 130
    stages[-1].save()
    _batches(run, _rows(130, seed=5, start=35))
    run.stage_runs.create(stage_index=3, name="extra", start_step=130, end_step=150)
    ingest_points(run_id=run.pk, points=_rows(150, seed=6, start=135), publish=False)
    assert len(point_reads) == first
    assert RunAnalysis.objects.get(run=run).boundaries == [40, 80, 130, 150]
    page = selectors.run_analysis(run)
    assert page == _rebuilt_page(run)
    assert [b["stage_after"] for b in page["gap_boundaries"]] == ["code-cpt", "docstring-sft",
                                                                  "extra"]  # fmt: skip
    # an earlier stage end moved under stored points: the state is built again, once
    stages[0].end_step = 45
    stages[0].save()
    before = len(point_reads)
    ingest_points(run_id=run.pk, points=_rows(150, seed=7, start=150), publish=False)
    assert len(point_reads) == before + 1  # the run's own points (it has no ancestors)
    assert RunAnalysis.objects.get(run=run).boundaries == [45, 80, 130, 150]
    assert selectors.run_analysis(run) == _rebuilt_page(run)


def test_a_fork_reads_its_ancestors_points_once_then_only_its_state(team, queue, tmp_path,
                                                                   settings, point_reads):  # fmt: skip
    from runs.models import Checkpoint
    from runs.services.runs import run_fork

    settings.STAGEWISE_DATA_DIR = tmp_path
    parent = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    _batches(parent, _rows(60, seed=7))
    (tmp_path / "ckpt").mkdir()
    ckpt = Checkpoint.objects.create(run=parent, stage_run=parent.stage_runs.get(stage_index=0),
                                     step=40, path=str(tmp_path / "ckpt"), stage_end=True)  # fmt: skip
    fork = run_fork(checkpoint=ckpt)
    seeded = len(point_reads)
    _batches(fork, _rows(100, seed=8, start=40))
    assert len(point_reads) == seeded
    rows = [{"key": p.key, "step": p.step, "value": p.value}
            for p in _rows(40, seed=7) + _rows(100, seed=8, start=40)]  # fmt: skip
    served = selectors.analysis_get(run=fork)
    assert served == {**served, **offline_analysis(rows, fork.plan)}
    assert selectors.run_analysis(fork) == _rebuilt_page(fork)


@pytest.mark.django_db(transaction=True)
def test_an_analysis_stored_before_is_rebuilt_by_the_migration():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    def migrate(targets):
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps

    leaf = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = migrate([("runs", "0011_run_notes")])
    team = old.get_model("runs", "Team").objects.create(name="t", slug="t")
    queue = old.get_model("runs", "Queue").objects.create(name="q-analysis-migration")
    plan = reduced_lm_plan()
    run = old.get_model("runs", "Run").objects.create(team=team, queue=queue, name="r", plan=plan)
    for i, (a, b) in enumerate([(0, 40), (40, 80), (80, 100)]):
        old.get_model("runs", "StageRun").objects.create(
            run=run, stage_index=i, name=plan["stages"][i]["name"], start_step=a, end_step=b
        )
    points = _rows(40, seed=9)
    for key in {p.key for p in points}:
        series = old.get_model("runs", "Series").objects.create(run=run, key=key, count=9)
        old.get_model("runs", "MetricPoint").objects.bulk_create(
            old.get_model("runs", "MetricPoint")(series=series, step=p.step, value=p.value,
                                                 wall_time=1.0)
            for p in points if p.key == key
        )  # fmt: skip
    legacy = {"version": 1, "num_eval_sets": 3}  # one metric's ContinualState, as stored then
    old.get_model("runs", "RunAnalysis").objects.create(
        run=run, metric="loss", eval_sets=list(SETS), boundaries=[40, 80, 100], state=legacy
    )
    try:
        new = migrate([("runs", "0012_analysis_every_eval_metric")])
        row = new.get_model("runs", "RunAnalysis").objects.get(run_id=run.pk)
        assert "eval" in row.state and row.boundaries == [40, 80, 100]
        expected = offline_analysis([{"key": p.key, "step": p.step, "value": p.value}
                                     for p in points], plan)  # fmt: skip
        assert row.result == {**row.result, **expected}
        assert row.state["inherited_points"] == 0
    finally:
        migrate(leaf)
