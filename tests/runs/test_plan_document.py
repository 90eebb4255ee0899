"""A pipeline's plan is stored whole: what the user saves is what comes back, what a run
snapshots and what the worker trains, field for field (replay ratios per source, unset
optional fields, top-level settings)."""

from __future__ import annotations

import uuid

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.models import Checkpoint, Pipeline, Run
from tests import factories as f
from tests.workers import Workers, wait_for
from trainers.plan import validate_plan

TEXT_SOURCES = ["builtin:prose", "builtin:code", "builtin:docstrings"]
EVAL_SETS = [
    {"name": "prose", "source": "builtin:prose", "max_batches": 1},
    {"name": "code", "source": "builtin:code", "max_batches": 1, "seq_len": 32},
]


def _optional(draw, spec: dict, key: str, strategy) -> None:
    """Set ``key`` or leave it out: an unset field must stay unset."""
    if draw(st.booleans()):
        spec[key] = draw(strategy)


@st.composite
def stage_specs(draw, index: int, earlier: list[str]) -> dict:
    n_data = draw(st.integers(1, 2))
    names = draw(st.lists(st.sampled_from(TEXT_SOURCES), min_size=n_data, max_size=n_data))
    data = []
    for j, src in enumerate(names):
        entry = {"source": src, "name": f"s{index}d{j}"}
        _optional(draw, entry, "weight", st.floats(0.1, 4.0).map(lambda x: round(x, 3)))
        data.append(entry)
    spec: dict = {"name": f"stage-{index}", "objective": "causal_lm", "data": data}
    if draw(st.booleans()):
        spec["steps"] = draw(st.integers(1, 5000))
    else:
        spec["tokens"] = draw(st.integers(1, 10**9))
    if earlier:
        # several replay sources with different ratios, summing below 1
        chosen = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
        ratios = draw(
            st.lists(
                st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.3]),
                min_size=len(chosen),
                max_size=len(chosen),
            )  # fmt: skip
        )
        if chosen:
            spec["replay"] = [
                {"source": s, "ratio": r} for s, r in zip(chosen, ratios, strict=True)
            ]
    _optional(draw, spec, "batch_size", st.integers(1, 64))
    _optional(draw, spec, "seq_len", st.integers(8, 128))
    _optional(draw, spec, "eval_interval", st.integers(1, 500))
    _optional(draw, spec, "checkpoint_interval", st.integers(1, 500))
    _optional(draw, spec, "eval_sets", st.lists(st.sampled_from(["prose", "code"]), unique=True))
    _optional(draw, spec, "task", st.sampled_from(["prose", "code"]))
    _optional(
        draw, spec, "optimizer",
        st.fixed_dictionaries({"lr": st.sampled_from([1e-4, 3e-4, 1e-3])},
                              optional={"reset": st.booleans(), "weight_decay": st.just(0.1)}),
    )  # fmt: skip
    kind = draw(st.sampled_from(["constant", "linear", "cosine", "wsd", "infinite"]))
    schedule: dict = {"kind": kind}
    if "steps" in spec:
        _optional(draw, schedule, "warmup_steps", st.integers(0, spec["steps"]))
    if kind == "wsd":
        _optional(draw, schedule, "decay_fraction", st.sampled_from([0.1, 0.2, 0.5]))
    if draw(st.booleans()):
        spec["schedule"] = schedule
    if draw(st.booleans()) and "steps" in spec and spec["steps"] >= 10:
        spec["dense_eval"] = {"interval": 2, "steps": 10}
    return spec


@st.composite
def plans(draw) -> dict:
    n = draw(st.integers(1, 4))
    stages, earlier = [], []
    for i in range(n):
        spec = draw(stage_specs(i, list(earlier)))
        stages.append(spec)
        earlier += [d["name"] for d in spec["data"]]
    plan: dict = {"name": f"p-{uuid.uuid4().hex[:10]}", "eval_sets": EVAL_SETS, "stages": stages}
    _optional(draw, plan, "seed", st.integers(0, 2**40))
    _optional(draw, plan, "log_interval", st.integers(1, 100))
    _optional(draw, plan, "keep_last", st.integers(1, 5))
    _optional(draw, plan, "model", st.just({"arch": "gpt2", "size": "tiny", "vocab_size": 300}))
    return plan


@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=plans())
def test_saved_plans_come_back_and_runs_snapshot_them_field_for_field(api, team, queue, plan):
    full = validate_plan(plan).model_dump(mode="json")

    r = api.post("/api/pipelines/", {"plan": plan}, format="json")
    assert r.status_code == 201, r.json()
    pid = r.json()["id"]
    assert r.json()["plan"] == plan
    assert api.get(f"/api/pipelines/{pid}/").json()["plan"] == plan
    assert Pipeline.objects.get(pk=pid).plan == plan

    r = api.post("/api/runs/", {"pipeline": pid, "queue": queue.name}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["plan"] == full
    run = Run.objects.get(pk=r.json()["id"])
    # what the worker validates and trains (runs/execution/runner.py) is the plan sent
    assert validate_plan(run.plan) == validate_plan(plan)
    bounds = validate_plan(plan).stage_bounds()
    assert list(run.stage_runs.order_by("stage_index").values_list("start_step", "end_step")) == [
        tuple(b) for b in bounds
    ]

    # an edit through PUT is stored as sent, too
    edited = {**plan, "stages": plan["stages"][:1]}
    r = api.put(f"/api/pipelines/{pid}/", {"plan": edited}, format="json")
    assert r.status_code == 200, r.json()
    assert Pipeline.objects.get(pk=pid).plan == edited


REPLAY_PLAN = {
    "name": "replay-two-ratios",
    "seed": 3,
    "model": {"arch": "gpt2", "size": "tiny", "vocab_size": 300},
    "eval_sets": [{"name": "prose", "source": "builtin:prose", "max_batches": 1}],
    "stages": [
        {"name": "mix", "objective": "causal_lm", "steps": 10, "batch_size": 8, "seq_len": 32,
         "data": [{"source": "builtin:prose", "name": "prose"},
                  {"source": "builtin:docstrings", "name": "doc"}],
         "eval_sets": ["prose"], "eval_interval": 10},
        {"name": "code", "objective": "causal_lm", "steps": 60, "batch_size": 32, "seq_len": 32,
         "data": [{"source": "builtin:code"}],
         "replay": [{"source": "prose", "ratio": 0.3}, {"source": "doc", "ratio": 0.05}],
         "eval_sets": ["prose"], "eval_interval": 30},
    ],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_worker_trains_the_saved_replay_ratios_and_checkpoint_policy(tmp_path, settings):
    """Saved through the API, run by a real worker: the replay streams consumed 30 % and 5 %
    of the stage's examples (not an equal split), and with no checkpoint_interval the only
    checkpoints are the stage ends."""
    settings.STAGEWISE_LEASE_SECONDS = 4
    team = f.TeamFactory()
    api = f.api_client_for(team, "member")
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    r = api.post("/api/pipelines/", {"plan": REPLAY_PLAN}, format="json")
    assert r.status_code == 201, r.json()
    r = api.post("/api/runs/", {"pipeline": r.json()["id"], "queue": queue.name}, format="json")
    assert r.status_code == 201, r.json()
    run_id = r.json()["id"]
    workers = Workers(tmp_path, lease_seconds=4)
    try:
        workers.start(queue.name, "w1")
        wait_for(lambda: Run.objects.get(pk=run_id).is_terminal, 300, "the run", workers.logs)
    finally:
        workers.stop_all()
    run = Run.objects.get(pk=run_id)
    assert run.state == "succeeded", (run.error, workers.logs())
    ckpts = Checkpoint.objects.filter(run=run).order_by("step")
    assert [(c.step, c.stage_end) for c in ckpts] == [(10, True), (70, True)]

    state = torch.load(f"{ckpts.last().path}/state.pt", weights_only=False)
    taken = {name.split(":", 1)[0]: pos for name, pos in state["streams"].items()}
    total = 60 * 32
    assert sum(taken.values()) == total
    # multinomial draws: within 5 standard deviations of the planned share
    for part, share in (("replay.0", 0.3), ("replay.1", 0.05)):
        sd = (total * share * (1 - share)) ** 0.5
        assert abs(taken[part] - total * share) < 5 * sd, (part, taken)
