"""Websocket consumers (Funkwhale's JsonAuthConsumer shape): the base class authenticates the
session user, asks the concrete consumer which groups it may join, and forwards group messages
as JSON. Access is checked once at connect; nothing here queries the database per message."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

log = logging.getLogger(__name__)
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# RFC 6455 has 1013 "Try Again Later", but daphne (autobahn) may only send 1000 or 3000-4999:
# 4013 says the same in the application range. The browser reconnects with backoff.
CLOSE_TRY_AGAIN = 4013
_open = 0  # joined connections of this process (the /metrics websocket gauge)


def open_connections() -> int:
    return _open


def _outage_errors() -> tuple[type[BaseException], ...]:
    import redis
    from django.db import DatabaseError, InterfaceError

    return (DatabaseError, InterfaceError, redis.RedisError, ConnectionError, OSError)


class RetryOnOutage:
    """ASGI middleware for websockets: when Postgres or Redis is away while a connection is
    being set up (the session and user lookup, the access check, joining the group), the
    client gets close code 4013 "try again later" instead of a refused handshake (403) or a
    4401/4403 that would stop it from reconnecting."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        accepted = False

        async def tracking_send(message):
            nonlocal accepted
            if message.get("type") == "websocket.accept":
                accepted = True
            await send(message)

        try:
            return await self.inner(scope, receive, tracking_send)
        except _outage_errors():
            log.warning("websocket set-up failed on an outage: 4013", exc_info=True)
            if not accepted:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})


class JsonAuthConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses implement ``allowed_groups`` (``None`` means forbidden)."""

    joined: list[str]

    async def allowed_groups(self) -> list[str] | None:
        raise NotImplementedError

    async def connect(self) -> None:
        self.joined = []
        user = self.scope.get("user")
        # Accept first and then close, so that the browser sees the 44xx code in onclose
        # (a refused handshake only surfaces as 1006) and stops reconnecting.
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        groups = await self.allowed_groups()
        if groups is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.joined = groups
        global _open
        _open += 1
        await self.send_json({"type": "hello", "groups": groups})

    async def disconnect(self, code: int) -> None:
        global _open
        if getattr(self, "joined", []):
            _open -= 1
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "t": content.get("t")})

    async def forward(self, message: dict) -> None:
        await self.send_json(message)


@database_sync_to_async
def _user_may_see_run(user, run_id: int) -> bool:
    from runs.models import Run
    from runs.selectors.teams import team_ids_for

    return Run.objects.filter(pk=run_id, team_id__in=team_ids_for(user)).exists()


class RunConsumer(JsonAuthConsumer):
    """``ws/runs/<id>/``: the run's point batches and events."""

    async def allowed_groups(self) -> list[str] | None:
        run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await _user_may_see_run(self.scope["user"], run_id):
            return None
        return [f"run-{run_id}"]

    # group message "type" run.points / run.event -> these handlers
    async def run_points(self, message: dict) -> None:
        await self.forward(message)

    async def run_event(self, message: dict) -> None:
        await self.forward(message)
