import math

import numpy as np
import pytest

from trainers.analysis import avg_min_acc, matrix_from_series, min_acc_per_task, wc_acc

BOUNDS = [10, 20, 30]
S0 = [[0, 0.1], [5, 0.5], [10, 0.9], [12, 0.6], [15, 0.7], [20, 0.8], [25, 0.4], [30, 0.85]]
S1 = [[0, 0.1], [10, 0.2], [18, 0.9], [20, 0.95], [22, 0.7], [30, 0.9]]
S2 = [[0, 0.05], [20, 0.3], [30, 0.92]]
SERIES = [S0, S1, S2]


def test_matrix_from_series():
    R = matrix_from_series(SERIES, BOUNDS)
    assert R == [[0.9, 0.2, 0.05], [0.8, 0.95, 0.3], [0.85, 0.9, 0.92]]


def test_matrix_from_series_missing_and_rectangular():
    R = matrix_from_series([[[15, 0.5]], [], [[3, 0.25], [40, 1.0]]], [10, 20])
    assert R == [[None, None, 0.25], [0.5, None, 0.25]]


def test_matrix_accepts_arrays_any_order_duplicates_and_nan():
    arr = np.array([[20, 0.8], [10, 0.3], [10, 0.9], [5, np.nan]])
    R = matrix_from_series([arr], [5, 10, 20])
    # NaN point dropped, duplicate step 10: last occurrence wins
    assert R == [[None], [0.9], [0.8]]
    R = matrix_from_series([[[5, None], [10, 0.9]]], [5, 10])
    assert R == [[None], [0.9]]


def test_min_avg_wc_at_last_boundary():
    assert min_acc_per_task(SERIES, BOUNDS) == [0.4, 0.7, None]
    assert avg_min_acc(SERIES, BOUNDS) == pytest.approx(0.55)
    assert wc_acc(SERIES, BOUNDS) == pytest.approx(0.92 / 3 + (2 / 3) * 0.55)
    assert wc_acc(SERIES, BOUNDS, t=30) == wc_acc(SERIES, BOUNDS)


def test_mid_stage():
    assert min_acc_per_task(SERIES, BOUNDS, t=15) == [0.6, None, None]
    assert avg_min_acc(SERIES, BOUNDS, t=15) == pytest.approx(0.6)
    assert wc_acc(SERIES, BOUNDS, t=15) == pytest.approx(0.2 / 2 + 0.5 * 0.6)


def test_first_stage_k_equals_one():
    assert min_acc_per_task(SERIES, BOUNDS, t=5) == [None, None, None]
    assert avg_min_acc(SERIES, BOUNDS, t=5) is None
    assert wc_acc(SERIES, BOUNDS, t=5) == 0.5
    assert wc_acc(SERIES, BOUNDS, t=10) == 0.9  # t on the boundary is still stage 0


def test_no_qualifying_step_gives_none():
    # t = 11: stage 1, task 0 has no step in (10, 11]
    assert min_acc_per_task(SERIES, BOUNDS, t=11) == [None, None, None]
    assert avg_min_acc(SERIES, BOUNDS, t=11) is None
    assert wc_acc(SERIES, BOUNDS, t=11) is None


def test_wc_none_without_current_value():
    series = [S0, [[18, 0.9]], S2]
    assert wc_acc(series, BOUNDS, t=15) is None
    assert wc_acc([[], S1, S2], BOUNDS, t=3) is None


def test_min_acc_boundary_step_excluded():
    # the value at boundaries[j] itself is not part of min-ACC of task j
    series = [[[10, 0.0], [11, 0.5]], [[20, 1.0]]]
    assert min_acc_per_task(series, [10, 20]) == [0.5, None]


def test_validation():
    with pytest.raises(ValueError):
        min_acc_per_task(SERIES, BOUNDS, t=31)
    with pytest.raises(ValueError):
        avg_min_acc(SERIES[:2], BOUNDS)
    with pytest.raises(ValueError):
        matrix_from_series(SERIES, [10, 10, 30])
    with pytest.raises(ValueError):
        matrix_from_series(SERIES, [])
    with pytest.raises(ValueError):
        matrix_from_series([[[1.5, 0.2]]], [10])
    with pytest.raises(ValueError):
        matrix_from_series([[[1, 0.2, 3]]], [10])


def test_results_are_plain_python():
    R = matrix_from_series([np.array([[1, 0.5]])], [1])
    assert type(R[0][0]) is float
    v = wc_acc(SERIES, BOUNDS)
    assert type(v) is float and math.isfinite(v)
