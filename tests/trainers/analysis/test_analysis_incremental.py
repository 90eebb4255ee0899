import json
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.analysis import (
    ContinualState,
    avg_min_acc,
    matrix_from_series,
    matrix_metrics,
    min_acc_per_task,
    stability_gaps,
    wc_acc,
)

VALUES = st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0])


def batch_results(series, bnds, hib=True, window=None, tol=0.0, baseline=None):
    R = matrix_from_series(series, bnds)
    out = {"matrix": R, "stability_gaps": stability_gaps(series, bnds, hib, window, tol)}
    if len(series) == len(bnds):
        out["metrics"] = matrix_metrics(R, baseline)
        out["min_acc_per_task"] = min_acc_per_task(series, bnds)
        out["avg_min_acc"] = avg_min_acc(series, bnds)
        out["wc_acc"] = wc_acc(series, bnds)
    else:
        out.update(metrics=None, min_acc_per_task=None, avg_min_acc=None, wc_acc=None)
    return out


def assert_same(state, series, bnds, **kw):
    snap = state.snapshot()
    assert snap.pop("exact") is True
    assert snap == batch_results(series, bnds, **kw)
    json.dumps(snap, allow_nan=False)


@st.composite
def scenarios(draw):
    T = draw(st.integers(1, 4))
    bnds = sorted(draw(st.sets(st.integers(0, 40), min_size=T, max_size=T)))
    M = draw(st.sampled_from([T, T, T, T + 1, max(T - 1, 1)]))
    streams = []
    for _ in range(M):
        steps = sorted(draw(st.sets(st.integers(-2, 50), max_size=20)))
        stream = []
        for s in steps:
            stream.append([s, draw(VALUES)])
            if draw(st.integers(0, 5)) == 0:  # re-send of the newest point, new value
                stream.append([s, draw(VALUES)])
        streams.append(stream)
    # cut every stream into batches and interleave the batches across eval sets
    batches = []
    for j, stream in enumerate(streams):
        cuts = sorted(draw(st.sets(st.integers(1, max(len(stream) - 1, 1)), max_size=6)))
        edges = [0, *[c for c in cuts if c < len(stream)], len(stream)]
        batches.append([(j, stream[a:b]) for a, b in pairwise(edges) if b > a])
    order = draw(st.permutations([j for j, bs in enumerate(batches) for _ in bs]))
    opts = {
        "hib": draw(st.booleans()),
        "window": draw(st.none() | st.integers(0, 15)),
        "tol": draw(st.sampled_from([0.0, 0.125, 0.25])),
    }
    return bnds, M, streams, batches, order, opts


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_random_batches_match_batch_functions(scenario, rnd):
    bnds, M, streams, batches, order, opts = scenario
    state = ContinualState(
        M, bnds, higher_is_better=opts["hib"], window=opts["window"], tol=opts["tol"]
    )
    received = [[] for _ in range(M)]
    pos = [0] * M
    for j in order:
        _, pts = batches[j][pos[j]]
        pos[j] += 1
        received[j].extend(pts)
        steps = [p[0] for p in pts]
        values = [p[1] for p in pts]
        if len(set(steps)) == len(steps):  # order inside a batch does not matter
            idx = list(range(len(pts)))
            rnd.shuffle(idx)
            steps, values = [steps[i] for i in idx], [values[i] for i in idx]
        state.update(j, steps, values)
        if rnd.random() < 0.3:
            state = ContinualState.from_dict(json.loads(json.dumps(state.to_dict())))
        assert_same(state, received, bnds, **opts)
    assert received == streams


def test_hand_case_and_resend_replaces_newest():
    bnds = [10, 20, 30]
    s = ContinualState(3, bnds)
    s.update(0, [8, 10, 12], [0.875, 0.75, 0.5])
    s.update(0, [12, 14], [0.625, 0.5])  # re-sent step 12 replaces 0.5 by 0.625
    snap = s.snapshot()
    g = snap["stability_gaps"][0]
    assert (g["extreme_step"], g["extreme_value"]) == (14, 0.5)
    series = [[[8, 0.875], [10, 0.75], [12, 0.625], [14, 0.5]], [], []]
    assert_same(s, series, bnds)
    assert snap["matrix"][0] == [0.75, None, None]
    assert snap["min_acc_per_task"] == [0.5, None, None]


def test_out_of_order_flags_inexact_only_when_it_matters():
    bnds = [10, 20]
    s = ContinualState(1, bnds)
    s.update(0, [10, 12, 14, 16], [0.75, 0.5, 0.75, 0.75])
    # identical re-send of old points changes nothing: still exact
    s.update(0, [10, 12], [0.75, 0.5])
    assert s.snapshot()["exact"] is True
    # a late, new point that is not an extreme or a recovery leaves the state unchanged
    s.update(0, [11], [0.625])
    snap = s.snapshot()
    assert snap["exact"] is True
    full = [[[10, 0.75], [11, 0.625], [12, 0.5], [14, 0.75], [16, 0.75]]]
    assert snap["stability_gaps"] == stability_gaps(full, bnds)
    # a late point creating a new extreme is flagged
    s.update(0, [13], [0.25])
    snap = s.snapshot()
    assert snap["exact"] is False
    g = snap["stability_gaps"][0]
    assert (g["extreme_step"], g["extreme_value"]) == (13, 0.25)
    assert s.to_dict()["exact"] is False


def test_nan_values_dropped_and_validation():
    s = ContinualState(1, [10])
    s.update(0, [1, 2], [np.nan, None])
    assert s.snapshot()["matrix"] == [[None]]
    with pytest.raises(IndexError):
        s.update(1, [1], [0.5])
    with pytest.raises(ValueError):
        s.update(0, [1, 2], [0.5])
    with pytest.raises(ValueError):
        ContinualState(1, [10], tol=-0.1)
    with pytest.raises(ValueError):
        ContinualState.from_dict({"version": 99})


def test_baseline_and_round_trip():
    bnds = [10, 20]
    s = ContinualState(2, bnds, baseline=[0.25, 0.125], higher_is_better=False, window=5)
    s.update(1, [0, 5, 10, 15], [0.5, 0.25, 0.5, 0.75])
    s.update(0, [10, 20], [1.0, 0.5])
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    s2 = ContinualState.from_dict(d)
    assert s2.snapshot() == s.snapshot()
    snap = s.snapshot()
    assert snap["metrics"]["fwt"] == 0.5 - 0.125
    series = [[[10, 1.0], [20, 0.5]], [[0, 0.5], [5, 0.25], [10, 0.5], [15, 0.75]]]
    assert snap == {
        **batch_results(series, bnds, hib=False, window=5, baseline=[0.25, 0.125]),
        "exact": True,
    }


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_any_arrival_order_keeps_order_independent_parts_exact(scenario, rnd):
    bnds, M, streams, _, _, opts = scenario
    # unique steps, points arriving in a random global order and random batch sizes
    series = [list({p[0]: p for p in stream}.values()) for stream in streams]
    points = [(j, p) for j, s in enumerate(series) for p in s]
    rnd.shuffle(points)
    state = ContinualState(M, bnds, opts["hib"], opts["window"], opts["tol"])
    i = 0
    while i < len(points):
        n = rnd.randint(1, 4)
        chunk = points[i : i + n]
        i += n
        for j in {c[0] for c in chunk}:
            pts = [c[1] for c in chunk if c[0] == j]
            state.update(j, [p[0] for p in pts], [p[1] for p in pts])
    snap = state.snapshot()
    expected = batch_results(series, bnds, **opts)
    exact = snap.pop("exact")
    if exact:
        assert snap == expected
    for k in ("matrix", "metrics", "min_acc_per_task", "avg_min_acc", "wc_acc"):
        assert snap[k] == expected[k]
    keys = ("reference_step", "reference_value", "extreme_step", "extreme_value", "drop_depth")
    for got, want in zip(snap["stability_gaps"], expected["stability_gaps"], strict=True):
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
