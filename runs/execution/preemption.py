"""Graceful worker shutdown: SIGTERM to a Celery worker (its warm shutdown) asks the stage it
runs to checkpoint at the next step and give its lease back, so another worker continues at
once from that step, without waiting for the lease to expire and without repeating steps.

Celery sends ``worker_shutting_down`` in the worker's main process. With ``-P solo`` the stage
runs there and sees the flag directly; with the prefork pool it runs in a child process, which
learns of it from a short-lived key in Django's cache (Redis) named after its parent."""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_shutting_down
from django.core.cache import cache

log = logging.getLogger(__name__)
KEY_SECONDS = 3600
_requested = threading.Event()


def _key(pid: int) -> str:
    return f"stagewise:preempt:{socket.gethostname()}:{pid}"


@worker_shutting_down.connect
def _on_shutdown(sig=None, how=None, exitcode=None, **kwargs) -> None:
    request_preemption()


def request_preemption() -> None:
    """This worker process is going away: its stages checkpoint and requeue themselves."""
    _requested.set()
    try:
        cache.set(_key(os.getpid()), 1, KEY_SECONDS)
    except Exception:  # Redis away: a pool child will not see it and its lease will expire
        log.warning("could not publish the shutdown to pool processes", exc_info=True)


def preemption_requested() -> bool:
    """Asked in this process, or in the worker process that started this one (a pool
    child). Reads Redis: call it from the heartbeat thread, not per training step."""
    if _requested.is_set():
        return True
    try:
        return bool(cache.get_many([_key(os.getpid()), _key(os.getppid())]))
    except Exception:  # Redis away: not asked now. Raising would skip the lease renewal.
        log.debug("could not read the shutdown flag", exc_info=True)
        return False
