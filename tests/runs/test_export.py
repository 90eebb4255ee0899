import asyncio
import csv
import io

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient

from runs.services.ingest import IngestPoint, ingest_points
from tests import factories as f

# The export streams through the ASGI path (async iterator pulling COPY chunks in the
# request's sync thread), which runs outside the test's transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def _get(user, url: str):
    async def go():
        client = AsyncClient()
        if user is not None:
            await client.aforce_login(user)
        r = await client.get(url)
        body = b"".join([c async for c in r.streaming_content]) if r.streaming else r.content
        # The view ran in asgiref's sync thread: close its connection, as a server would.
        await sync_to_async(connections.close_all)()
        return r.status_code, r.headers, body

    return asyncio.run(go())


@pytest.fixture
def member():
    user = f.UserFactory()
    team = f.TeamFactory()
    f.MembershipFactory(user=user, team=team, role="viewer")
    return user, team


def test_export_streams_every_raw_point_as_csv_ordered_by_key_and_step(member):
    user, team = member
    run = f.RunFactory(team=team)
    f.StageRunFactory(run=run, stage_index=0, name="prose-pt", start_step=0, end_step=20_000)
    f.StageRunFactory(run=run, stage_index=1, name="code", start_step=20_000, end_step=30_000)
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint("train/loss", s, 1.0 / (s + 1), 100.0 + s) for s in range(30_000)],
    )
    odd_key = 'eval/a,"quoted"/loss'
    ingest_points(
        run_id=run.pk,
        points=[IngestPoint(odd_key, s, -0.5 * s, 7.25) for s in (20, 10, 0)],
    )
    status, headers, body = _get(user, f"/api/runs/{run.pk}/export/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert f'filename="run-{run.pk}-metrics.csv"' in headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["key", "step", "value", "wall_time", "stage"]
    assert rows[1:4] == [
        [odd_key, "0", "-0", "7.25", "prose-pt"],
        [odd_key, "10", "-5", "7.25", "prose-pt"],
        [odd_key, "20", "-10", "7.25", "prose-pt"],
    ]
    loss = rows[4:]
    assert len(loss) == 30_000
    assert [int(r[1]) for r in loss] == list(range(30_000))
    assert all(float(r[2]) == 1.0 / (int(r[1]) + 1) for r in loss)  # exact round trip
    # the stage follows from the step: stage i owns start < step <= end (step 0: stage 0)
    assert {r[4] for r in loss[:20_001]} == {"prose-pt"}
    assert {r[4] for r in loss[20_001:]} == {"code"}

    status, _, body = _get(user, f"/api/runs/{run.pk}/export/?keys=train/loss,nope")
    assert status == 200
    assert len(body.decode().splitlines()) == 1 + 30_000


def test_export_of_another_teams_run_is_404_and_anonymous_is_refused(member):
    user, _ = member
    other = f.RunFactory()
    status, _, body = _get(user, f"/api/runs/{other.pk}/export/")
    assert status == 404 and b"not found" in body
    assert _get(None, f"/api/runs/{other.pk}/export/")[0] in (401, 403)
