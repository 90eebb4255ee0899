import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.analysis import (
    avg_min_acc,
    loss_forgetting,
    matrix_from_series,
    matrix_metrics,
    min_acc_per_task,
    stability_gaps,
    wc_acc,
)

FINITE = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
ENTRY = FINITE | st.none() | st.just(math.nan) | st.just(math.inf)
VALUES = st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0])


def no_nan(x):
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, dict):
        return all(no_nan(v) for v in x.values())
    if isinstance(x, list | tuple):
        return all(no_nan(v) for v in x)
    return x is None or isinstance(x, bool | int | str)


def square(elements, n_min=1, n_max=5):
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.lists(st.lists(elements, min_size=n, max_size=n), min_size=n, max_size=n)
    )


@given(st.integers(1, 6), FINITE)
def test_all_equal_matrix_has_zero_forgetting(n, v):
    m = matrix_metrics([[v] * n for _ in range(n)], b=[v] * n)
    if n > 1:
        assert m["forgetting_per_task"] == [0.0] * (n - 1)
        assert m["avg_forgetting"] == 0.0
        assert m["bwt"] == 0.0
        assert m["fwt"] == 0.0
    assert math.isclose(m["acc"], v, rel_tol=1e-12, abs_tol=1e-12)


@st.composite
def lower_triangular_monotone(draw):
    """Columns never exceed their diagonal and only decrease after it."""
    n = draw(st.integers(2, 6))
    R = [[0.0] * n for _ in range(n)]
    for j in range(n):
        diag = draw(st.floats(0, 1))
        R[j][j] = diag
        for i in range(j):
            R[i][j] = draw(st.floats(0, diag))
        for i in range(j + 1, n):
            R[i][j] = draw(st.floats(0, R[i - 1][j]))
    return R


@given(lower_triangular_monotone())
def test_bwt_is_minus_avg_forgetting(R):
    m = matrix_metrics(R)
    assert m["bwt"] == -m["avg_forgetting"]
    assert all(f >= 0 for f in m["forgetting_per_task"])


@given(square(ENTRY), st.none() | st.lists(ENTRY, min_size=6, max_size=6))
def test_matrix_outputs_never_nan(R, b):
    b = None if b is None else b[: len(R)]
    m = matrix_metrics(R, b)
    assert no_nan(m)
    json.dumps(m, allow_nan=False)
    lf = loss_forgetting(R)
    assert lf[0] == [None] * len(R)
    assert no_nan(lf)


@given(square(FINITE, 2, 5))
def test_loss_forgetting_matches_definition(L):
    lf = loss_forgetting(L)
    for i in range(1, len(L)):
        for j in range(len(L)):
            assert lf[i][j] == L[i][j] - min(L[r][j] for r in range(i))


@st.composite
def series_case(draw):
    T = draw(st.integers(1, 4))
    bnds = sorted(draw(st.sets(st.integers(0, 40), min_size=T, max_size=T)))
    series = []
    for _ in range(T):
        steps = draw(st.sets(st.integers(-2, 50), max_size=15))
        series.append([[s, draw(VALUES | st.none() | st.just(math.nan))] for s in steps])
    t = draw(st.none() | st.integers(-5, bnds[-1]))
    return bnds, series, t


def all_results(series, bnds, t, hib=True, window=None, tol=0.0):
    return {
        "R": matrix_from_series(series, bnds),
        "min": min_acc_per_task(series, bnds, t),
        "avg": avg_min_acc(series, bnds, t),
        "wc": wc_acc(series, bnds, t),
        "gaps": stability_gaps(series, bnds, hib, window, tol),
    }


@settings(max_examples=200, deadline=None)
@given(
    series_case(),
    st.randoms(use_true_random=False),
    st.booleans(),
    st.none() | st.integers(0, 12),
    st.sampled_from([0.0, 0.125]),
)
def test_series_permutation_invariance_and_no_nan(case, rnd, hib, window, tol):
    bnds, series, t = case
    base = all_results(series, bnds, t, hib, window, tol)
    shuffled = []
    for s in series:
        s = list(s)
        rnd.shuffle(s)
        shuffled.append(s)
    assert all_results(shuffled, bnds, t, hib, window, tol) == base
    assert no_nan(base)
    json.dumps(base, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(series_case(), st.booleans(), st.none() | st.integers(0, 12), st.sampled_from([0.0, 0.125]))
def test_gap_invariants(case, hib, window, tol):
    bnds, series, _ = case
    clean = [{s: v for s, v in ser if v is not None and math.isfinite(v)} for ser in series]
    sign = 1 if hib else -1
    for g in stability_gaps(series, bnds, hib, window, tol):
        if g["extreme_step"] is None:
            assert g["dropped"] is None and g["recovery_step"] is None
            continue
        b = g["boundary_step"]
        pts = clean[g["eval_index"]]
        end = bnds[g["boundary_index"] + 1] if window is None else b + window
        win = {s: v for s, v in pts.items() if b < s <= end}
        assert g["extreme_value"] == (min if hib else max)(win.values())
        assert g["extreme_step"] == min(s for s, v in win.items() if v == g["extreme_value"])
        assert g["reference_step"] <= b < g["extreme_step"] <= end
        assert g["drop_depth"] == sign * (g["reference_value"] - g["extreme_value"])
        assert g["dropped"] == (g["drop_depth"] > tol)
        assert g["time_to_drop"] == g["extreme_step"] - b
        if g["recovery_step"] is not None:
            assert g["extreme_step"] <= g["recovery_step"] <= end
            assert g["time_to_recover"] == g["recovery_step"] - b
        if not g["dropped"]:
            assert g["recovery_step"] == g["extreme_step"]


@given(series_case())
def test_wc_acc_between_extremes(case):
    bnds, series, t = case
    wc = wc_acc(series, bnds, t)
    vals = [v for s in series for _, v in s if v is not None and math.isfinite(v)]
    if wc is not None:
        assert min(vals) - 1e-12 <= wc <= max(vals) + 1e-12
    avg = avg_min_acc(series, bnds, t)
    mins = min_acc_per_task(series, bnds, t)
    if avg is not None:
        assert min(m for m in mins if m is not None) <= avg + 1e-12
