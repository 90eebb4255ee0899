"""A websocket set up while Postgres or Redis is away gets close code 4013 ("try again
later", which the run page retries with backoff), not a refused handshake or a 44xx code that
would stop it from reconnecting."""

from __future__ import annotations

import asyncio

import pytest
import redis
from channels.testing import WebsocketCommunicator
from django.db import OperationalError

from runs.consumers import CLOSE_TRY_AGAIN, RetryOnOutage


def _failing(exc: Exception, accept_first: bool):
    async def app(scope, receive, send):
        await receive()  # websocket.connect
        if accept_first:
            await send({"type": "websocket.accept"})
        raise exc

    return app


@pytest.mark.parametrize(
    "exc",
    [OperationalError("the database system is shutting down"), redis.ConnectionError("refused")],
)
@pytest.mark.parametrize("accept_first", [False, True])
def test_an_outage_during_set_up_is_a_retryable_close(exc, accept_first):
    async def go():
        comm = WebsocketCommunicator(RetryOnOutage(_failing(exc, accept_first)), "/ws/runs/1/")
        connected, _ = await comm.connect()
        assert connected  # accepted, then closed: the browser sees the code
        return await comm.receive_output()

    assert asyncio.run(go()) == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN}


def test_other_errors_are_not_hidden():
    async def go():
        comm = WebsocketCommunicator(RetryOnOutage(_failing(ValueError("bug"), False)), "/ws/")
        await comm.connect()

    with pytest.raises(ValueError):
        asyncio.run(go())
