"""No request can make the web process build per-step arrays or recurse without bound: plan
preview, what-if, pipeline save and run submission with budgets up to 1e18 and bodies nested
as deep as the parser allows answer 2xx/4xx, never 500, and the process grows < 50 MB."""

from __future__ import annotations

import gc

import orjson
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.services.ingest import IngestPoint, ingest_points
from runs.services.runs import run_submit
from tests.runs.reduced_plan import reduced_lm_plan

BUDGETS = st.one_of(
    st.integers(1, 10**18),
    st.sampled_from([10**7, 10**8, 10**11, 10**12, 10**18, 2**53, 2**63 - 1]),
    st.floats(1, 1e18).map(lambda x: float(int(x))),
)


def _plan(budget, unit: str, kind: str, warmup) -> dict:
    plan = reduced_lm_plan()
    for st_ in plan["stages"]:
        st_.pop("steps", None)
        st_[unit] = budget
        st_["schedule"] = {**st_.get("schedule", {}), "kind": kind, "warmup_steps": warmup}
    return plan


def _nested(depth: int) -> str:
    """JSON text of objects nested ``depth`` deep (as text: no encoder recurses on it)."""
    return '{"a":' * depth + "{}" + "}" * depth


@pytest.fixture
def fitted_run(team, queue):
    """A run with a training-loss curve the LR law can be fitted on."""
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    pts = [IngestPoint("train/loss", s, 3.0 + 2.0 / s**0.5) for s in range(1, 41)]
    ingest_points(run_id=run.pk, points=pts, publish=False)
    return run


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _requests(api, run, queue, plan):
    yield "/api/ui/plan-preview/", {"plan": plan}
    yield f"/api/runs/{run.pk}/lr-law/what-if/", {"plan": plan, "stage": 0}
    yield "/api/pipelines/", {"plan": {**plan, "name": "fuzzed"}, "replace": True}
    yield "/api/runs/", {"plan": plan, "queue": queue.name}


@pytest.mark.django_db
def test_huge_budgets_and_deep_bodies_are_refused_without_memory_growth(api, queue, fitted_run):
    calls = {"n": 0, "codes": set()}

    def send(plan) -> None:
        for url, body in _requests(api, fitted_run, queue, plan):
            r = api.post(url, body, format="json")
            check(url, r)

    def send_raw(plan_json: str) -> None:
        for url, _ in _requests(api, fitted_run, queue, {}):
            r = api.post(url, f'{{"plan": {plan_json}}}', content_type="application/json")
            check(url, r)

    def check(url, r) -> None:
        assert r.status_code < 500, (url, r.status_code, r.content[:300])
        calls["codes"].add(r.status_code)
        calls["n"] += 1

    send(reduced_lm_plan())  # warm up every code path (imports, caches) before measuring
    before = _rss()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        budget=BUDGETS,
        unit=st.sampled_from(["steps", "tokens"]),
        kind=st.sampled_from(["constant", "cosine", "wsd", "infinite", "linear"]),
        warmup=st.one_of(st.just(0), BUDGETS),
    )
    def fuzz(budget, unit, kind, warmup):
        send(_plan(budget, unit, kind, warmup))

    fuzz()
    base = orjson.dumps(reduced_lm_plan()).decode()
    for depth in (10, 60, 63, 64, 65, 99, 100, 101, 200, 500, 1000, 5000):
        send_raw(base[:-1] + f', "model": {_nested(depth)}}}')
        send_raw(base[:-1] + f', "stages": [{_nested(depth)}]}}')
        send_raw(_nested(depth))
    grown = (_rss() - before) / 2**20
    assert calls["n"] > 250
    assert 400 in calls["codes"] and (200 in calls["codes"] or 201 in calls["codes"])
    assert grown < 50, f"the web process grew by {grown:.0f} MB"
