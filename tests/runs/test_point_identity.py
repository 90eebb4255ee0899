"""A point is identified by (run, key, step), and only the run's writer may write it: sent
with or without a stage label, twice, or by two clients at once, it is stored once (series,
rollups, CSV export); worker runs and closed runs refuse API writes; steps outside the run
or past 2**53 are 400s that change nothing."""

from __future__ import annotations

import csv
import io
import threading

import pytest

from runs.models import MetricPoint, Run, Series, SeriesRollup
from runs.selectors.export import export_csv
from runs.services.ingest import ROLLUP_LEVELS
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan


def _external(team) -> Run:
    return run_submit(team=team, queue=f.QueueFactory(), plan=reduced_lm_plan(), external=True)


def _post(api, run, points, **extra):
    return api.post(f"/api/runs/{run.pk}/metrics/", {"points": points, **extra}, format="json")


def _pts(key, steps, value=1.0):
    return [{"key": key, "step": s, "value": value + s} for s in steps]


def _stored(run) -> list[tuple[str, int, float]]:
    return sorted(
        MetricPoint.objects.filter(series__run=run).values_list("series__key", "step", "value")
    )


def _csv_rows(run) -> list[list[str]]:
    """What GET /api/runs/{id}/export/ streams (tests/runs/test_export.py covers the view)."""
    body = b"".join(export_csv(run_id=run.pk))
    return list(csv.reader(io.StringIO(body.decode())))[1:]


def _rollup_counts(run) -> set[int]:
    """Points counted at each rollup level (every level covers every point once)."""
    rows = SeriesRollup.objects.filter(series__run=run)
    return {sum(r.count for r in rows if r.level == lvl) for lvl in range(ROLLUP_LEVELS)}


@pytest.mark.django_db
def test_the_same_key_and_step_with_and_without_a_stage_is_one_point(api, team):
    run = _external(team)
    assert _post(api, run, _pts("eval/prose/loss", [10, 20]), stage=0).status_code == 200
    r = _post(api, run, _pts("eval/prose/loss", [20, 30], value=5.0))
    assert r.status_code == 200, r.json()
    assert Series.objects.filter(run=run).count() == 1
    assert _stored(run) == [("eval/prose/loss", 10, 11.0), ("eval/prose/loss", 20, 25.0),
                            ("eval/prose/loss", 30, 35.0)]  # fmt: skip
    assert [r[:3] for r in _csv_rows(run)] == [
        ["eval/prose/loss", "10", "11"],
        ["eval/prose/loss", "20", "25"],
        ["eval/prose/loss", "30", "35"],
    ]
    assert _rollup_counts(run) == {3}
    got = api.get(f"/api/runs/{run.pk}/series/?keys=eval/prose/loss").json()["series"]
    assert got["eval/prose/loss"]["steps"] == [10, 20, 30]


@pytest.mark.django_db(transaction=True)
def test_two_clients_sending_the_same_points_at_once_store_each_once(team):
    run = _external(team)
    clients = [f.api_client_for(team, "member") for _ in range(2)]
    answers: list[int] = []

    def send(client, value):
        for lo in range(1, 100, 10):
            r = _post(client, run, _pts("train/loss", range(lo, lo + 10), value))
            answers.append(r.status_code)

    threads = [threading.Thread(target=send, args=(c, v)) for c, v in zip(clients, (1.0, 2.0), strict=True)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 20
    stored = _stored(run)
    assert [s for _, s, _ in stored] == list(range(1, 101))
    assert Series.objects.get(run=run).count == 100
    assert _rollup_counts(run) == {100}
    assert len(_csv_rows(run)) == 100


@pytest.mark.django_db
def test_a_run_executed_by_workers_refuses_api_writes(api, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    r = _post(api, run, _pts("train/loss", [1]))
    assert r.status_code == 409
    assert "executed by Stagewise's workers" in r.json()["detail"]
    assert _stored(run) == []


@pytest.mark.django_db
@pytest.mark.parametrize("final", ["succeeded", "failed", "canceled"])
def test_a_finished_run_refuses_writes_and_keeps_its_points(api, team, final):
    run = _external(team)
    assert _post(api, run, _pts("eval/t0/acc", [20], value=0.5), stage=0).status_code == 200
    before = _stored(run)
    if final == "succeeded":
        for i in range(3):
            for state in ("running", "succeeded"):
                r = api.post(f"/api/runs/{run.pk}/stages/{i}/", {"state": state}, format="json")
                assert r.status_code == 200, r.json()
    elif final == "failed":
        api.post(f"/api/runs/{run.pk}/stages/0/", {"state": "failed"}, format="json")
    else:
        assert api.post(f"/api/runs/{run.pk}/cancel/").status_code == 200
    run.refresh_from_db()
    assert run.state == final

    r = _post(api, run, [{"key": "eval/t0/acc", "step": 20, "value": 0.0}])

    assert r.status_code == 409
    assert ("canceled" if final == "canceled" else final) in r.json()["detail"]
    assert _stored(run) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("step", "stage", "reason"),
    [
        (101, None, "outside run"),  # the reduced plan has 100 steps
        (3000, None, "outside run"),
        (50, 0, "outside stage 0"),  # stage 0 is steps 0..40
        (10, 2, "outside stage 2"),
        (2**53, None, "below 2**53"),
        (2**63 - 1, None, "below 2**53"),
        (-1, None, "non-negative"),
    ],
)
def test_steps_outside_the_run_or_past_2_53_are_400s_naming_the_point(
    api, team, step, stage, reason
):
    run = _external(team)
    _post(api, run, _pts("train/loss", [5]))
    before = _stored(run)
    body = {"stage": stage} if stage is not None else {}
    fine = {None: 6, 0: 6, 2: 90}[stage]  # a step the writer may send
    points = _pts("train/loss", [fine]) + [{"key": "train/loss", "step": step, "value": 1.0}]
    for _ in range(2):  # twice: the second must not find anything half-stored
        r = _post(api, run, points, **body)
        assert r.status_code == 400, r.content
        assert (r.json()["index"], r.json()["field"]) == (1, "step")
        assert all(w in r.json()["reason"] for w in reason.split()), r.json()
    assert _stored(run) == before
