"""The run websocket through the real Redis channel layer (channels.testing)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client

from runs.routing import websocket_urlpatterns
from runs.selectors.series import series_after
from runs.services.ingest import IngestPoint, ingest_points
from tests import factories as f

pytestmark = [pytest.mark.django_db(transaction=True)]

app = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))


def _session_cookie(user) -> bytes:
    user.save()  # the factory sets the password without saving; the session hash needs it
    c = Client()
    c.force_login(user)
    return f"sessionid={c.cookies['sessionid'].value}".encode()


def _setup():
    team = f.TeamFactory()
    member = f.UserFactory()
    f.MembershipFactory(user=member, team=team)
    outsider = f.UserFactory()
    f.MembershipFactory(user=outsider)  # in another team
    queue = f.QueueFactory()
    run = team.runs.create(name="r", plan={"stages": []}, queue=queue, state="running")
    return run, _session_cookie(member), _session_cookie(outsider)


async def _connect(run_id: int, cookie: bytes | None) -> WebsocketCommunicator:
    headers = [(b"cookie", cookie)] if cookie else []
    comm = WebsocketCommunicator(app, f"/ws/runs/{run_id}/", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    return comm


async def _closed_with(comm: WebsocketCommunicator, code: int) -> None:
    msg = await comm.receive_output(timeout=5)
    assert msg == {"type": "websocket.close", "code": code}
    await comm.wait()


async def _ingest(run_id: int, steps: range) -> None:
    pts = [IngestPoint("train/loss", s, 1.0 / (s + 1)) for s in steps]
    pts += [IngestPoint("lr", s, 0.001) for s in steps]
    await sync_to_async(ingest_points)(run_id=run_id, points=pts)


def test_a_user_of_another_team_cannot_subscribe():
    run, _, outsider = sync_to_async_run(_setup)

    async def go():
        comm = await _connect(run.pk, outsider)
        await _closed_with(comm, 4403)
        anon = await _connect(run.pk, None)
        await _closed_with(anon, 4401)

    asyncio.run(go())


def test_points_arrive_live_and_catch_up_after_a_drop_yields_each_point_once():
    run, member, _ = sync_to_async_run(_setup)

    async def go():
        got: dict[str, dict[int, float]] = {"train/loss": {}, "lr": {}}
        dupes = 0

        def take(series: dict) -> None:
            nonlocal dupes
            for key, s in series.items():
                for step, value in zip(s["steps"], s["values"], strict=True):
                    if step in got[key]:
                        dupes += 1  # the client dedupes by step; count to prove it matters
                    got[key][step] = value

        async def drain(comm, until_step: int) -> None:
            while max(got["train/loss"], default=-1) < until_step:
                msg = await comm.receive_json_from(timeout=5)
                if msg["type"] == "run.points":
                    assert msg["run"] == run.pk
                    take(msg["series"])

        comm = await _connect(run.pk, member)
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        for lo in range(0, 50, 10):
            await _ingest(run.pk, range(lo, lo + 10))
        await drain(comm, 49)
        await comm.disconnect()  # connection drops; training goes on
        for lo in range(50, 120, 10):
            await _ingest(run.pk, range(lo, lo + 10))
        comm = await _connect(run.pk, member)
        assert (await comm.receive_json_from(timeout=5))["type"] == "hello"
        # A batch that arrives while catching up overlaps the catch-up read.
        await _ingest(run.pk, range(115, 130))
        for key in got:
            last = max(got[key])
            missed = await sync_to_async(series_after)(
                run_id=run.pk, keys=[key], after_step=last, limit=50_000
            )
            for step, value in zip(missed[key]["steps"], missed[key]["values"], strict=True):
                got[key].setdefault(step, value)
        # the live batch carrying 115..129 is still delivered; dedupe keeps one per step
        msg = await comm.receive_json_from(timeout=5)
        assert msg["type"] == "run.points" and msg["min_step"] == 115
        for key, s in msg["series"].items():
            for step, value in zip(s["steps"], s["values"], strict=True):
                got[key].setdefault(step, value)
        await comm.disconnect()
        assert dupes == 0
        for key in got:
            assert sorted(got[key]) == list(range(130)), key

    asyncio.run(go())


def sync_to_async_run(fn):
    return fn()
