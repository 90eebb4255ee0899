"""One buffered sender for metric points: every writer of points to Stagewise uses it.

The worker's ``DjangoSink`` (in process, under its lease), the remote engine sink
(``trainers.remote.StagewiseSink``) and the Python client (``trainers.client``) each give it
only their *delivery function*; the sender does the rest:

* ``put(points)`` on the training thread drops non-finite values (JSON and the database hold
  none), appends to a buffer and returns: it never waits for the network or the database;
* a background thread delivers the buffer every ``flush_seconds``, or as soon as it holds
  ``flush_points``, in chunks of at most ``max_batch``, in order, one delivery at a time;
* a delivery that raises is retried with exponential backoff (0.25 s doubling to
  ``max_backoff``), the unsent points kept in front of the buffer, so an outage delays points
  but loses none (Stagewise stores each (run, key, step) once, so a re-sent chunk is
  harmless); after ``retry_for`` seconds of failures the sender gives up (``give_up`` makes
  the error) unless the delivery function decides otherwise (the client spills to its spool);
* a delivery that raises ``Refused`` can never succeed (the run was canceled, the server
  refused the points for good): the chunk is dropped and ``error`` is set, raised from the
  next ``put``/``flush``;
* with ``max_buffered``, a buffer that would grow past it hands its oldest points to
  ``on_overflow`` (on the caller's thread) instead of holding them in memory;
* ``flush(timeout)`` sends everything buffered now, ``close()`` stops the thread and flushes,
  ``abandon()`` stops it without sending.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from trainers.events import Point

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
FLUSH_POINTS = 1000
MAX_BATCH = 50_000  # the server's limit per metrics request
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 5.0

Deliver = Callable[[list[Point]], None]


class Refused(Exception):
    """Raised by a delivery function: these points can never be delivered. ``error`` is what
    the producer is told (raised from its next ``put``/``flush``); None drops them quietly."""

    def __init__(self, error: BaseException | None):
        super().__init__(str(error))
        self.error = error


class SenderGaveUp(RuntimeError):
    """Delivery kept failing for ``retry_for`` seconds."""


def finite(points: Sequence[Point]) -> list[Point]:
    """The points whose value is a finite number."""
    isfinite = math.isfinite
    return [p for p in points if isfinite(p.value)]


class BufferedSender:
    def __init__(
        self,
        deliver: Deliver,
        *,
        name: str = "metrics",
        flush_seconds: float = FLUSH_SECONDS,
        flush_points: int = FLUSH_POINTS,
        max_batch: int = MAX_BATCH,
        max_buffered: int | None = None,
        on_overflow: Deliver | None = None,
        retry_for: float | None = None,
        give_up: Callable[[str], BaseException] = SenderGaveUp,
        max_backoff: float = MAX_BACKOFF,
        thread_exit: Callable[[], None] | None = None,
    ):
        """``retry_for=None`` retries for ever in the background; ``thread_exit`` runs on the
        sender thread as it ends (e.g. closing its database connection)."""
        if max_buffered is not None and on_overflow is None:
            raise ValueError("max_buffered needs on_overflow: where the overflow goes")
        self.deliver, self.name = deliver, name
        self.flush_seconds, self.flush_points, self.max_batch = (
            flush_seconds,
            flush_points,
            max_batch,
        )
        self.max_buffered, self.on_overflow = max_buffered, on_overflow
        self.retry_for, self.give_up, self.max_backoff = retry_for, give_up, max_backoff
        self.thread_exit = thread_exit
        self.error: BaseException | None = None
        self.last_error = ""
        self.points_sent = 0
        self.failures = 0  # deliveries that raised and were retried
        self.dropped_nonfinite = 0
        self.overflowed = 0
        self._buf: list[Point] = []
        self._lock = threading.Lock()  # the buffer
        self._send_lock = threading.Lock()  # one delivery at a time, chunks in order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-sender", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    # -- the producer's side
    def put(self, points: Sequence[Point]) -> None:
        """Buffer ``points`` (non-finite values dropped); raises ``error`` once set."""
        self.raise_error()
        kept = finite(points)
        if len(kept) < len(points):
            if not self.dropped_nonfinite:
                log.warning("%s: not storing non-finite metric values (NaN/inf)", self.name)
            self.dropped_nonfinite += len(points) - len(kept)
        spill: list[Point] = []
        with self._lock:
            self._buf.extend(kept)
            n = len(self._buf)
            if self.max_buffered is not None and n > self.max_buffered:
                cut = n - self.max_buffered
                spill, self._buf = self._buf[:cut], self._buf[cut:]
        if spill:
            self.overflowed += len(spill)
            self.on_overflow(spill)
        if n >= self.flush_points:
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything buffered now, retrying with backoff until it is delivered
        (True) or ``timeout`` seconds passed (False; None: the sender's ``retry_for``).
        Raises ``error`` when a delivery was refused."""
        timeout = self.retry_for if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = FIRST_BACKOFF
        while True:
            self.raise_error()
            if self._send_once():
                self.raise_error()
                return True
            if deadline is not None and time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    def close(self, timeout: float | None = None) -> bool:
        """Stop the background thread and deliver what is left (like ``flush``)."""
        self.stop()
        return self.flush(timeout)

    def abandon(self) -> None:
        """Stop the background thread; what is buffered is not delivered."""
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)

    def take(self) -> list[Point]:
        """Empty the buffer and return what it held (to spool it elsewhere)."""
        with self._send_lock, self._lock:
            batch, self._buf = self._buf, []
        return batch

    # -- delivery
    def _send_once(self) -> bool:
        """Deliver the buffer. False: a delivery failed and the unsent points are back in
        front of the buffer. True: delivered, or dropped because it was refused."""
        with self._send_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if self.error is not None:
                return True
            for start in range(0, len(batch), self.max_batch):
                chunk = batch[start : start + self.max_batch]
                try:
                    self.deliver(chunk)
                except Refused as r:
                    self.error = r.error
                    return True
                except Exception as e:
                    self._failed(e, batch[start:])
                    return False
                self.points_sent += len(chunk)
            return True

    def _failed(self, e: Exception, unsent: list[Point]) -> None:
        if not self.failures or self.last_error != str(e):
            log.warning("%s: delivery failed (will retry): %s", self.name, e)
        self.last_error = f"{type(e).__name__}: {e}" if not str(e) else str(e)
        self.failures += 1
        with self._lock:
            self._buf[:0] = unsent

    def _loop(self) -> None:
        failing_since: float | None = None
        delay = FIRST_BACKOFF
        try:
            while not self._stop.is_set():
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
                if self._stop.is_set():
                    break
                if self._send_once():
                    failing_since, delay = None, FIRST_BACKOFF
                    continue
                now = time.monotonic()
                failing_since = failing_since or now
                if self.retry_for is not None and now - failing_since > self.retry_for:
                    self.error = self.give_up(
                        f"could not deliver metrics for {self.retry_for:.0f} s: {self.last_error}"
                    )
                    return
                self._stop.wait(delay)  # back off instead of retrying at every new point
                delay = min(delay * 2, self.max_backoff)
        finally:
            if self.thread_exit is not None:
                self.thread_exit()
