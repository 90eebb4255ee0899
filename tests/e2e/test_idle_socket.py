"""An idle run page keeps its websocket: a finished run's page stays open for a minute without
one reconnect, and the web server logs no traceback meanwhile.

Before redis-py was given a socket timeout above channels-redis's 5 s blocking pop, every idle
socket was dropped after ~5.5 s ("Timeout reading from redis.sock" in the server log) and the
page flipped reconnecting/live, re-fetching every series each time."""

from __future__ import annotations

import pytest

from runs.models import Run
from tests.e2e.conftest import login
from tests.runs.reduced_plan import reduced_lm_plan
from tests.workers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IDLE_SECONDS = 60


def test_finished_run_page_keeps_its_socket_for_a_minute(page, stack):
    from runs.services.runs import run_submit

    server = stack["server"]
    run = run_submit(team=stack["team"], queue=stack["queue"], plan=reduced_lm_plan(), name="idle")
    wait_for(
        lambda: Run.objects.get(pk=run.pk).state == "succeeded",
        300,
        "the run to finish",
        lambda: stack["workers"].logs() + server.logs(),
    )

    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    login(page, stack)
    page.goto(f"{server.url}/runs/{run.pk}/")
    page.locator('#live-status[data-state="live"]').wait_for()
    page.wait_for_load_state("networkidle")  # the first load and catch-up are done
    # Count requests while idle: a reconnect re-fetches the series.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    page.wait_for_timeout(IDLE_SECONDS * 1000)

    assert page.locator("#live-status").get_attribute("data-state") == "live"
    assert page.evaluate("() => window.stagewiseSocket.reconnects") == 0
    run_sockets = [u for u in sockets if f"/ws/runs/{run.pk}/" in u]
    assert len(run_sockets) == 1, run_sockets
    assert not [u for u in requests if "/series/" in u], requests
    log = server.log_path.read_text()
    assert "Traceback" not in log, log[-4000:]
    assert "Timeout reading" not in log, log[-4000:]
    assert page.js_errors == []
