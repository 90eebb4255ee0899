"""A Celery worker announces itself in the worker registry when it is ready (host, devices,
memory, queues, version), heartbeats from a thread of its main process, and says when it
stops. Its queues are read from its consumer at every beat, so queues added to an all-queues
worker later (runs/services/queues.py) show."""

from __future__ import annotations

import logging
import os
import socket
import threading
from importlib import metadata

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from runs.services.workers import worker_announce, worker_heartbeat, worker_stopped

log = logging.getLogger(__name__)
_stop = threading.Event()
_name: list[str] = []


def _version() -> str:
    try:
        return metadata.version("stagewise")
    except metadata.PackageNotFoundError:
        return "dev"


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def local_devices() -> list[dict]:
    """The CUDA devices torch sees, else one CPU entry with the core count and ``count``:
    how many ranks a stage may run with here ($STAGEWISE_CPU_DEVICES, default 1)."""
    import torch

    from trainers.distributed import cpu_devices

    if torch.cuda.is_available():
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"kind": "cuda", "name": p.name, "memory_bytes": p.total_memory})
        return out
    cores = f"{os.cpu_count()} cores"
    return [{"kind": "cpu", "name": cores, "memory_bytes": _memory_bytes(), "count": cpu_devices()}]


def _queues(consumer) -> list[str]:
    try:
        return sorted(q.name for q in consumer.task_consumer.queues)
    except AttributeError:  # not consuming yet
        return []


def _beat(consumer, name: str) -> None:
    while not _stop.wait(settings.STAGEWISE_WORKER_HEARTBEAT_SECONDS):
        try:
            if not worker_heartbeat(name=name, queues=_queues(consumer)):
                _announce(consumer, name)
        except Exception:  # the database is away: the next beat tries again
            log.warning("worker heartbeat failed", exc_info=True)
            close_old_connections()


def _announce(consumer, name: str) -> None:
    facts = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": _queues(consumer),
        "devices": local_devices(),
        "memory_bytes": _memory_bytes(),
        "version": _version(),
    }
    worker_announce(name=name, facts=facts)


@worker_ready.connect
def _on_ready(sender=None, **kwargs) -> None:
    name = sender.hostname
    _name[:] = [name]
    try:
        _announce(sender, name)
    except Exception:
        log.warning("could not announce worker %s", name, exc_info=True)
    threading.Thread(target=_beat, args=(sender, name), name="worker-registry", daemon=True).start()


@worker_shutdown.connect
def _on_shutdown(**kwargs) -> None:
    _stop.set()
    if _name:
        try:
            worker_stopped(name=_name[0])
        except Exception:
            log.warning("could not record the worker's stop", exc_info=True)
