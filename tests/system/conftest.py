"""One cluster (tests/cluster.py) for the whole module, and the run page in Chromium."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster import ADMIN_PASSWORD, Cluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Every part of a deployment as its own process; shared by the module's tests (they
    start in seconds, the cluster in tens of seconds)."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class RunPage:
    """The run page, logged in as the bootstrapped admin, and every point push its websockets
    received: (when, the train/loss steps it carried)."""

    def __init__(self, browser, cluster: Cluster, run_id: int):
        self.cluster, self.run_id = cluster, run_id
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.pushes: list[tuple[float, list[int]]] = []
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        self.page.goto(cluster.url + "/accounts/login/")
        self.page.fill("input[name=username]", "admin")
        self.page.fill("input[name=password]", ADMIN_PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(cluster.url + "/")
        self.page.goto(f"{cluster.url}/runs/{run_id}/")
        self.page.wait_for_function("() => window.stagewiseSocket && window.stagewiseCharts")

    def _frame(self, payload) -> None:
        if not isinstance(payload, str) or '"run.points"' not in payload:
            return
        msg = json.loads(payload)
        steps = msg.get("series", {}).get("train/loss", {}).get("steps", [])
        self.pushes.append((time.monotonic(), steps))

    def pushed_after(self, since: float, step: int) -> bool:
        """Whether a push that arrived after ``since`` carried a train step past ``step``."""
        self.page.wait_for_timeout(200)  # Playwright delivers frames while the page runs
        return any(t > since and any(s > step for s in steps) for t, steps in self.pushes)

    def chart_steps(self) -> list[int]:
        """The steps of the train/loss trace as Plotly holds them."""
        return self.page.evaluate(
            """() => { const c = window.stagewiseCharts.train;
               if (!c.index.has('train/loss')) return [];
               return Array.from(c.div.data[c.index.get('train/loss')].x); }"""
        )

    def close(self, name: str) -> None:
        self.page.screenshot(path=str(self.cluster.tmp / f"{name}.png"), full_page=True)
        self.context.close()


@pytest.fixture
def run_page(browser, cluster, request):
    pages: list[RunPage] = []

    def open_page(run_id: int) -> RunPage:
        pages.append(RunPage(browser, cluster, run_id))
        return pages[-1]

    yield open_page
    for page in pages:
        page.close(request.node.name)
