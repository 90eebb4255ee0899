"""Issue #17: Stagewise deployed as on several machines (tests/cluster.py: every part its own
process, configured by environment only) keeps every metric point through the faults a
deployment meets: Redis, Postgres or the web tier SIGKILLed and started again mid-stage.

Every test ends the same way: the run succeeded, every (series, step) is stored exactly once
and no train step is missing, and where a browser watched, its loss curve holds every step.
Workers being killed or stopped is covered by tests/runs/test_execution.py and
tests/runs/test_graceful_shutdown.py."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from runs.consumers import CLOSE_TRY_AGAIN
from tests.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

STAGES = 3
OUTAGE_S = 5


def _plan(name: str, steps: list[int]) -> dict:
    """The 3-stage LM example (tests/runs/reduced_plan.py) with these stage lengths (CPU: a
    few steps a second), evaluated and checkpointed twice a stage."""
    from runs.services.plans import apply_overrides
    from tests.runs.reduced_plan import reduced_lm_plan

    small = {
        **{f"stages.{i}.steps": n for i, n in enumerate(steps)},
        **{f"stages.{i}.schedule.warmup_steps": 2 for i in range(STAGES)},
        **{f"stages.{i}.eval_interval": max(2, n // 2) for i, n in enumerate(steps)},
        **{f"stages.{i}.checkpoint_interval": max(2, n // 2) for i, n in enumerate(steps)},
        "stages.1.dense_eval": {"interval": 2, "steps": 4},
        "stages.2.dense_eval": {"interval": 2, "steps": 4},
    }
    return {**apply_overrides(reduced_lm_plan(), small), "name": name}


def _assert_every_step_once(cluster: Cluster, run_id: int, last_step: int) -> None:
    """Read on a connection of its own: no (series, step) twice, and no train step missing."""
    stored = cluster.stored_steps(run_id)
    assert stored.get("train/loss") == list(range(1, last_step + 1)), stored.get("train/loss")
    for key, steps in stored.items():
        assert len(steps) == len(set(steps)), f"{key}: a step stored twice"


def _assert_chart_complete(page, last_step: int) -> None:
    """The open page's loss curve ends with every step, each once (live pushes and the
    catch-up reads after each reconnect, deduplicated by step)."""
    want = list(range(1, last_step + 1))
    wait_until(lambda: page.chart_steps() == want, 60, "the chart to hold every step", str)
    assert page.errors == []


# A first stage that outlasts the outage and then the page's reconnect: its backoff grows
# while the server is away (run_socket.js, up to 15 s between tries).
FAULT_STAGES = [200, 6, 6]
LAST_STEP = sum(FAULT_STAGES)


def _watched_run(cluster: Cluster, run_page, name: str):
    """A run on ``default`` with its page open, once its first stage is under way."""
    run_id = cluster.submit(_plan(name, FAULT_STAGES), "default")
    page = run_page(run_id)
    wait_until(
        lambda: cluster.train_steps(run_id) >= 10, 180, "the first stage to be under way",
        cluster.logs,
    )  # fmt: skip
    return run_id, page


def _then_restart(down_since: float, start) -> float:
    """Start the server again ``OUTAGE_S`` after it went down; when it was back."""
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
    start()
    return time.monotonic()


def _finishes_complete(cluster: Cluster, page, run_id: int, back: float, at_step: int) -> None:
    """After a restart at ``back`` (``at_step`` train steps stored then): live pushes of newer
    steps reach the page again, the run succeeds, nothing is lost or doubled, and the chart
    holds every step."""
    wait_until(
        lambda: page.pushed_after(back, at_step), 90, "live pushes after the restart",
        cluster.logs,
    )  # fmt: skip
    assert cluster.wait_finished(run_id) == "succeeded", cluster.logs()
    # each stage ran once, on one worker: no lease expired in the outage, nothing was redone
    stages = cluster.get(f"/api/runs/{run_id}/")["stages"]
    assert [s["attempts"] for s in stages] == [1] * STAGES, stages
    _assert_every_step_once(cluster, run_id, LAST_STEP)
    _assert_chart_complete(page, LAST_STEP)
    # what the page said while the server was away ("did not answer", a 503's reason) is
    # gone once it answers again
    wait_until(
        lambda: page.page.text_content("#run-error") == "", 30, "the outage line to clear",
        lambda: page.page.text_content("#run-error"),
    )  # fmt: skip


def test_two_pipelines_finish_on_two_queues(cluster):
    """Two runs submitted over the REST API, one per queue, run at the same time, each on the
    worker listening on its queue and never on the other; both succeed with every step."""
    steps = [8, 8, 8]
    runs = {q: cluster.submit(_plan(f"on {q}", steps), q) for q in ("default", "second")}
    for run_id in runs.values():
        assert cluster.wait_finished(run_id) == "succeeded", cluster.logs()
    workers = {"default": "train-a", "second": "train-b"}
    for queue, run_id in runs.items():
        _assert_every_step_once(cluster, run_id, sum(steps))
        # runs/execution/runner.py logs "stage <i> of run <id> starts on <host>:<worker pid>"
        for name, proc in cluster.procs.items():
            started = re.findall(
                rf"stage (\d) of run {run_id} starts on \S+:{proc.pid}$", cluster.log(name), re.M
            )
            want = ["0", "1", "2"] if name == workers[queue] else []
            assert started == want, (queue, name, started)
    # the web tier really is two server processes under the compose command
    children = subprocess.run(
        ["pgrep", "-P", str(cluster.procs["web"].pid)], capture_output=True, text=True
    )
    assert len(children.stdout.split()) == 2, children.stdout


def test_redis_killed_and_restarted_mid_stage(cluster, run_page):
    """Redis (broker and channel layer) SIGKILLed mid-stage and started again, empty, 5 s
    later. Meanwhile Postgres still serves the API, and a websocket opened in the outage is
    told to try again (4013), not refused. The worker keeps storing points; once Redis is
    back the page gets live pushes again (a websocket that lost its group rejoins), the next
    stages are dispatched though their task messages were lost, and nothing is lost."""
    run_id, page = _watched_run(cluster, run_page, "redis outage")
    cluster.redis.kill()
    down = time.monotonic()
    resp = cluster.api.get(f"{cluster.url}/api/runs/{run_id}/", timeout=30)
    assert (resp.status_code, resp.headers.get("Content-Type")) == (200, "application/json")
    assert cluster.socket_outcome(run_id) == CLOSE_TRY_AGAIN
    back = _then_restart(down, cluster.redis.start)
    _finishes_complete(cluster, page, run_id, back, cluster.train_steps(run_id))


def test_postgres_killed_and_restarted_mid_stage(cluster, run_page):
    """Postgres (the postmaster and every backend: the database host lost) SIGKILLed
    mid-stage and started again 5 s later on the same data dir and port (crash recovery).
    Meanwhile the API answers a JSON 503 with Retry-After (not a 500 page) and a websocket
    handshake gets 4013 "try again later" (not a 403). The worker buffers and retries its
    points, keeps its lease, and stores everything once Postgres is back; pushes resume."""
    run_id, page = _watched_run(cluster, run_page, "postgres outage")
    cluster.postgres.kill()
    down = time.monotonic()
    resp = cluster.api.get(f"{cluster.url}/api/runs/{run_id}/", timeout=30)
    assert (resp.status_code, resp.headers.get("Content-Type")) == (503, "application/json")
    assert resp.headers.get("Retry-After") and "detail" in resp.json(), resp.headers
    assert cluster.socket_outcome(run_id) == CLOSE_TRY_AGAIN
    back = _then_restart(down, cluster.postgres.start)
    _finishes_complete(cluster, page, run_id, back, cluster.train_steps(run_id))


def test_web_process_restarted_with_a_browser_connected(cluster, run_page):
    """The whole web tier (both server processes) SIGKILLed with the run page open, and its
    compose command started again on the same port 2 s later. The page's websocket
    reconnects by itself and catches up on what was stored while no server ran (the worker
    never needed the web tier); its chart ends with every step."""
    run_id, page = _watched_run(cluster, run_page, "web restart")
    opens = page.page.evaluate("() => window.stagewiseSocket.opens")
    cluster.kill("web")
    time.sleep(2)
    cluster.start_web()
    back, at_step = time.monotonic(), cluster.train_steps(run_id)
    wait_until(
        lambda: page.page.evaluate("() => window.stagewiseSocket.opens") > opens,
        60, "the page to reconnect", cluster.logs,
    )  # fmt: skip
    _finishes_complete(cluster, page, run_id, back, at_step)
