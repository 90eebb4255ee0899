import json
import math

import pytest

from trainers.analysis import loss_forgetting, matrix_metrics

R3 = [
    [0.9, 0.1, 0.2],
    [0.7, 0.8, 0.3],
    [0.6, 0.5, 0.9],
]
B3 = [0.1, 0.1, 0.2]


def test_hand_computed_three_tasks():
    m = matrix_metrics(R3, B3)
    assert m["acc"] == pytest.approx(2.0 / 3.0)
    assert m["bwt"] == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert m["fwt"] == pytest.approx(((0.1 - 0.1) + (0.3 - 0.2)) / 2)
    assert m["forgetting_per_task"] == pytest.approx([0.9 - 0.6, 0.8 - 0.5])
    assert m["avg_forgetting"] == pytest.approx(0.3)
    json.dumps(m, allow_nan=False)


def test_fwt_none_without_b():
    m = matrix_metrics(R3)
    assert m["fwt"] is None
    assert m["bwt"] is not None


def test_single_task():
    m = matrix_metrics([[0.7]], b=[0.1])
    assert m == {
        "acc": 0.7,
        "bwt": None,
        "fwt": None,
        "forgetting_per_task": None,
        "avg_forgetting": None,
    }


def test_negative_forgetting_not_clipped():
    m = matrix_metrics([[0.5, 0.0], [0.7, 0.9]])
    assert m["forgetting_per_task"] == pytest.approx([-0.2])
    assert m["avg_forgetting"] == pytest.approx(-0.2)
    assert m["bwt"] == pytest.approx(0.2)


def test_forgetting_max_includes_rows_before_training():
    R = [
        [0.5, 0.95, 0.0],
        [0.5, 0.8, 0.0],
        [0.5, 0.5, 0.9],
    ]
    m = matrix_metrics(R)
    # task 1 trained at row 1 (0.8) but row 0 already scored 0.95
    assert m["forgetting_per_task"] == pytest.approx([0.0, 0.45])
    assert m["bwt"] == pytest.approx((0.0 + (0.5 - 0.8)) / 2)


@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_entries_propagate(missing):
    R = [
        [missing, 0.1, 0.2],
        [0.7, 0.8, 0.3],
        [0.6, 0.5, 0.9],
    ]
    m = matrix_metrics(R, [0.1, missing, 0.2])
    assert m["acc"] == pytest.approx(2.0 / 3.0)
    assert m["bwt"] is None  # needs R[0][0]
    assert m["fwt"] is None  # needs b[1]
    assert m["forgetting_per_task"][0] is None
    assert m["forgetting_per_task"][1] == pytest.approx(0.3)
    assert m["avg_forgetting"] is None
    m2 = matrix_metrics([[0.9, 0.1], [0.8, missing]])
    assert m2["acc"] is None
    assert m2["bwt"] == pytest.approx(-0.1)


def test_validation():
    with pytest.raises(ValueError):
        matrix_metrics([[0.1, 0.2]])
    with pytest.raises(ValueError):
        matrix_metrics([[0.1, 0.2], [0.3]])
    with pytest.raises(ValueError):
        matrix_metrics([])
    with pytest.raises(ValueError):
        matrix_metrics([[0.1]], b=[0.1, 0.2])


def test_loss_forgetting_hand_computed():
    L = [[2.0, 3.0], [1.5, 2.5], [1.8, 2.0]]
    lf = loss_forgetting(L)
    assert lf[0] == [None, None]
    assert lf[1] == pytest.approx([-0.5, -0.5])
    assert lf[2] == pytest.approx([0.3, -0.5])


def test_loss_forgetting_single_row_and_missing():
    assert loss_forgetting([[1.0, 2.0, 3.0]]) == [[None, None, None]]
    lf = loss_forgetting([[2.0, None], [1.5, 2.5], [1.8, 2.0]])
    assert lf[1][1] is None and lf[2][1] is None
    assert lf[2][0] == pytest.approx(0.3)
    lf = loss_forgetting([[2.0], [math.nan], [1.8]])
    assert lf == [[None], [None], [None]]
