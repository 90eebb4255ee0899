"""The one buffered sender (trainers.sender) every point writer uses, without a server; and
the client's import footprint."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.trainers.helpers import ROOT
from trainers.events import Point
from trainers.sender import BufferedSender, Refused, SenderGaveUp


def _pts(steps, key="k", value=None):
    return [Point(key, s, float(s) if value is None else value, 0.0, 0) for s in steps]


class Target:
    """A delivery function that fails while ``down`` and records what it got."""

    def __init__(self):
        self.got: list[Point] = []
        self.calls = 0
        self.down = False
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.calls += 1
            if self.down:
                raise ConnectionError("server away")
            self.got.extend(batch)


def test_batches_by_size_and_time_in_order():
    t = Target()
    s = BufferedSender(t, flush_seconds=0.05, flush_points=10, max_batch=7)
    s.put(_pts(range(25)))
    deadline = time.monotonic() + 5
    while len(t.got) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p.step for p in t.got] == list(range(25))
    assert s.points_sent == 25 and s.close(5)


def test_failures_are_retried_and_lose_nothing():
    t = Target()
    t.down = True
    s = BufferedSender(t, flush_seconds=0.02, max_backoff=0.05)
    s.put(_pts(range(10)))
    time.sleep(0.3)
    assert t.got == [] and s.failures >= 2 and s.buffered == 10
    s.put(_pts(range(10, 20)))
    t.down = False
    assert s.flush(5)
    assert [p.step for p in t.got] == list(range(20))
    assert s.close(1)


def test_flush_gives_up_after_its_timeout_and_keeps_the_points():
    t = Target()
    t.down = True
    s = BufferedSender(t, flush_seconds=10)
    s.put(_pts(range(3)))
    assert not s.flush(0.3)
    assert s.buffered == 3 and "server away" in s.last_error
    s.abandon()


def test_non_finite_values_are_dropped_and_counted():
    t = Target()
    s = BufferedSender(t, flush_seconds=10)
    s.put(_pts([1]) + _pts([2], value=float("nan")) + _pts([3], value=float("-inf")))
    assert s.flush(1) and [p.step for p in t.got] == [1] and s.dropped_nonfinite == 2
    s.close(1)


def test_a_refused_delivery_drops_its_points_and_raises_from_the_next_put():
    def refuse(batch):
        raise Refused(RuntimeError("no such run"))

    s = BufferedSender(refuse, flush_seconds=10)
    s.put(_pts(range(3)))
    with pytest.raises(RuntimeError, match="no such run"):
        s.flush(1)
    with pytest.raises(RuntimeError, match="no such run"):
        s.put(_pts([4]))
    s.abandon()


def test_the_background_thread_gives_up_after_retry_for():
    t = Target()
    t.down = True
    s = BufferedSender(t, flush_seconds=0.01, retry_for=0.2, max_backoff=0.02)
    s.put(_pts([1]))
    deadline = time.monotonic() + 5
    while s.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert isinstance(s.error, SenderGaveUp) and "server away" in str(s.error)
    with pytest.raises(Exception, match="server away"):
        s.put(_pts([2]))


def test_a_bounded_buffer_hands_its_oldest_points_to_on_overflow():
    t = Target()
    t.down = True
    spilled: list[Point] = []
    s = BufferedSender(t, flush_seconds=10, max_buffered=5, on_overflow=spilled.extend)
    s.put(_pts(range(12)))
    assert [p.step for p in spilled] == list(range(7)) and s.buffered == 5
    assert s.overflowed == 7
    t.down = False
    assert s.close(1) and [p.step for p in t.got] == list(range(7, 12))
    with pytest.raises(ValueError):
        BufferedSender(t, max_buffered=5)


def test_the_client_imports_without_torch_or_django():
    code = (
        "import sys, trainers.client, trainers.sync, trainers.spool, trainers.sender\n"
        "bad = [m for m in ('torch', 'django', 'transformers') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
