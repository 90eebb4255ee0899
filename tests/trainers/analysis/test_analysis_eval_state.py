"""EvalState and its reports equal the batch functions on all points received: column views of
a ContinualState, stage bounds that move or grow, and the run page's gap table and matrices
(which the page used to recompute from every point on each refresh)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.analysis import (
    HIGHER_IS_BETTER,
    ContinualState,
    EvalState,
    avg_min_acc,
    boundary_report,
    continual_report,
    matrix_from_series,
    min_acc_per_task,
    old_task_gap_table,
    old_tasks,
    stability_gaps,
    wc_acc,
)

VALUES = st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.625, 0.75, 0.875, 1.0])
NAMES = ["a", "b", "c", "d"]


@st.composite
def runs(draw, max_step=None):
    """(bounds, key -> sorted [[step, value]], per-key batch sizes) of a run's eval series."""
    T = draw(st.integers(1, 4))
    bounds = sorted(draw(st.sets(st.integers(1, 40), min_size=T, max_size=T)))
    top = bounds[-1] if max_step is None else max_step(bounds)
    points = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4)):
        for metric in draw(st.sets(st.sampled_from(["loss", "acc", "ppl"]), min_size=1)):
            steps = sorted(draw(st.sets(st.integers(0, top), min_size=1, max_size=12)))
            points[f"eval/{name}/{metric}"] = [[s, draw(VALUES)] for s in steps]
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    return bounds, points, sizes


def feed(state, points, sizes):
    """In step order per key, in batches (of a few keys each, like ingest batches)."""
    pos = dict.fromkeys(points, 0)
    k = 0
    while any(pos[key] < len(pts) for key, pts in points.items()):
        batch = {}
        for key, pts in points.items():
            n = sizes[k % len(sizes)]
            k += 1
            chunk = pts[pos[key] : pos[key] + n]
            pos[key] += n
            if chunk:
                batch[key] = ([s for s, _ in chunk], [v for _, v in chunk])
        state.update(batch)
        state = EvalState.from_dict(json.loads(json.dumps(state.to_dict())))
    return state


def by_metric(points) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for key, pts in points.items():
        _, name, metric = key.split("/")
        out.setdefault(metric, {})[name] = pts
    return out


def reference_page(points, bounds, names, done, kinds, tasks):
    """The run page's gap table and matrices as the page computed them from all points."""
    series = by_metric(points)
    matrices, ends = [], [b for b, d in zip(bounds, done, strict=True) if d]
    for metric, hib in HIGHER_IS_BETTER.items():
        sets = sorted(series.get(metric, {}))
        if sets and ends:
            matrices.append({"metric": metric, "higher_is_better": hib, "eval_sets": sets,
                             "stages": [n for n, d in zip(names, done, strict=True) if d],
                             "values": matrix_from_series([series[metric][s] for s in sets], ends)})  # fmt: skip
    if len(bounds) < 2:
        return [], [], matrices
    sets, metrics = [], []
    for name in sorted({n for m in HIGHER_IS_BETTER for n in series.get(m, {})}):
        first = "acc" if kinds.get(name) == "classification" else "loss"
        sets.append(name)
        metrics.append(next(m for m in (first, *HIGHER_IS_BETTER) if name in series.get(m, {})))
    data = [series[m][n] for n, m in zip(sets, metrics, strict=True)]
    old = old_tasks(tasks, sets, data, bounds)
    hib = [HIGHER_IS_BETTER[m] for m in metrics]
    rows, summary = [], []
    for entry in old_task_gap_table(data, bounds, old, higher_is_better=hib):
        i = entry["boundary_index"]
        for r in entry["rows"]:
            j = r["eval_index"]
            rows.append(
                {**r, "metric": metrics[j], "eval_set": sets[j], "stage_after": names[i + 1]}
            )
        summary.append({"boundary_index": i, "boundary_step": bounds[i], "stage_after": names[i + 1],
                        "old_tasks": [sets[j] for j in old[i]],
                        "dropped": [sets[r["eval_index"]] for r in entry["rows"]],
                        "without_drop": len(entry["without_drop"]),
                        "without_drop_sets": [sets[j] for j in entry["without_drop"]],
                        "not_measured": [sets[j] for j in entry["not_measured"]]})  # fmt: skip
    return rows, summary, matrices


@settings(max_examples=200, deadline=None)
@given(runs(), st.data())
def test_boundary_report_equals_the_gap_table_and_matrices_of_all_points(run, data):
    bounds, points, sizes = run
    T = len(bounds)
    names = [f"s{i}" for i in range(T)]
    done = data.draw(st.lists(st.booleans(), min_size=T, max_size=T))
    kinds = {n: data.draw(st.sampled_from(["lm", "classification"])) for n in NAMES}
    tasks = data.draw(st.none() | st.lists(st.sampled_from([None, *NAMES]), min_size=T, max_size=T))
    tasks = tasks or [None] * T
    state = feed(EvalState(bounds), points, sizes)
    got = boundary_report(state, stage_names=names, done=done, kinds=kinds, tasks=tasks)
    rows, summary, matrices = reference_page(points, bounds, names, done, kinds, tasks)
    assert (got["gaps"], got["gap_boundaries"], got["matrices"]) == (rows, summary, matrices)
    assert got["boundaries"] == bounds
    series = by_metric(points)
    for m in got["boundary_matrices"]:
        assert m["stages"] == names
        assert m["values"] == matrix_from_series(
            [series[m["metric"]][s] for s in m["eval_sets"]], bounds
        )
    json.dumps(got, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(runs(), st.data())
def test_continual_report_reads_any_order_of_the_sets_as_the_stage_tasks(run, data):
    bounds, points, sizes = run
    metric = data.draw(st.sampled_from(["loss", "acc"]))
    names = data.draw(st.lists(st.sampled_from([*NAMES, "never"]), unique=True, max_size=5))
    state = feed(EvalState(bounds), points, sizes)
    got = continual_report(state, metric, names)
    series = [by_metric(points).get(metric, {}).get(n, []) for n in names]
    hib = HIGHER_IS_BETTER[metric]
    assert got["matrix"] == matrix_from_series(series, bounds)
    assert got["stability_gaps"] == stability_gaps(series, bounds, higher_is_better=hib)
    assert got["baseline"][: len(names)] == [
        next((v for s, v in pts if s == 0), None) for pts in series[: len(bounds)]
    ]
    if hib and len(names) == len(bounds):
        assert got["min_acc_per_task"] == min_acc_per_task(series, bounds)
        assert got["avg_min_acc"] == avg_min_acc(series, bounds)
        assert got["wc_acc"] == wc_acc(series, bounds)
    assert got["exact"] is True


@st.composite
def moved_bounds(draw):
    """(old bounds, new bounds): the last one moved, stages appended, or both."""
    T = draw(st.integers(1, 3))
    old = sorted(draw(st.sets(st.integers(1, 30), min_size=T, max_size=T)))
    low = old[-2] + 1 if T > 1 else 1
    last = draw(st.integers(low, 40))
    more = sorted(draw(st.sets(st.integers(last + 1, 60), max_size=2)))
    return old, [*old[:-1], last, *more]


@settings(max_examples=200, deadline=None)
@given(moved_bounds(), runs(max_step=lambda b: 60), st.data())
def test_moving_the_last_stage_end_or_adding_stages_equals_a_fresh_state(bnds, run, data):
    old, new = bnds
    _, points, sizes = run
    state = feed(EvalState(old), points, sizes)
    moved = state.extended(new)
    fresh = feed(EvalState(new), points, sizes)
    if moved is None:
        # only when a stage was appended and an already folded point lies after a new boundary
        assert len(new) > len(old)
        assert any(s > new[len(old) - 1] for pts in points.values() for s, _ in pts[:-1])
        return
    for metric in HIGHER_IS_BETTER:
        names = fresh.names(metric)
        assert moved.names(metric) == names
        assert moved.snapshot(metric, names) == fresh.snapshot(metric, names)


def test_the_last_stage_is_open_ended_and_the_moved_end_costs_no_rebuild():
    state = EvalState([10, 20])
    state.update({"eval/a/acc": ([5, 10, 15, 25], [0.5, 0.75, 0.25, 0.5])})
    # step 25 is after the stored end (an open stage's end follows its points one batch late)
    snap = state.snapshot("acc", ["a"])
    assert snap["matrix"] == [[0.75], [0.5]]
    assert snap["stability_gaps"][0]["recovery_step"] is None  # 0.5 < 0.75: not recovered
    moved = state.extended([10, 25])
    assert moved is not None and moved.snapshot("acc", ["a"]) == snap
    assert state.extended([12, 25]) is None  # an inner boundary changed: rebuild


def test_column_views_and_added_sets():
    s = ContinualState(2, [10, 20])
    s.update(0, [5, 10, 15], [0.5, 0.75, 0.25])
    s.update(1, [10, 20], [1.0, 0.5])
    j = s.add_eval_set()
    assert j == 2 and not s.has_points(2) and s.has_points(0)
    swapped = s.snapshot([1, 0])
    series = [[[10, 1.0], [20, 0.5]], [[5, 0.5], [10, 0.75], [15, 0.25]]]
    assert swapped["matrix"] == matrix_from_series(series, [10, 20])
    assert swapped["min_acc_per_task"] == min_acc_per_task(series, [10, 20])
    empty = s.snapshot([None, 2])
    assert empty["matrix"] == [[None, None], [None, None]]
    with pytest.raises(IndexError):
        s.snapshot([3])
    with pytest.raises(ValueError):
        EvalState.from_dict({"version": 99})
