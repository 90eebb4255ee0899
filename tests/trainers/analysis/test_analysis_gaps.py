import json

import pytest

from trainers.analysis import old_task_gap_table, old_tasks, stability_gaps

BOUNDS = [10, 20, 30]
# dyadic values so tolerance comparisons are exact
S0 = [
    [8, 0.875],
    [10, 0.75],
    [12, 0.5],
    [14, 0.5],
    [16, 0.625],
    [18, 0.875],
    [20, 0.875],
    [25, 0.9375],
]
FIELDS = [
    "boundary_index",
    "boundary_step",
    "eval_index",
    "reference_step",
    "reference_value",
    "extreme_step",
    "extreme_value",
    "drop_depth",
    "time_to_drop",
    "dropped",
    "recovery_step",
    "time_to_recover",
]


def _rec(gaps, i, j):
    (r,) = [g for g in gaps if g["boundary_index"] == i and g["eval_index"] == j]
    return r


def test_drop_and_recovery_tie_earliest():
    gaps = stability_gaps([S0], BOUNDS)
    assert [(g["boundary_index"], g["eval_index"]) for g in gaps] == [(0, 0), (1, 0)]
    assert list(gaps[0]) == FIELDS
    assert gaps[0] == {
        "boundary_index": 0,
        "boundary_step": 10,
        "eval_index": 0,
        "reference_step": 10,
        "reference_value": 0.75,
        "extreme_step": 12,  # 0.5 at 12 and 14: earliest wins
        "extreme_value": 0.5,
        "drop_depth": 0.25,
        "time_to_drop": 2,
        "dropped": True,
        "recovery_step": 18,
        "time_to_recover": 8,
    }
    # boundary 1: only a point above the reference -> negative depth, not dropped
    g = gaps[1]
    assert (g["reference_step"], g["reference_value"]) == (20, 0.875)
    assert (g["extreme_step"], g["extreme_value"]) == (25, 0.9375)
    assert g["drop_depth"] == -0.0625
    assert g["dropped"] is False
    assert (g["recovery_step"], g["time_to_recover"]) == (25, 5)
    json.dumps(gaps, allow_nan=False)


def test_tolerance():
    g = stability_gaps([S0], BOUNDS, tol=0.125)[0]
    assert g["dropped"] is True
    assert g["recovery_step"] == 16  # 0.75 - 0.625 == tol counts as recovered
    g = stability_gaps([S0], BOUNDS, tol=0.25)[0]
    assert g["dropped"] is False  # depth == tol is not "more than tol"
    assert (g["recovery_step"], g["time_to_recover"]) == (12, 2)


def test_window_shorter_and_empty():
    gaps = stability_gaps([S0], BOUNDS, window=3)
    g0, g1 = gaps
    assert (g0["extreme_step"], g0["dropped"], g0["recovery_step"]) == (12, True, None)
    assert g0["time_to_recover"] is None
    # window (20, 23] is empty: every value field is None, indices kept
    assert g1["boundary_index"] == 1 and g1["boundary_step"] == 20 and g1["eval_index"] == 0
    assert all(g1[f] is None for f in FIELDS[3:])


def test_window_not_capped_at_next_boundary():
    s = [[10, 0.75], [15, 0.25], [22, 0.8125]]
    g = stability_gaps([s], BOUNDS)[0]
    assert g["dropped"] is True and g["recovery_step"] is None
    g = stability_gaps([s], BOUNDS, window=15)[0]
    assert (g["recovery_step"], g["time_to_recover"]) == (22, 12)
    # a long window on the last reported boundary may even run past the last boundary
    g = stability_gaps([[[20, 0.5], [35, 0.25]]], BOUNDS, window=100)[1]
    assert (g["extreme_step"], g["drop_depth"]) == (35, 0.25)


def test_no_reference_and_empty_default_window():
    gaps = stability_gaps([[[12, 0.5]], [[5, 0.5], [25, 0.5]]], BOUNDS)
    no_ref = _rec(gaps, 0, 0)
    empty = _rec(gaps, 0, 1)
    assert all(no_ref[f] is None for f in FIELDS[3:])
    assert all(empty[f] is None for f in FIELDS[3:])
    # boundary 1 for eval set 1: reference 5 (last <= 20), window (20, 30] has 25
    g = _rec(gaps, 1, 1)
    assert (g["reference_step"], g["extreme_step"], g["dropped"]) == (5, 25, False)
    assert g["drop_depth"] == 0.0


def test_lower_is_better():
    s = [[10, 1.0], [11, 1.5], [12, 2.0], [13, 2.0], [15, 0.75]]
    g = stability_gaps([s], BOUNDS, higher_is_better=False)[0]
    assert (g["extreme_step"], g["extreme_value"]) == (12, 2.0)
    assert g["drop_depth"] == 1.0 and g["time_to_drop"] == 2
    assert g["dropped"] is True
    assert (g["recovery_step"], g["time_to_recover"]) == (15, 5)
    # the same series read as higher-is-better has no drop
    g = stability_gaps([s], BOUNDS)[0]
    assert (g["extreme_step"], g["drop_depth"], g["dropped"]) == (15, 0.25, True)
    assert g["recovery_step"] is None


def test_single_stage_and_order():
    assert stability_gaps([S0], [30]) == []
    gaps = stability_gaps([S0, S0, S0], BOUNDS)
    assert [(g["boundary_index"], g["eval_index"]) for g in gaps] == [
        (i, j) for i in range(2) for j in range(3)
    ]


def test_validation():
    with pytest.raises(ValueError):
        stability_gaps([S0], BOUNDS, tol=-1)
    with pytest.raises(ValueError):
        stability_gaps([S0], BOUNDS, window=-1)


def test_tolerance_is_robust_to_rounding():
    """0.80 -> 0.75 is 0.05000000000000004 worse in binary: with tol 0.05 that is within the
    tolerance, as the user reads it (no drop, and as a recovery point it counts)."""
    assert 0.80 - 0.75 > 0.05  # the rounding the comparison must absorb
    g = stability_gaps([[[10, 0.80], [12, 0.75], [14, 0.78]]], BOUNDS, tol=0.05)[0]
    assert g["dropped"] is False and g["recovery_step"] == 12
    g = stability_gaps([[[10, 0.80], [12, 0.70], [14, 0.75]]], BOUNDS, tol=0.05)[0]
    assert g["dropped"] is True and g["recovery_step"] == 14
    # lower is better: 0.3 -> 0.4 with tol 0.1 is 0.10000000000000003 worse
    g = stability_gaps([[[10, 0.3], [12, 0.4]]], BOUNDS, higher_is_better=False, tol=0.1)[0]
    assert g["dropped"] is False
    # ... and a real excess, however small next to the values, is still a drop
    g = stability_gaps([[[10, 0.80], [12, 0.7499]]], BOUNDS, tol=0.05)[0]
    assert g["dropped"] is True


def test_within_tol_slack_is_relative():
    from trainers.analysis.gaps import within_tol

    assert within_tol(0.80, 0.75, True, 0.05)
    assert not within_tol(1e-12, 0.0, True, 0.0)  # tiny metrics are compared exactly
    assert within_tol(1e6, 1e6 - 1e-4, True, 0.0)  # a 1e-10 relative difference is noise


def test_old_tasks_follow_the_stages_tasks():
    names = ["t0", "t1", "t2", "extra"]
    assert old_tasks(["t0", "t1", "t2"], names, [[]] * 4, BOUNDS) == [[0], [0, 1]]
    # a stage coming back to an old task: there it is the new task, not an old one
    assert old_tasks(["t0", "t1", "t0"], names, [[]] * 4, BOUNDS) == [[0], [1]]
    # a stage without a task adds nothing
    assert old_tasks(["t0", None, "t2"], names, [[]] * 4, BOUNDS) == [[0], [0]]


def test_old_tasks_without_named_tasks_are_the_sets_measured_before():
    series = [
        [[0, 1.0], [5, 1.0]],  # measured in stage 0
        [[0, 1.0], [15, 1.0]],  # baseline at step 0, then only from stage 1
        [[25, 1.0]],  # only in stage 2
    ]
    assert old_tasks([None, None, None], ["a", "b", "c"], series, BOUNDS) == [[0], [0, 1]]


def test_old_task_table_covers_every_pair_once_and_folds_no_drops():
    s_drop = [[10, 0.9], [12, 0.5], [15, 0.9], [20, 0.9], [22, 0.3]]
    s_flat = [[10, 0.8], [12, 0.8], [20, 0.8], [25, 0.8]]
    s_late = [[20, 0.8], [21, 0.5]]  # nothing before boundary 0
    old = [[0, 1, 2], [0, 1, 2]]
    table = old_task_gap_table([s_drop, s_flat, s_late], BOUNDS, old)
    assert [e["boundary_index"] for e in table] == [0, 1]
    b0, b1 = table
    assert [r["eval_index"] for r in b0["rows"]] == [0]
    assert b0["rows"][0] == stability_gaps([s_drop], BOUNDS)[0]
    assert b0["without_drop"] == [1] and b0["not_measured"] == [2]
    assert [r["eval_index"] for r in b1["rows"]] == [0, 2]
    assert b1["without_drop"] == [1] and b1["not_measured"] == []
    for e, o in zip(table, old, strict=True):
        covered = [r["eval_index"] for r in e["rows"]] + e["without_drop"] + e["not_measured"]
        assert sorted(covered) == o
    # one higher_is_better per eval set: read as a loss, s_drop only gets better after
    # boundary 1 (0.9 -> 0.3), so it is no drop there
    mixed = old_task_gap_table([s_drop, s_flat, s_late], BOUNDS, old, [False, True, True])
    assert all(r["eval_index"] != 0 for r in mixed[1]["rows"])
    json.dumps(table, allow_nan=False)
    with pytest.raises(ValueError):
        old_task_gap_table([s_drop], BOUNDS, [[0]])  # one old list per boundary
