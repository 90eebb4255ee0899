"""One place that talks to the channel layer (Zulip's send_event, Funkwhale's group_send)."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_send(group: str, message: dict) -> None:
    """Best effort: a missed push is recovered by the browser's after_step catch-up."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # Redis down: points are stored; clients catch up from the API
        log.warning("live push to %s failed", group, exc_info=True)


def run_event(run_id: int, event: str, **data) -> None:
    group_send(f"run-{run_id}", {"type": "run.event", "run": run_id, "event": event, **data})
