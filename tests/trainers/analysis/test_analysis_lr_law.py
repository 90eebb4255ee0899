import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.analysis import fit_lr_law, lr_areas, lr_law_predict, schedule_nodes
from trainers.analysis.lr_law import ALPHA_MAX, ALPHA_MIN

N = 2000
PEAK = 2e-3
WARMUP = 100
TRUE = {"L0": 2.0, "A": 1.5, "alpha": 0.5, "C": 0.3}


def wsd(n=N, peak=PEAK, warmup=WARMUP, decay_frac=0.2):
    s = np.arange(1, n + 1)
    lr = np.where(s <= warmup, peak * s / warmup, peak)
    d = int(decay_frac * n)
    return np.where(s > n - d, peak * (n - s) / d, lr)


def cosine(n=N, peak=PEAK, warmup=WARMUP, floor=0.1):
    s = np.arange(1, n + 1)
    p = (s - warmup) / (n - warmup)
    cos = floor * peak + (1 - floor) * peak * 0.5 * (1 + np.cos(np.pi * p))
    return np.where(s <= warmup, peak * s / warmup, cos)


def naive_areas(lr, lam):
    """The paper's recursion, with warm-up (an LR rise) not counted as annealing."""
    s1, s2, m, acc1, acc2 = [], [], 0.0, 0.0, 0.0
    for i, eta in enumerate(lr):
        if i > 0:
            m = lam * m + max(lr[i - 1] - eta, 0.0)
        acc1 += eta
        acc2 += m
        s1.append(acc1)
        s2.append(acc2)
    return s1, s2


def test_areas_hand_computed():
    s1, s2 = lr_areas([1.0, 1.0, 0.5, 0.0], lam=0.5)
    assert s1 == [1.0, 2.0, 2.5, 2.5]
    # m = [0, 0, 0.5, 0.5*0.5 + 0.5 = 0.75]
    assert s2 == [0.0, 0.0, 0.5, 1.25]
    assert lr_areas([], 0.9) == ([], [])


def test_warmup_is_not_negative_annealing():
    # rise 0.5 -> 1.0 (warm-up) then 1.0 -> 0.5: only the decrease enters S2
    s1, s2 = lr_areas([0.5, 1.0, 0.5], lam=0.5)
    assert s1 == [0.5, 1.5, 2.0]
    assert s2 == [0.0, 0.0, 0.5]
    # a re-warm at a stage boundary keeps the momentum of the earlier decay, adds nothing
    s1, s2 = lr_areas([1.0, 0.5, 1.0, 1.0], lam=0.5)
    assert s2 == [0.0, 0.5, 0.75, 0.875]


def test_areas_constant_lr_has_no_annealing_area():
    s1, s2 = lr_areas([0.1] * 10)
    assert s1 == pytest.approx([0.1 * (i + 1) for i in range(10)])
    assert s2 == [0.0] * 10


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 0.999, 1.0])
def test_areas_match_naive_recursion(lam):
    rng = np.random.default_rng(1)
    lr = rng.uniform(0, 1e-3, size=9000).tolist()
    s1, s2 = lr_areas(lr, lam)
    n1, n2 = naive_areas(lr, lam)
    assert np.allclose(s1, n1, rtol=1e-12, atol=1e-15)
    assert np.allclose(s2, n2, rtol=1e-9, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 1, allow_nan=False),
)
def test_areas_property(lr, lam):
    s1, s2 = lr_areas(lr, lam)
    n1, n2 = naive_areas(lr, lam)
    assert np.allclose(s1, n1, rtol=1e-9, atol=1e-12)
    assert np.allclose(s2, n2, rtol=1e-9, atol=1e-9)


def test_predict_hand_computed_and_none():
    lr = [1.0, 1.0, 0.5, 0.0]
    p = {"L0": 1.0, "A": 2.0, "alpha": 1.0, "C": 0.5}
    pred = lr_law_predict(p, lr, [1, 2, 3, 4], lam=0.5)
    assert pred == pytest.approx([3.0, 2.0, 1 + 2 / 2.5 - 0.25, 1 + 2 / 2.5 - 0.625])
    # S1 = [0, 1]; the rise 0 -> 1 is warm-up, not annealing: S2 = [0, 0]
    assert lr_law_predict(p, [0.0, 1.0], [1, 2]) == [None, 3.0]
    with pytest.raises(ValueError):
        lr_law_predict(p, lr, [0])
    with pytest.raises(ValueError):
        lr_law_predict(p, lr, [5])


def test_fit_recovers_parameters_and_predicts_cosine():
    lr = wsd()
    steps = np.arange(1, N + 1)
    clean = np.array(lr_law_predict(TRUE, lr, steps))
    rng = np.random.default_rng(0)
    noisy = clean * (1 + rng.normal(0, 1e-3, size=N))  # 0.1 % noise
    fit = fit_lr_law(lr, steps, noisy)
    json.dumps(fit, allow_nan=False)
    assert set(fit) == {"L0", "A", "alpha", "C", "lam", "sse", "points", "se",
                        "annealing_in_fit", "undetermined"}  # fmt: skip
    assert fit["points"] == N - WARMUP  # warm-up points are left out
    assert fit["lam"] == 0.999  # the data were made with the default lam: it is found
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=0.02), k
    assert fit["undetermined"] == []  # 1900 points with 0.1 % noise pin the law down
    held_out = cosine()
    truth = np.array(lr_law_predict(TRUE, held_out, steps))
    pred = np.array(lr_law_predict(fit, held_out, steps))
    assert np.max(np.abs(pred - truth) / truth) < 0.005


def test_fit_exact_data_and_subset_of_steps():
    lr = wsd()
    steps = np.arange(50, N + 1, 7)  # sparse, 1-based, skipping the start
    y = lr_law_predict(TRUE, lr, steps)
    fit = fit_lr_law(lr.tolist(), steps.tolist(), y)
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-4), k
    assert fit["sse"] < 1e-12


def test_fit_constant_lr_gives_zero_c_and_no_nan():
    lr = [1e-3] * 500
    steps = list(range(1, 501))
    y = [3.0 + 0.5 * (s * 1e-3) ** -0.3 for s in steps]
    fit = fit_lr_law(lr, steps, y)
    assert all(math.isfinite(fit[k]) for k in ("L0", "A", "alpha", "C", "lam", "sse"))
    assert fit["alpha"] == pytest.approx(0.3, rel=1e-3)
    assert fit["annealing_in_fit"] is False and fit["se"]["C"] is None
    pred = lr_law_predict(fit, lr, steps)
    assert np.allclose(pred, y, rtol=1e-6)


def test_fit_validation():
    with pytest.raises(ValueError):
        fit_lr_law([1e-3] * 10, [1, 2, 3], [1.0, 1.0, 1.0])  # < 4 points
    with pytest.raises(ValueError):  # 10 points, all of them warm-up
        fit_lr_law(np.linspace(1e-4, 1e-3, 10), list(range(1, 11)), [1.0] * 10)
    with pytest.raises(ValueError):  # steps not on the curve's nodes
        fit_lr_law([1e-3] * 3, [1, 5, 10, 20], [1.0] * 4, nodes=[1, 10, 20])
    with pytest.raises(ValueError):
        fit_lr_law([1e-3] * 10, [1, 2, 3, 4], [1.0] * 5)
    with pytest.raises(ValueError):
        lr_areas([1e-3], lam=1.5)


def test_fit_on_a_short_noisy_stretch_keeps_the_terms_non_negative():
    """A 20-step window late in a run: S1^-alpha is nearly flat there, so an unconstrained
    fit trades L0 against A (L0 ≈ -7400, A ≈ +7400 on the run page before this test)."""
    lr = wsd()
    steps = np.arange(N - 20, N + 1)
    clean = np.array(lr_law_predict(TRUE, lr, steps))
    noisy = clean + np.random.default_rng(3).normal(0, 0.01, size=steps.size)
    fit = fit_lr_law(lr, steps, noisy)
    assert min(fit["L0"], fit["A"], fit["C"]) >= 0
    assert fit["L0"] <= noisy.max()  # the floor is not above the data
    assert fit["undetermined"]  # and the fit says the stretch cannot pin the law down
    # still a least-squares fit: within the noise on the fitted window
    pred = np.array(lr_law_predict(fit, lr, steps))
    assert np.sqrt(np.mean((pred - noisy) ** 2)) < 0.02


def test_non_negative_solve_is_the_best_feasible_least_squares():
    from itertools import product

    from trainers.analysis.lr_law import _solve_linear

    rng = np.random.default_rng(1)
    log_s1 = np.log(np.linspace(0.5, 3.0, 30))
    s2 = np.linspace(0, 0.2, 30) ** 2
    for _ in range(20):
        y = rng.normal(3, 1, size=30)
        coef, sse = _solve_linear(0.7, log_s1, s2, y)
        assert np.all(coef >= 0)
        X = np.column_stack([np.ones(30), np.exp(-0.7 * log_s1), -s2])
        assert sse == pytest.approx(float(np.sum((y - X @ coef) ** 2)))
        # no point of a coarse non-negative grid does better
        for c in product(np.linspace(0, 6, 13), np.linspace(0, 6, 13), [0.0, 1.0, 5.0]):
            assert sse <= float(np.sum((y - X @ np.array(c)) ** 2)) + 1e-9


# ---------------------------------------------------------------------------- warm-up


def test_fit_leaves_the_warmup_transient_out():
    """During warm-up the loss is the initialisation's transient (bounded by the untrained
    model's loss) where the law diverges; with those points in, the fit bent itself to them
    (L0 = 0 on every stage of the demo)."""
    lr = wsd()
    steps = np.arange(1, N + 1)
    y = np.array(lr_law_predict(TRUE, lr, steps))
    y[:WARMUP] = np.minimum(y[:WARMUP], 6.0)  # what a real curve does at the start
    fit = fit_lr_law(lr, steps, y)
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-4), k


@pytest.mark.parametrize("lam", [0.0, 0.9, 0.99])
def test_fitted_lam_is_the_one_the_data_were_made_with(lam):
    truth = {**TRUE, "lam": lam}
    steps = np.arange(1, N + 1)
    y = lr_law_predict(truth, wsd(), steps)
    assert fit_lr_law(wsd(), steps, y)["lam"] == lam
    assert fit_lr_law(wsd(), steps, y, lam=0.999)["lam"] == 0.999  # a given lam is kept


# ---------------------------------------------------------------------------- identifiability


def test_undetermined_names_what_the_data_cannot_fix():
    # loss flat at 3.0 plus noise: no power law to see
    lr = [1e-3] * 300
    steps = np.arange(1, 301)
    flat = 3.0 + np.random.default_rng(5).normal(0, 0.05, size=300)
    why = fit_lr_law(lr, steps, flat)["undetermined"]
    assert why and any("L0" in w or "A" in w or "α" in w for w in why)
    # a curve that needs alpha beyond the search range
    steep = 1.0 + 0.001 * (steps * 1e-3) ** -6.0
    fit = fit_lr_law(lr, steps[10:], steep[10:])
    assert fit["alpha"] == pytest.approx(ALPHA_MAX)
    assert any("search bound" in w for w in fit["undetermined"])


def test_standard_errors_shrink_with_more_points():
    lr = wsd()
    rng = np.random.default_rng(2)
    ses = []
    for n in (400, 1600):
        steps = np.round(np.linspace(WARMUP + 1, N, n)).astype(int)
        y = np.array(lr_law_predict(TRUE, lr, steps)) + rng.normal(0, 0.01, size=steps.size)
        fit = fit_lr_law(lr, steps, y, lam=0.999)
        ses.append(fit["se"]["alpha"])
        assert abs(fit["alpha"] - TRUE["alpha"]) < 4 * fit["se"]["alpha"]
    assert ses[1] < ses[0] * 0.7  # ~1/sqrt(n)


def test_alpha_search_range():
    assert ALPHA_MIN < TRUE["alpha"] < ALPHA_MAX


# ---------------------------------------------------------------------------- bounded grids


def test_grid_areas_are_exact_for_piecewise_linear_lr_and_close_otherwise():
    lr = wsd()  # linear warm-up, plateau, linear decay
    nodes = np.array([1, WARMUP, N - int(0.2 * N), N])
    for lam in (0.0, 0.9, 0.999, 1.0):
        full = [np.asarray(a)[nodes - 1] for a in lr_areas(lr, lam)]
        grid = lr_areas(lr[nodes - 1], lam, nodes=nodes)
        assert np.allclose(grid[0], full[0], rtol=1e-12)
        assert np.allclose(grid[1], full[1], rtol=1e-9, atol=1e-15)
    cos = cosine()
    nodes = schedule_nodes(N, [WARMUP], n=200)
    for lam in (0.0, 0.9, 0.999):
        full = [np.asarray(a)[nodes - 1] for a in lr_areas(cos, lam)]
        grid = lr_areas(cos[nodes - 1], lam, nodes=nodes)
        assert np.allclose(grid[0], full[0], rtol=1e-3)
        assert np.allclose(grid[1], full[1], rtol=1e-2, atol=1e-3 * full[1].max())


def test_schedule_nodes_are_bounded_and_keep_what_they_must():
    nodes = schedule_nodes(10**12, [50, 10**6, 10**12 - 7], include=[123456789])
    assert nodes.size < 5000 and nodes.dtype == np.int64
    assert nodes[0] == 1 and nodes[-1] == 10**12
    assert {50, 10**6, 10**12 - 7, 123456789} <= set(nodes.tolist())
    assert np.all(np.diff(nodes) > 0)
    small = schedule_nodes(300, [50])
    assert small.tolist() == list(range(1, 301))  # short: every step, so exact


def test_predict_on_a_1e12_step_grid_is_cheap():
    import time
    import tracemalloc

    total = 10**12
    nodes = schedule_nodes(total, [100])
    lr = np.where(nodes <= 100, 1e-3 * nodes / 100, 1e-3 * (1 - (nodes - 100) / total))
    tracemalloc.start()
    t = time.perf_counter()
    try:
        pred = lr_law_predict({**TRUE, "lam": 0.999}, lr, nodes[::7], nodes=nodes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t < 2.0
    assert peak < 50e6
    assert all(p is not None and math.isfinite(p) for p in pred)
