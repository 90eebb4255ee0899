import random
import threading

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.models import MetricPoint, Series, SeriesRollup
from runs.services.ingest import (
    ROLLUP_LEVELS,
    IngestError,
    IngestPoint,
    bucket_width,
    ingest_points,
)
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def _points(key, steps, fn=lambda s: s * 0.5):
    return [IngestPoint(key, s, fn(s), 1000.0 + s) for s in steps]


def _stored(run, key):
    return list(
        MetricPoint.objects.filter(series__run=run, series__key=key)
        .order_by("step")
        .values_list("step", "value")
    )


def test_ingest_stores_points_and_series_counts():
    run = f.RunFactory()
    n = ingest_points(run_id=run.pk, points=_points("train/loss", range(100)))
    assert n == 100
    assert _stored(run, "train/loss") == [(s, s * 0.5) for s in range(100)]
    series = Series.objects.get(run=run, key="train/loss")
    assert (series.count, series.first_step, series.last_step) == (100, 0, 99)


def test_replayed_batch_never_duplicates_and_replaces_values():
    run = f.RunFactory()
    ingest_points(run_id=run.pk, points=_points("k", range(50)))
    ingest_points(run_id=run.pk, points=_points("k", range(50)))
    ingest_points(run_id=run.pk, points=_points("k", [10], lambda s: -1.0))
    stored = _stored(run, "k")
    assert len(stored) == 50
    assert dict(stored)[10] == -1.0
    assert Series.objects.get(run=run, key="k").count == 50


def test_rollups_equal_aggregates_of_raw_points_after_replacements():
    run = f.RunFactory()
    rng = random.Random(3)
    steps = list(range(0, 5000, 3))
    values = {s: rng.uniform(-5, 5) for s in steps}
    for lo in range(0, len(steps), 700):
        chunk = steps[lo : lo + 700]
        ingest_points(
            run_id=run.pk,
            points=[IngestPoint("k", s, values[s]) for s in chunk],
        )
    replaced = rng.sample(steps, 40)
    for s in replaced:
        values[s] = rng.uniform(-50, 50)
    ingest_points(run_id=run.pk, points=[IngestPoint("k", s, values[s]) for s in replaced])
    series = Series.objects.get(run=run, key="k")
    for level in range(ROLLUP_LEVELS):
        w = bucket_width(level)
        expected: dict[int, list[tuple[int, float]]] = {}
        for s in steps:
            expected.setdefault(s // w, []).append((s, values[s]))
        rows = SeriesRollup.objects.filter(series=series, level=level)
        assert rows.count() == len(expected)
        for r in rows:
            pts = expected[r.bucket]
            assert r.min_value == min(v for _, v in pts)
            assert r.max_value == max(v for _, v in pts)
            assert (r.last_step, r.last_value) == max(pts)
            assert r.count == len(pts)


def test_a_point_is_identified_by_run_key_and_step_and_batches_may_mix_keys():
    stage = f.StageRunFactory()
    pts = _points("a", range(10)) + _points("b", range(5))
    ingest_points(run_id=stage.run_id, points=pts)
    ingest_points(run_id=stage.run_id, points=_points("a", range(3), lambda s: 7.0))
    assert Series.objects.filter(run=stage.run).count() == 2
    assert Series.objects.get(run=stage.run, key="a").count == 10
    stored = dict(MetricPoint.objects.filter(series__key="a").values_list("step", "value"))
    assert stored == {s: (7.0 if s < 3 else s * 0.5) for s in range(10)}


@pytest.mark.parametrize(
    ("point", "field"),
    [
        (IngestPoint("k", -1, 1.0), "step"),
        (IngestPoint("k", 1, float("nan")), "value"),
        (IngestPoint("k", 1, float("inf")), "value"),
        (IngestPoint("x" * 201, 1, 1.0), "key"),
        (IngestPoint("", 1, 1.0), "key"),
        (IngestPoint("bad\x00key", 1, 1.0), "key"),
        (IngestPoint("k", 1, 1.0, float("nan")), "time"),
    ],
)
def test_bad_point_refuses_the_whole_batch(point, field):
    run = f.RunFactory()
    batch = _points("k", range(5)) + [point]
    with pytest.raises(IngestError) as err:
        ingest_points(run_id=run.pk, points=batch)
    assert (err.value.index, err.value.field) == (5, field)
    assert not MetricPoint.objects.filter(series__run=run).exists()


def test_temp_tables_are_reused_and_empty_between_batches():
    # small batches of new steps never touch them; re-sent steps and big batches go through
    from runs.services.ingest import ARRAY_POINTS

    run = f.RunFactory()
    for steps in (range(5), range(3, 8), range(8, 10), range(10, 11 + ARRAY_POINTS)):
        ingest_points(run_id=run.pk, points=_points("k", steps))
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_class WHERE relname IN ('ingest_points', 'ingest_rollups')"
        )
        assert cur.fetchone()[0] == 2  # one each per connection, not one per batch
        cur.execute(
            "SELECT (SELECT count(*) FROM ingest_points) + (SELECT count(*) FROM ingest_rollups)"
        )
        assert cur.fetchone()[0] == 0
    assert len(_stored(run, "k")) == 11 + ARRAY_POINTS


def test_keys_with_copy_special_characters_and_exact_floats_round_trip():
    run = f.RunFactory()
    key = "eval/odd\tname\\with\nbreaks\r"
    values = [1e-300, 0.1 + 0.2, -2.5e300, 123456789.123456789, 5e-324]
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint(key, s, v, 1.5) for s, v in enumerate(values)],
    )
    assert [v for _, v in _stored(run, key)] == values


@pytest.mark.parametrize(
    ("point", "field"),
    [
        (IngestPoint("k", True, 1.0), "step"),
        (IngestPoint("k", 1, True), "value"),
        (IngestPoint("k", 1, 10**400), "value"),
        (IngestPoint("k", 1, "1.0"), "value"),
        (IngestPoint(7, 1, 1.0), "key"),
        (IngestPoint("k", 1, 1.0, "now"), "time"),
        (IngestPoint("k", 2**63, 1.0), "step"),
        (("k", 1, 1.0), "(point)"),
    ],
)
def test_wrong_types_are_refused_with_their_field(point, field):
    run = f.RunFactory()
    with pytest.raises(IngestError) as err:
        ingest_points(run_id=run.pk, points=_points("k", range(3)) + [point])
    assert (err.value.index, err.value.field) == (3, field)


def test_integer_and_numpy_values_are_accepted():
    import numpy as np

    run = f.RunFactory()
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint("k", 0, 3), IngestPoint("k", 1, np.float64(0.25), np.float64(2.0))],
    )
    assert _stored(run, "k") == [(0, 3.0), (1, 0.25)]


def _assert_exact(run, expected: dict[str, dict[int, float]]):
    """Stored points, series totals and every rollup level equal what the points say."""
    for key, points in expected.items():
        assert _stored(run, key) == sorted(points.items())
        series = Series.objects.get(run=run, key=key)
        assert (series.count, series.first_step, series.last_step) == (
            len(points),
            min(points),
            max(points),
        )
        for level in range(ROLLUP_LEVELS):
            w = bucket_width(level)
            buckets: dict[int, list[tuple[int, float]]] = {}
            for s, v in sorted(points.items()):
                buckets.setdefault(s // w, []).append((s, v))
            got = {
                r.bucket: (r.min_value, r.max_value, r.last_step, r.last_value, r.count)
                for r in SeriesRollup.objects.filter(series=series, level=level)
            }
            want = {
                b: (min(v for _, v in p), max(v for _, v in p), *p[-1], len(p))
                for b, p in buckets.items()
            }
            assert got == want, f"{key} level {level}"


_point = st.tuples(
    st.sampled_from(["a", "b", "eval/c/loss"]),
    st.integers(0, 400),
    st.floats(-1e6, 1e6, allow_nan=False),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.tuples(st.lists(_point, min_size=1, max_size=40), st.sampled_from([0, 0, 500, 5000])),
        min_size=1,
        max_size=6,
    )
)
def test_any_batch_order_stores_exactly_the_last_value_of_each_step(batches):
    """Appended batches (merged rollups), re-sent and out-of-order ones (upsert + rebuilt
    rollups), duplicates inside a batch (the last one wins) and any mix of them."""
    run = f.RunFactory()
    expected: dict[str, dict[int, float]] = {}
    for i, (points, shift) in enumerate(batches):
        batch = [IngestPoint(k, s + shift * i, v) for k, s, v in points]
        assert ingest_points(run_id=run.pk, points=batch) == len(batch)
        for p in batch:
            expected.setdefault(p.key, {})[p.step] = p.value
    _assert_exact(run, expected)


def test_concurrent_batches_of_one_series_queue_up_and_stay_exact():
    """Two connections send interleaved step ranges of the same series at once: the series
    row lock orders them, so neither appends past the other's uncommitted points."""
    run = f.RunFactory()
    expected: dict[int, float] = {}
    errors: list[BaseException] = []

    def send(lows):
        try:
            for lo in lows:
                ingest_points(
                    run_id=run.pk,
                    points=[IngestPoint("k", s, s * 0.25) for s in range(lo, lo + 300)],
                )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    lows = list(range(0, 12_000, 300))
    for lo in lows:
        expected.update({s: s * 0.25 for s in range(lo, lo + 300)})
    threads = [threading.Thread(target=send, args=(lows[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _assert_exact(run, {"k": expected})
