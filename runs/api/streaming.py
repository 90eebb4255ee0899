"""Streaming a synchronous (database) iterator through an ASGI server without buffering it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async


async def stream_async(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull each chunk in the request's sync thread (where its database connection lives).
    Django buffers a plain iterator whole under ASGI; this one is sent as it is produced."""
    it = iter(chunks)
    sentinel = object()
    pull = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await pull(it, sentinel)) is not sentinel:
            yield chunk
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()
