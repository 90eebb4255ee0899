import pytest

from runs.execution.sink import DjangoSink
from runs.models import MetricPoint
from runs.services.ingest import MAX_KEY_LENGTH
from tests import factories as f
from trainers.events import Point

# The sink flushes from its own thread (its own connection): commit for real.
pytestmark = pytest.mark.django_db(transaction=True)


def _stored(stage_run) -> list[tuple[str, int, float]]:
    return sorted(
        MetricPoint.objects.filter(series__run=stage_run.run).values_list(
            "series__key", "step", "value"
        )
    )


def test_points_that_cannot_be_stored_never_block_the_ones_that_can():
    """A non-finite value (an overflowing eval), a refused key or a step outside the stage
    must not keep the buffer failing and retrying until the stage times out: they are
    dropped, the rest is stored."""
    stage_run = f.WorkerLeaseFactory(worker_id="w1").stage_run
    sink = DjangoSink(stage_run, worker_id="w1", flush_seconds=0.05)
    sink.points([Point("train/loss", 1, 2.5, 1.0, 0), Point("eval/a/ppl", 1, float("inf"), 1.0, 0)])
    sink.points([Point("x" * (MAX_KEY_LENGTH + 1), 2, 1.0, 1.0, 0)])
    sink.points([Point("train/loss", stage_run.end_step + 1, 1.0, 1.0, 0)])
    assert sink.flush(wait=True, timeout=10)
    sink.points([Point("train/loss", 2, 2.0, 1.0, 0), Point("train/loss", 3, float("nan"), 1.0, 0)])
    assert sink.close()
    assert _stored(stage_run) == [("train/loss", 1, 2.5), ("train/loss", 2, 2.0)]


def test_a_worker_that_lost_the_lease_stores_nothing():
    """Another worker took the stage over (this one was presumed dead): its points win, the
    old worker's late flushes are dropped instead of overwriting them."""
    lease = f.WorkerLeaseFactory(worker_id="new-worker")
    stale = DjangoSink(lease.stage_run, worker_id="old-worker", flush_seconds=0.05)
    stale.points([Point("train/loss", 5, 9.0, 1.0, 0)])
    assert stale.close()  # dropped for good, not retried until a timeout
    assert _stored(lease.stage_run) == []
