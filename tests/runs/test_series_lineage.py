"""GET /api/runs/{id}/series/?lineage=true: a fork's curves from step 0, stitched from its
ancestors' points up to the fork steps and its own points after them."""

import pytest

from runs.services.ingest import IngestPoint, ingest_points
from tests import factories as f

pytestmark = pytest.mark.django_db

# parent P: steps 0..999 in two stages; fork F of P at step 300 (mid-stage 0): its own steps
# 301..799; fork G of F at step 600: its own steps 601..900. Each run's values are in its own
# range, and P's and F's points after the cut-offs belong to other branches.
P_END, F_CUT, F_END, G_CUT, G_END = 999, 300, 799, 600, 900


def p_val(s: int) -> float:
    return float(s) if s <= F_CUT else -1e6 - s  # after the fork: never part of F's line


def f_val(s: int) -> float:
    return 10_000.0 + s if s <= G_CUT else -2e6 - s  # after G's fork: never part of G's line


def g_val(s: int) -> float:
    return 20_000.0 + s


def _run_with_stages(team, bounds, **kw):
    run = f.RunFactory(team=team, **kw)
    stages = [
        f.StageRunFactory(run=run, stage_index=i, start_step=lo, end_step=hi)
        for i, (lo, hi) in enumerate(bounds)
    ]
    return run, stages


def _ingest(run, stages, key, steps, fn):
    """One batch per stage run (a series per (stage run, key), as the worker stores them)."""
    for st in stages:
        pts = [IngestPoint(key, s, fn(s)) for s in steps if st.start_step <= s <= st.end_step]
        pts = [p for p in pts if st.stage_index == 0 or p.step > st.start_step]
        ingest_points(run_id=run.pk, points=pts, publish=False)


def _fork(team, parent, parent_stage, step, bounds):
    ckpt = f.CheckpointFactory(stage_run=parent_stage, step=step)
    return _run_with_stages(team, bounds, parent=parent, fork_checkpoint=ckpt)


@pytest.fixture
def tree(team):
    bounds = [(0, 500), (500, 1000)]
    p, p_st = _run_with_stages(team, bounds)
    _ingest(p, p_st, "train/loss", range(P_END + 1), p_val)
    fk, f_st = _fork(team, p, p_st[0], F_CUT, bounds)
    _ingest(fk, f_st, "train/loss", range(F_CUT + 1, F_END + 1), f_val)
    g, g_st = _fork(team, fk, f_st[1], G_CUT, bounds)
    _ingest(g, g_st, "train/loss", range(G_CUT + 1, G_END + 1), g_val)
    return {"p": p, "f": fk, "g": g, "p_stages": p_st, "f_stages": f_st, "g_stages": g_st}


def _series(api, run, query="", key="train/loss"):
    r = api.get(f"/api/runs/{run.pk}/series/?keys={key}{query}")
    assert r.status_code == 200, r.content
    return r.json()["series"][key]


def line_value(s: int) -> float:
    """G's whole history: P up to F's fork step, F up to G's, then G."""
    return p_val(s) if s <= F_CUT else f_val(s) if s <= G_CUT else g_val(s)


def test_fork_lineage_is_parent_points_to_the_fork_step_then_its_own(api, tree):
    body = _series(api, tree["f"], "&lineage=true&max_points=5000")
    assert body["level"] is None
    assert body["steps"] == list(range(F_END + 1))
    expected = [p_val(s) if s <= F_CUT else f_val(s) for s in range(F_END + 1)]
    assert body["values"] == expected
    assert body["own_from_step"] == F_CUT + 1


def test_fork_of_a_fork_takes_each_ancestor_up_to_its_cut(api, tree):
    body = _series(api, tree["g"], "&lineage=true&max_points=5000")
    assert body["level"] is None
    assert body["steps"] == list(range(G_END + 1))
    assert body["values"] == [line_value(s) for s in range(G_END + 1)]
    assert body["own_from_step"] == G_CUT + 1


def test_without_lineage_a_fork_answers_its_own_points_only(api, tree):
    default = _series(api, tree["g"], "&max_points=5000")
    explicit = _series(api, tree["g"], "&max_points=5000&lineage=false")
    assert default == explicit
    assert default["steps"] == list(range(G_CUT + 1, G_END + 1))
    assert "own_from_step" not in default
    down = _series(api, tree["g"], "&max_points=50&lineage=false")
    assert down["level"] is not None and min(down["steps"]) > G_CUT
    after = _series(api, tree["g"], "&after_step=850")
    assert after == {"steps": list(range(851, G_END + 1)), "values": [g_val(s) for s in range(851, G_END + 1)]}  # fmt: skip


@pytest.mark.parametrize("max_points", [3000, 1000, 200])
def test_a_run_without_ancestors_answers_the_same_with_lineage(api, tree, max_points):
    plain = _series(api, tree["p"], f"&max_points={max_points}")
    stitched = _series(api, tree["p"], f"&max_points={max_points}&lineage=true")
    assert stitched.pop("own_from_step") == 0
    assert stitched == plain


@pytest.mark.parametrize("max_points", [100, 40, 7])
def test_downsampled_lineage_stays_within_max_points_and_on_the_line(api, tree, max_points):
    body = _series(api, tree["g"], f"&lineage=true&max_points={max_points}")
    assert body["level"] is not None and body["bucket_steps"] >= 16
    steps = body["steps"]
    assert 0 < len(steps) <= max_points
    assert steps == sorted(set(steps)), "strictly increasing steps"
    # Every point is a real point of G's line: a bucket never mixes in the other branches
    # (P after step 300, F after step 600), whose values are far below every line value.
    for s, v, lo, hi in zip(steps, body["values"], body["min"], body["max"], strict=True):
        assert v == line_value(s)
        assert 0.0 <= lo <= v <= hi
        if s > G_CUT:
            assert lo >= g_val(G_CUT + 1)
        elif s > F_CUT:
            assert f_val(F_CUT + 1) <= lo and hi <= f_val(G_CUT)
        else:
            assert hi <= p_val(F_CUT)
    assert min(body["min"]) == 0.0 and max(body["max"]) == g_val(G_END)
    assert body["own_from_step"] == G_CUT + 1
    if max_points >= 40:
        # fine enough that each ancestor's cut-off bucket stands on its own, ending at the cut
        assert F_CUT in steps and G_CUT in steps and steps[-1] == G_END


def test_lineage_window_and_after_step(api, tree):
    window = _series(api, tree["g"], "&lineage=true&min_step=250&max_step=650")
    assert window["steps"] == list(range(250, 651))
    assert window["values"] == [line_value(s) for s in range(250, 651)]
    after = _series(api, tree["g"], "&lineage=true&after_step=250&max_points=100")
    assert after["steps"] == list(range(251, 351))
    assert after["values"] == [line_value(s) for s in range(251, 351)]
    assert after["own_from_step"] == G_CUT + 1
    rest = _series(api, tree["g"], "&lineage=true&after_step=880")
    assert rest["steps"] == list(range(881, G_END + 1))


def test_a_point_resent_at_the_fork_step_is_the_forks_own(api, team):
    # A stage-end fork re-evaluates new eval sets at its first stage's start, the fork step.
    bounds = [(0, 100), (100, 200)]
    p, p_st = _run_with_stages(team, bounds)
    _ingest(p, p_st, "eval/x/loss", range(0, 201, 20), lambda s: 1.0 + s)
    fk, f_st = _fork(team, p, p_st[0], 100, bounds)
    ingest_points(run_id=fk.pk, publish=False,
                  points=[IngestPoint("eval/x/loss", s, -1.0 - s) for s in range(100, 201, 20)])  # fmt: skip
    body = _series(api, fk, "&lineage=true", key="eval/x/loss")
    assert body["steps"] == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200]
    assert body["values"] == [1.0, 21.0, 41.0, 61.0, 81.0, -101.0, -121.0, -141.0, -161.0, -181.0, -201.0]  # fmt: skip
    assert body["own_from_step"] == 100


def test_a_key_only_the_ancestors_have_is_inherited_whole(api, tree):
    _ingest(tree["p"], tree["p_stages"], "lr", range(0, 1000, 50), lambda s: s / 1000)
    body = _series(api, tree["g"], "&lineage=true", key="lr")
    assert body["steps"] == list(range(0, F_CUT + 1, 50))
    assert body["own_from_step"] is None
    assert _series(api, tree["g"], "", key="lr") == {"steps": [], "values": [], "level": None}


def test_lineage_stops_at_an_ancestor_of_another_team(api, team):
    other = f.TeamFactory()
    p, p_st = _run_with_stages(other, [(0, 100)])
    _ingest(p, p_st, "train/loss", range(101), float)
    fk, f_st = _run_with_stages(team, [(0, 100)], parent=p,
                                fork_checkpoint=f.CheckpointFactory(stage_run=p_st[0], step=50))  # fmt: skip
    _ingest(fk, f_st, "train/loss", range(51, 101), lambda s: -float(s))
    body = _series(api, fk, "&lineage=true")
    assert body["steps"] == list(range(51, 101))
    assert body["own_from_step"] == 51


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_bad_lineage_value_is_a_400_naming_the_field(api, tree, value):
    r = api.get(f"/api/runs/{tree['f'].pk}/series/?keys=train/loss&lineage={value}")
    assert r.status_code == 400, r.content
    body = r.json()
    errors = body.get("errors", body)
    assert "lineage" in errors and "boolean" in str(errors["lineage"]).lower()
