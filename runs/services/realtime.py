"""One place that talks to the channel layer (Zulip's send_event, Funkwhale's group_send).

Pushes leave through one event loop per process, on a thread of its own, in the order they
were made: ``group_send`` only queues the message and returns. ``async_to_sync`` per push
(what this module did first) starts a fresh event loop each time, and channels-redis keeps
its connections per loop, so every push paid a new Redis connection and two thread handoffs:
about a third of a live 50-point ``ingest_points`` call. The caller never waited for Redis
anyway in any way that mattered: a push is best effort, and a page that misses one catches
up from the API (``after_step``). ``flush`` waits until what was queued has been sent (at
exit, and for callers that must know).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000  # pushes waiting while Redis is slow or down; older ones are dropped


class _Publisher:
    """The process's push loop: a daemon thread sending queued messages one at a time."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.idle = threading.Event()
        self.idle.set()
        self.pending = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._run, name="stagewise-push", daemon=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._send_forever())

    async def _send_forever(self) -> None:
        while True:
            layer, group, message = await self.queue.get()
            try:
                await layer.group_send(group, message)
            except Exception:  # Redis down: points are stored; clients catch up from the API
                log.warning("live push to %s failed", group, exc_info=True)
            finally:
                self._done()

    def _done(self) -> None:
        with self.lock:
            self.pending -= 1
            if self.pending == 0:
                self.idle.set()

    def _put(self, item) -> None:  # on the loop's thread
        if self.queue.full():
            self.queue.get_nowait()  # the oldest push goes; its page catches up
            self._done()
            log.warning("live push queue full: dropped the oldest push")
        self.queue.put_nowait(item)

    def submit(self, layer, group: str, message: dict) -> None:
        with self.lock:
            self.pending += 1
            self.idle.clear()
        self.loop.call_soon_threadsafe(self._put, (layer, group, message))


_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()


def _the_publisher() -> _Publisher:
    """This process's publisher (a forked child, e.g. a prefork worker, starts its own)."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher.pid != os.getpid():
            _publisher = _Publisher()
        return _publisher


def group_send(group: str, message: dict) -> None:
    """Queue a push to ``group``; best effort: a missed push is recovered by the browser's
    after_step catch-up."""
    layer = get_channel_layer()
    if layer is not None:
        _the_publisher().submit(layer, group, message)


def flush(timeout: float = 5.0) -> bool:
    """Wait until every queued push was sent (or failed); False if ``timeout`` ran out."""
    publisher = _publisher
    if publisher is None or publisher.pid != os.getpid():
        return True
    return publisher.idle.wait(timeout)


atexit.register(flush)


def run_event(run_id: int, event: str, **data) -> None:
    group_send(f"run-{run_id}", {"type": "run.event", "run": run_id, "event": event, **data})
