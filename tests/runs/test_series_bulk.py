"""GET /api/series/: many runs and keys in one request, each line the one GET
/api/runs/{id}/series/ gives for the same run, key, max_points and lineage, in a fixed number
of queries; runs the caller may not see are left out and listed in ``missing``; bounded."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs.selectors.series import MAX_BULK_KEYS, MAX_BULK_POINTS, MAX_BULK_RUNS
from runs.services.ingest import IngestPoint, ingest_points
from tests import factories as f

pytestmark = pytest.mark.django_db

KEYS = ["train/loss", "lr", "eval/a/loss"]


def _run(team, bounds=((0, 500), (500, 3000)), **kw):
    run = f.RunFactory(team=team, **kw)
    stages = [f.StageRunFactory(run=run, stage_index=i, start_step=lo, end_step=hi)
              for i, (lo, hi) in enumerate(bounds)]  # fmt: skip
    return run, stages


def _ingest(run, steps, offset=0.0, keys=KEYS[:2]):
    pts = [
        IngestPoint(k, s, offset + (s % 97) * 0.01 + i) for i, k in enumerate(keys) for s in steps
    ]
    ingest_points(run_id=run.pk, points=pts, publish=False)


@pytest.fixture
def family(team):
    """P (3,000 points of two keys), its fork F at step 1,200 (to 2,400) and F's fork G at
    2,000 (to 2,900, plus a few eval points); a short run S (50 points)."""
    p, p_st = _run(team)
    _ingest(p, range(0, 3000))
    ck = f.CheckpointFactory(stage_run=p_st[1], step=1200)
    fk, f_st = _run(team, parent=p, fork_checkpoint=ck)
    _ingest(fk, range(1201, 2401), offset=10.0)
    ck2 = f.CheckpointFactory(stage_run=f_st[1], step=2000)
    g, _ = _run(team, parent=fk, fork_checkpoint=ck2)
    _ingest(g, range(2001, 2901), offset=20.0)
    _ingest(g, range(2010, 2901, 10), keys=["eval/a/loss"])
    s, _ = _run(team)
    _ingest(s, range(1, 51), offset=5.0)
    return {"p": p, "f": fk, "g": g, "s": s}


def _single(api, run_id, key, query):
    r = api.get(f"/api/runs/{run_id}/series/?keys={key}{query}")
    assert r.status_code == 200, r.content
    return r.json()["series"][key]


def _bulk(api, runs, keys=KEYS, query=""):
    ids = ",".join(str(r) for r in runs)
    r = api.get(f"/api/series/?runs={ids}&keys={','.join(keys)}{query}")
    assert r.status_code == 200, r.content
    return r.json()


@pytest.mark.parametrize("max_points", [2, 40, 100, 500, 1500, 10_000])
@pytest.mark.parametrize("lineage", [False, True])
def test_each_line_is_what_the_single_run_endpoint_answers(api, family, max_points, lineage):
    runs = [family[k].pk for k in ("g", "p", "s", "f")]
    query = f"&max_points={max_points}" + ("&lineage=true" if lineage else "")
    body = _bulk(api, runs, query=query)
    assert body["missing"] == [] and body["max_points"] == max_points
    assert [r["run"] for r in body["runs"]] == runs
    levels = set()
    for entry in body["runs"]:
        assert sorted(entry["series"]) == sorted(KEYS)
        for key in KEYS:
            expected = _single(api, entry["run"], key, query)
            assert entry["series"][key] == expected, (entry["run"], key)
            levels.add(expected["level"])
    assert None in levels and (max_points == 10_000 or len(levels) > 1)  # raw and rolled up


def test_a_rolled_up_line_has_its_envelopes(api, family):
    line = _bulk(api, [family["p"].pk], keys=["train/loss"], query="&max_points=100")["runs"][0]
    s = line["series"]["train/loss"]
    assert s["level"] is not None and s["bucket_steps"] > 1
    assert len(s["steps"]) == len(s["min"]) == len(s["max"]) <= 100
    assert all(lo <= v <= hi for lo, v, hi in zip(s["min"], s["values"], s["max"], strict=True))


def test_the_queries_do_not_grow_with_runs_and_keys(api, team, family):
    many = []
    for i in range(12):
        run, _ = _run(team)
        _ingest(run, range(0, 2000), offset=i)
        many.append(run.pk)

    def count(runs, keys):
        with CaptureQueriesContext(connection) as ctx:
            _bulk(api, runs, keys=keys, query="&max_points=300&lineage=true")
        return len(ctx.captured_queries)

    few = count(many[:2], KEYS[:1])
    assert count(many, KEYS) == few
    # the fork family: one more query per generation of ancestors, never one per run or key
    assert count([family["g"].pk, family["f"].pk, *many], KEYS) <= few + 3


def test_runs_of_another_team_and_missing_ones_are_left_out_alike(api, family):
    other = f.TeamFactory()
    theirs, _ = _run(other)
    _ingest(theirs, range(0, 10))
    asked = [theirs.pk, family["s"].pk, 2_000_000_000, family["s"].pk]
    body = _bulk(api, asked, keys=["train/loss"])
    assert [r["run"] for r in body["runs"]] == [family["s"].pk]  # each run once
    assert body["missing"] == [theirs.pk, 2_000_000_000]


def test_a_fork_of_another_teams_run_shows_only_its_own_history(api, team):
    other = f.TeamFactory()
    parent, p_st = _run(other)
    _ingest(parent, range(0, 100))
    ck = f.CheckpointFactory(stage_run=p_st[0], step=50)
    fork, _ = _run(team, parent=parent, fork_checkpoint=ck)
    _ingest(fork, range(51, 100), offset=3.0)
    line = _bulk(api, [fork.pk], keys=["train/loss"], query="&lineage=true")["runs"][0]
    assert line["series"]["train/loss"]["steps"] == list(range(51, 100))
    assert line["series"]["train/loss"] == _single(api, fork.pk, "train/loss", "&lineage=true")


def test_a_key_without_points_is_an_empty_line(api, family):
    body = _bulk(api, [family["s"].pk], keys=["nope"])
    assert body["runs"][0]["series"]["nope"] == {"steps": [], "values": [], "level": None}


def test_the_answer_has_a_points_budget(api, team):
    run, _ = _run(team)
    ids = ",".join([str(run.pk)] * 1 + [str(2_000_000_000 + i) for i in range(MAX_BULK_RUNS - 1)])
    keys = ",".join(f"k{i}" for i in range(MAX_BULK_KEYS))
    body = api.get(f"/api/series/?runs={ids}&keys={keys}&max_points=10000").json()
    assert body["max_points"] == MAX_BULK_POINTS // (MAX_BULK_RUNS * MAX_BULK_KEYS)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("keys=train/loss", "runs"),
        ("runs=1", "keys"),
        ("runs=&keys=a", "runs"),
        ("runs=abc&keys=a", "runs"),
        ("runs=1,,2&keys=a", "runs"),
        ("runs=-1&keys=a", "runs"),
        ("runs=1.5&keys=a", "runs"),
        ("runs=%201&keys=a", "runs"),
        ("runs=1234567890123456789&keys=a", "runs"),
        (f"runs={','.join(str(i) for i in range(1, MAX_BULK_RUNS + 2))}&keys=a", "runs"),
        ("runs=1&keys=", "keys"),
        ("runs=1&keys=a,,b", "keys"),
        ("runs=1&keys=" + "x" * 201, "keys"),
        (f"runs=1&keys={','.join(f'k{i}' for i in range(MAX_BULK_KEYS + 1))}", "keys"),
        ("runs=1&keys=a&max_points=1", "max_points"),
        ("runs=1&keys=a&max_points=10001", "max_points"),
        ("runs=1&keys=a&max_points=lots", "max_points"),
        ("runs=1&keys=a&lineage=maybe", "lineage"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, query, field):
    r = api.get(f"/api/series/?{query}")
    assert r.status_code == 400, r.content
    body = r.json()
    assert field in body.get("errors", body), body  # DRF's {field: [...]} or {"errors": ...}


def test_too_many_runs_says_the_bound(api):
    ids = ",".join(str(i) for i in range(1, MAX_BULK_RUNS + 2))
    r = api.get(f"/api/series/?runs={ids}&keys=a")
    assert r.status_code == 400
    assert f"at most {MAX_BULK_RUNS} per request" in r.json()["runs"][0]


def test_anonymous_is_a_401(client):
    assert client.get("/api/series/?runs=1&keys=a").status_code == 401
    assert client.get("/api/ui/compare/?runs=1").status_code == 401


def test_compare_runs_have_details_and_keys_with_their_ancestors(api, family):
    other = f.TeamFactory()
    theirs, _ = _run(other)
    ids = [family["g"].pk, theirs.pk, family["s"].pk]
    r = api.get(f"/api/ui/compare/?runs={','.join(map(str, ids))}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert [x["id"] for x in body["runs"]] == [family["g"].pk, family["s"].pk]
    assert body["missing"] == [theirs.pk]
    g = body["runs"][0]
    assert g["keys"] == sorted(KEYS)  # its own and its ancestors'
    assert [st["end_step"] for st in g["stages"]] == [500, 3000]
    assert g["parent"] == family["f"].pk and "plan" in g and "config" in g
    assert body["runs"][1]["keys"] == sorted(KEYS[:2])
