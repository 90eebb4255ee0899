"""Merged runs on the server: a stage's ``init_merge`` names checkpoints of the team's runs by
``{"run", "step"}``; another team's run is refused like a missing one, a missing step lists
the steps there are; the run records every merged checkpoint as a parent, the run detail and
the lineage show an edge from each, and the engine gets local paths. Then for real: two forks
of one run trained by a worker, merged (0.5, 0.5) through the fork API; the merged stage
starts from exactly the average of the two checkpoints."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch
from django.test import Client

from runs.models import Checkpoint, Run
from runs.selectors.lineage import run_family
from runs.services.data_access import EXTERNAL_REFERENCE, MERGE_DENIED, plan_for_engine
from runs.services.runs import run_fork, run_submit
from tests import factories as f
from tests.workers import Workers, wait_for
from trainers import objectives
from trainers.plan import validate_plan

MODEL = {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
         "max_positions": 64}  # fmt: skip
EVAL = {"name": "prose", "source": "builtin:prose", "max_batches": 1, "batch_size": 4,
        "seq_len": 32}  # fmt: skip


def _stage(name: str, steps: int, source: str = "builtin:prose", **over) -> dict:
    return {"name": name, "objective": "causal_lm", "data": [{"source": source}], "steps": steps,
            "batch_size": 4, "seq_len": 32, "eval_sets": ["prose"], "eval_interval": steps,
            **over}  # fmt: skip


def _plan(*stages: dict) -> dict:
    return {"name": f"merge-{uuid.uuid4().hex[:8]}", "seed": 1, "model": dict(MODEL),
            "eval_sets": [dict(EVAL)], "stages": list(stages)}  # fmt: skip


def _merge(*refs: tuple[int, int], weight: float = 0.5) -> list[dict]:
    return [{"run": run, "step": step, "weight": weight} for run, step in refs]


@pytest.fixture
def family(db, tmp_path):
    """Team A's run (stages end at 3 and 6) with two forks from its step 3, each with its
    stage-end checkpoint at step 6 (files faked: nothing trains here); team B."""
    team, other = f.TeamFactory(), f.TeamFactory()
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}", paused=True)
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team)
    base = run_submit(team=team, queue=queue, plan=_plan(_stage("s0", 3), _stage("s1", 3)))
    at3 = f.checkpoint_on_disk(base, 3, 0, tmp_path)
    forks = [run_fork(checkpoint=at3, name=f"fork-{k}") for k in (1, 2)]
    ends = [f.checkpoint_on_disk(fk, 6, 1, tmp_path) for fk in forks]
    return {"team": team, "queue": queue, "user": user, "base": base, "at3": at3,
            "forks": forks, "ends": ends, "api": f.api_client_for(team),
            "api_other": f.api_client_for(other)}  # fmt: skip


def _post(api, queue, stage: dict, **extra):
    body = {"plan": _plan(stage), "queue": queue.name, **extra}
    return api.post("/api/runs/", body, format="json")


def test_another_teams_run_is_refused_like_a_missing_one(family):
    fk1, fk2 = family["forks"]
    stage = _stage("m", 2, init_merge=_merge((fk1.pk, 6), (fk2.pk, 6)))
    r = _post(family["api_other"], family["queue"], stage)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert errors["stages.0.init_merge.0"] == [MERGE_DENIED]
    assert errors["stages.0.init_merge.1"] == [MERGE_DENIED]
    missing = _stage("m", 2, init_merge=_merge((fk1.pk, 6), (2_000_000_000, 6)))
    r = _post(family["api"], family["queue"], missing)
    assert r.json()["errors"] == {"stages.0.init_merge.1": [MERGE_DENIED]}


def test_a_missing_checkpoint_lists_the_runs_steps(family):
    fk1, fk2 = family["forks"]
    r = _post(family["api"], family["queue"],
              _stage("m", 2, init_merge=_merge((fk1.pk, 6), (fk2.pk, 5))))  # fmt: skip
    assert r.status_code == 400
    assert r.json()["errors"] == {
        "stages.0.init_merge.1": [f"run {fk2.pk} has no checkpoint at step 5 (it has: 6)"]
    }
    both = _stage("m", 2, init_merge=_merge((fk1.pk, 6), (fk2.pk, 6)))
    r = _post(family["api"], family["queue"], both, external=True)
    assert r.json()["errors"]["stages.0.init_merge.0"] == [EXTERNAL_REFERENCE]


def test_a_merged_run_records_both_parents_and_the_engine_gets_paths(family):
    (fk1, fk2), (e1, e2) = family["forks"], family["ends"]
    r = _post(family["api"], family["queue"],
              _stage("m", 2, init_merge=_merge((fk1.pk, 6), (fk2.pk, 6))))  # fmt: skip
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["plan"]["stages"][0]["init_merge"][1] == {"run": fk2.pk, "step": 6, "path": None,
                                                           "weight": 0.5}  # fmt: skip
    assert [(p["run"], p["step"], p["checkpoint"], p["weight"], p["reference"])
            for p in body["merge_parents"]] == [
        (fk1.pk, 6, e1.pk, 0.5, f"run:{fk1.pk}@6"), (fk2.pk, 6, e2.pk, 0.5, f"run:{fk2.pk}@6")
    ]  # fmt: skip
    run = Run.objects.get(pk=body["id"])
    local = plan_for_engine(validate_plan(run.plan, check_files=False), run.plan, team=run.team)
    assert local["stages"][0]["init_merge"] == [
        {"path": str(Path(e1.path).resolve() / "model"), "weight": 0.5},
        {"path": str(Path(e2.path).resolve() / "model"), "weight": 0.5},
    ]
    validate_plan(local, check_files=True)  # what the worker checks before training
    # the lineage: under the first parent's checkpoint as a run, an edge from the other's
    family_ = run_family(user=family["user"], run_id=run.pk)
    shape = [(n["kind"], n["id"], n["depth"]) for n in family_["nodes"]]
    assert shape == [
        ("run", family["base"].pk, 0), ("checkpoint", family["at3"].pk, 1),
        ("run", fk1.pk, 2), ("checkpoint", e1.pk, 3), ("run", run.pk, 4),
        ("run", fk2.pk, 2), ("checkpoint", e2.pk, 3), ("merge", run.pk, 4),
    ]  # fmt: skip
    merged = next(n for n in family_["nodes"] if n["kind"] == "run" and n["id"] == run.pk)
    assert [(m["run"], m["step"], m["weight"]) for m in merged["merge_of"]] == [
        (fk1.pk, 6, 0.5),
        (fk2.pk, 6, 0.5),
    ]
    # seen from the second parent, the family is the same one
    again = run_family(user=family["user"], run_id=fk2.pk)["nodes"]
    assert [(n["kind"], n["id"], n["depth"]) for n in again] == shape


def test_the_lineage_page_draws_both_edges_and_the_fork_page_prefills_the_merge(family):
    (fk1, fk2), (e1, e2) = family["forks"], family["ends"]
    merge = _stage("merge", 2, init_merge=_merge((fk1.pk, 6), (fk2.pk, 6)))
    run = run_fork(checkpoint=e1, stages=[merge])
    assert run.parent_id == fk1.pk
    assert list(run.merge_parents.values_list("checkpoint_id", "weight")) == [
        (e1.pk, 0.5),
        (e2.pk, 0.5),
    ]
    # a fork of the merged run after its merge stage does not merge again
    at8 = f.checkpoint_on_disk(run, 8, 2, Path(e1.path).parent / "x")
    again = run_fork(checkpoint=at8, stages=[_stage("after", 2)])
    assert not again.merge_parents.exists()
    c = Client()
    c.force_login(family["user"])
    page = c.get(f"/runs/{run.pk}/lineage/").content.decode()
    assert f'data-kind="merge" data-merged="{run.pk}"' in page
    assert f'data-merge-parent="{e1.pk}"' in page and f'data-merge-parent="{e2.pk}"' in page
    assert f'name="merge-pick" value="{e2.pk}"' in page
    page = c.get(f"/runs/{fk1.pk}/fork/{e1.pk}/?merge={e1.pk},{e2.pk},999999999").content.decode()
    assert f'"merge": [{{"run": {fk1.pk}, "step": 6, "weight": 0.5' in page
    assert 'id="fork-merge"' in page
    other = Client()
    other.force_login(f.UserFactory())
    page = other.get(f"/runs/{fk1.pk}/fork/{e1.pk}/?merge={e1.pk},{e2.pk}")
    assert page.status_code == 404  # not the reader's run: nothing about its checkpoints


# ------------------------------------------------------------------ trained by a real worker


def _model(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    spec = validate_plan(_plan(_stage("s", 1))).model
    return objectives.load_saved_model(spec, Path(ckpt.path) / "model").state_dict()


def _finish(run: Run, workers: Workers) -> Run:
    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, 300, f"run {run.pk}", workers.logs)
    run = Run.objects.get(pk=run.pk)
    assert run.state == "succeeded", (run.error, [s.error for s in run.stage_runs.all()],
                                      workers.logs())  # fmt: skip
    return run


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_trained_forks_merged_half_and_half_start_from_their_average(tmp_path, settings):
    settings.STAGEWISE_LEASE_SECONDS = 4
    team = f.TeamFactory()
    api = f.api_client_for(team)
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    workers = Workers(tmp_path, lease_seconds=4)
    workers.start(queue.name, "w-merge")
    try:
        base = _finish(run_submit(team=team, queue=queue, plan=_plan(_stage("base", 4))), workers)
        at4 = base.checkpoints.get(step=4)
        forks = [
            run_fork(checkpoint=at4, stages=[_stage("code", 3, "builtin:code")], name="code"),
            run_fork(checkpoint=at4, stages=[_stage("more", 3, optimizer={"lr": 0.01})]),
        ]
        forks = [_finish(fk, workers) for fk in forks]
        ends = [fk.checkpoints.get(step=7) for fk in forks]
        # one step at learning rate 0 (linear decay to 0 over one step): its end checkpoint
        # holds the weights the merged stage started from
        merge = _stage("merge", 1, schedule={"kind": "linear"},
                       init_merge=_merge((forks[0].pk, 7), (forks[1].pk, 7)))  # fmt: skip
        r = api.post(f"/api/runs/{forks[0].pk}/fork/",
                     {"checkpoint": ends[0].pk, "stages": [merge]}, format="json")  # fmt: skip
        assert r.status_code == 201, r.json()
        merged = _finish(Run.objects.get(pk=r.json()["id"]), workers)
    finally:
        workers.stop_all()
    a, b = _model(ends[0]), _model(ends[1])
    start = _model(merged.checkpoints.get(step=8))
    assert sum(not torch.equal(a[n], b[n]) for n in a) > 5  # the forks really differ
    for name, t in start.items():
        assert torch.equal(t, ((a[name].double() + b[name].double()) / 2).to(t.dtype)), name
    states = [s.state for s in merged.stage_runs.order_by("stage_index")]
    assert states == ["skipped", "skipped", "succeeded"]
    assert merged.series.filter(key="eval/prose/loss").exists()
    # lineage: both trained forks are its parents
    assert set(merged.merge_parents.values_list("checkpoint_id", flat=True)) == {e.pk for e in ends}
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team)
    nodes = run_family(user=user, run_id=merged.pk)["nodes"]
    assert ("merge", merged.pk) in [(n["kind"], n["id"]) for n in nodes]
    node = next(n for n in nodes if n["kind"] == "run" and n["id"] == merged.pk)
    assert [m["run"] for m in node["merge_of"]] == [fk.pk for fk in forks]
