"""The run page's chart tools, events, notes and failure view (issue #14, "Run page").

The API checks (the events and notes endpoints) run on the test database without a browser;
the browser checks use a real daphne server and Chromium, with no worker: points are stored
straight through ``runs.services.ingest.ingest_points`` (the path every writer ends in), and a
worker kill is simulated through the real services: its lease expires and
``runs.services.dispatch.requeue_expired`` puts the stage back in the queue (which is what the
beat job does after a kill; tests/runs/test_execution.py kills a real worker, too slow here)."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from django.utils import timezone

from runs.models import Run, WorkerLease
from runs.services.dispatch import dispatch, requeue_expired
from runs.services.ingest import PointColumns, ingest_points
from runs.services.leases import lease_acquire
from runs.services.runs import run_submit
from runs.services.stages import stage_failed
from tests import factories as f
from tests.e2e.conftest import ARTIFACTS, login
from tests.runs.reduced_plan import reduced_lm_plan
from tests.servers import Daphne

SPIKE_STEP, SPIKE = 654_321, 50.0
# stage 0: 4 x 8 = 32 tokens a step, stage 1: 8 x 16 = 128, stage 2: 16 x 64 = 1024 (default)
TOKEN_PLAN = {"stages.0.batch_size": 4, "stages.0.seq_len": 8, "stages.1.batch_size": 8,
              "stages.1.seq_len": 16}  # fmt: skip


def _plan(**overrides) -> dict:
    from runs.services.plans import apply_overrides

    return apply_overrides(reduced_lm_plan(), overrides)


def _queue():
    return f.QueueFactory(name=f"rp-{uuid.uuid4().hex[:8]}", max_concurrent=5)


def _started(team, queue, worker="w-doomed"):
    """A submitted run whose first stage a worker took (no worker process: the lease only)."""
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan(), name="requeued")
    dispatch()  # inside a test transaction; outside one the submit's on-commit dispatch did it
    sr = run.stage_runs.get(stage_index=0)
    token = WorkerLease.objects.get(stage_run=sr).worker_id.removeprefix("dispatched:")
    return lease_acquire(stage_run_id=sr.pk, token=token, worker_id=worker)


def _lose_worker() -> int:
    """What follows a killed worker: its lease runs out, the expiry job requeues the stage and
    dispatches it again (on commit; called here too for the tests inside a transaction)."""
    past = timezone.now() - timezone.timedelta(minutes=5)
    WorkerLease.objects.update(
        acquired_at=past, heartbeat_at=past, expires_at=past + timezone.timedelta(seconds=1)
    )
    n = requeue_expired()
    dispatch()
    return n


def _ingest(run, key, steps, values) -> None:
    n = len(steps)
    cols = PointColumns([key] * n, list(steps), list(values), [None] * n)
    ingest_points(run_id=run.pk, points=cols, publish=False)


# ------------------------------------------------------------------ the API (no browser)


@pytest.mark.django_db
def test_events_show_a_lost_worker_as_requeue_then_resume_with_the_attempt(team):
    sr = _started(team, _queue())
    ckpt = f.CheckpointFactory(stage_run=sr, run=sr.run, step=20)
    _ingest(sr.run, "train/loss", range(1, 26), [1.0] * 25)
    assert _lose_worker() == 1  # requeued, and dispatched again at once (attempt 2)
    api = f.api_client_for(team)
    body = api.get(f"/api/runs/{sr.run.pk}/events/").json()
    kinds = [(e["kind"], e.get("attempt")) for e in body["events"]]
    assert ("requeue", 1) in kinds and ("resume", 2) in kinds
    requeue = next(e for e in body["events"] if e["kind"] == "requeue")
    assert requeue["step"] == requeue["resume_step"] == ckpt.step and requeue["time"]
    assert ("checkpoint", 20) in [(e["kind"], e["step"]) for e in body["events"]]
    assert body["axes"]["tokens"]["source"] == "plan"  # an LM plan: batch_size x seq_len
    assert body["failure"] is None


@pytest.mark.django_db
def test_events_name_divergence_and_a_failure_keeps_its_traceback(team):
    sr = _started(team, _queue())
    err = "TrainingDiverged: train/loss became nan at step 17 in stage 'prose-pt'; try a lower lr"
    stage_failed(stage_run=sr, worker_id="w-doomed", error=err, traceback="Traceback ...\nboom")
    body = f.api_client_for(team).get(f"/api/runs/{sr.run.pk}/events/").json()
    diverged = next(e for e in body["events"] if e["kind"] == "divergence")
    assert (diverged["step"], diverged["metric"], diverged["value"]) == (17, "train/loss", "nan")
    assert body["failure"]["traceback"].endswith("boom") and body["failure"]["name"] == "prose-pt"


@pytest.mark.django_db
def test_notes_render_markdown_with_html_escaped(team):
    run = run_submit(team=team, queue=_queue(), plan=reduced_lm_plan(), external=True)
    run.notes = "**bold** <script>x()</script> [a](javascript:alert(1)) [b](https://example.org)"
    run.save(update_fields=["notes"])
    html = f.api_client_for(team).get(f"/api/runs/{run.pk}/notes/").json()["html"]
    assert "<strong>bold</strong>" in html and "&lt;script&gt;" in html and "<script" not in html
    assert 'href="javascript' not in html and 'href="https://example.org"' in html


# ------------------------------------------------------------------ the browser


@pytest.fixture
def stack(transactional_db, tmp_path):
    """A team member and the web server; no worker (points are stored directly)."""
    team = f.TeamFactory()
    user = f.UserFactory()
    user.save()  # the factory sets the password without saving it
    f.MembershipFactory(user=user, team=team, role="member")
    server = Daphne(tmp_path)
    yield {"team": team, "user": user, "queue": _queue(), "server": server}
    server.stop()


def _open(page, stack, run) -> None:
    login(page, stack)
    page.goto(f"{stack['server'].url}/runs/{run.pk}/")
    page.locator('#live-status[data-state="live"]').wait_for()


def _traces(page, chart: str, meta: str) -> list[dict]:
    return page.evaluate(
        """([chart, meta]) => window.stagewiseCharts[chart].div.data.filter((t) => t.meta === meta)
             .map((t) => ({ x: Array.from(t.x), y: Array.from(t.y), name: t.name }))""",
        [chart, meta],
    )


def _wait_traces(page, chart: str, meta: str, js_cond: str = "true", timeout=30_000):
    page.wait_for_function(
        """([chart, meta, cond]) => { const c = window.stagewiseCharts && window.stagewiseCharts[chart];
             const t = c && c.div.data && c.div.data.filter((t) => t.meta === meta);
             return t && t.length > 0 && new Function("t", `return ${cond}`)(t); }""",
        arg=[chart, meta, js_cond],
        timeout=timeout,
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_a_spike_in_a_million_points_shows_in_the_envelope_and_raw_when_zoomed(page, stack):
    plan = _plan(
        **{"stages.0.steps": 500_000, "stages.1.steps": 300_000, "stages.2.steps": 200_000}
    )
    run = run_submit(team=stack["team"], queue=stack["queue"], plan=plan, external=True, name="1M")
    steps = np.arange(1, 1_000_001, dtype=np.int64)
    values = 2.0 + 0.01 * np.sin(steps / 500.0)
    values[SPIKE_STEP - 1] = SPIKE
    cols = PointColumns(
        ["train/loss"] * len(steps), steps.tolist(), values.tolist(), [1.0e9] * len(steps)
    )
    ingest_points(run_id=run.pk, points=cols, publish=False)

    _open(page, stack, run)
    _wait_traces(page, "train", "band-hi:train/loss")
    page.locator("#train-card").screenshot(path=str(ARTIFACTS / "run-chart-envelope.png"))
    (hi,) = _traces(page, "train", "band-hi:train/loss")
    (line,) = _traces(page, "train", "train/loss")
    assert len(line["x"]) <= 2000 < 1_000_000  # downsampled at full zoom-out
    top = int(np.argmax(hi["y"]))
    assert hi["y"][top] >= SPIKE
    bucket_end = hi["x"][top]  # a bucket's last step, its max taken over the whole bucket
    assert bucket_end >= SPIKE_STEP and bucket_end - SPIKE_STEP < 4096
    assert max(line["y"]) < SPIKE  # the line alone (last value per bucket) misses the spike

    # zoomed in around the spike: the window is re-read raw, no envelope
    page.evaluate(
        """(s) => Plotly.relayout(window.stagewiseCharts.train.div,
             {"xaxis.range[0]": s - 300, "xaxis.range[1]": s + 300})""",
        SPIKE_STEP,
    )
    _wait_traces(page, "train", "train/loss", f"t[0].x.includes({SPIKE_STEP})")
    (raw,) = _traces(page, "train", "train/loss")
    assert raw["y"][raw["x"].index(SPIKE_STEP)] == SPIKE
    assert raw["x"] == sorted(raw["x"]) and len(raw["x"]) > 500  # every step of the window
    assert not _traces(page, "train", "band-hi:train/loss")


@pytest.mark.e2e
@pytest.mark.slow
def test_x_by_tokens_and_by_step_within_stage_with_smoothing_restarting_at_boundaries(page, stack):
    run = run_submit(
        team=stack["team"], queue=stack["queue"], plan=_plan(**TOKEN_PLAN), external=True
    )
    steps = list(range(1, 101))
    # a jump at each boundary
    loss = [5.0 - 0.02 * s + (3.0 if s in (41, 81) else 0.0) for s in steps]
    _ingest(run, "train/loss", steps, loss)
    _ingest(run, "eval/prose/loss", range(10, 101, 10), [3.0] * 10)
    _ingest(run, "eval/prose/ppl", range(10, 101, 10), [20.0] * 10)

    _open(page, stack, run)
    _wait_traces(page, "train", "train/loss", "t[0].x.length === 100")
    # only the run's own eval metrics are offered (an LM run: no accuracy)
    options = page.eval_on_selector_all("#eval-metric option", "os => os.map((o) => o.value)")
    assert options == ["loss", "ppl"]

    page.locator("#train-x option[value=tokens]").wait_for(state="attached")
    page.select_option("#train-x", "tokens")
    expected = [
        32 * s if s <= 40 else 1280 + 128 * (s - 40) if s <= 80 else 6400 + 1024 * (s - 80)
        for s in steps
    ]
    _wait_traces(page, "train", "train/loss", f"t[0].x[99] === {expected[-1]}")
    assert _traces(page, "train", "train/loss")[0]["x"] == expected
    lines = page.evaluate(
        "() => document.getElementById('chart-train').layout.shapes"
        ".filter((s) => s.type === 'line').map((s) => s.x0)"
    )
    assert lines == [1280, 6400]  # the stage boundaries, in tokens

    page.select_option("#train-x", "stage")
    _wait_traces(page, "train", "train/loss", "t.length === 3")
    parts = _traces(page, "train", "train/loss")
    assert [p["x"] for p in parts] == [list(range(1, 41)), list(range(1, 41)), list(range(1, 21))]
    assert [p["name"].split(" · ")[1] for p in parts] == ["prose-pt", "code-cpt", "docstring-sft"]
    page.locator("#train-card").screenshot(path=str(ARTIFACTS / "run-chart-by-stage.png"))

    # smoothing: the average starts over at each boundary, so the jump at step 41 stays sharp
    page.select_option("#train-x", "step")
    page.eval_on_selector(
        "#train-smooth", "(el) => { el.value = '0.9'; el.dispatchEvent(new Event('input')); }"
    )
    _wait_traces(page, "train", "raw:train/loss")
    (smooth,) = _traces(page, "train", "train/loss")
    i41 = smooth["x"].index(41)
    assert smooth["y"][i41] == pytest.approx(loss[40])  # restarted: the stage's first point
    assert smooth["y"][i41 - 1] != pytest.approx(loss[39])  # smoothed within the stage
    page.check("#train-logy")
    page.wait_for_function(
        "() => document.getElementById('chart-train').layout.yaxis.type === 'log'"
    )
    page.locator("#train-card").screenshot(path=str(ARTIFACTS / "run-chart-smoothed-log.png"))


@pytest.mark.e2e
@pytest.mark.slow
def test_notes_tags_and_name_are_saved_and_notes_render_with_markup_escaped(page, stack):
    run = run_submit(
        team=stack["team"], queue=stack["queue"], plan=reduced_lm_plan(), external=True
    )
    _open(page, stack, run)
    notes = (
        '**bold** and <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">'
    )
    page.click("#notes-edit")
    page.fill("#notes-input", notes)
    page.click("#notes-save")
    page.locator("#notes-view strong", has_text="bold").wait_for()
    assert page.locator("#notes-view script, #notes-view img").count() == 0
    shown = page.inner_text("#notes-view")
    assert "<script>window.__pwned = 1</script>" in shown and "onerror" in shown  # as text
    assert page.evaluate("() => window.__pwned") is None
    run.refresh_from_db()
    assert run.notes == notes

    page.fill("#tag-input", "baseline")
    page.press("#tag-input", "Enter")
    page.locator('#run-tags .tag[data-tag="baseline"]').wait_for()
    page.click("#rename-run")
    page.fill("#rename-input", "renamed <i>run</i>")
    page.press("#rename-input", "Enter")
    page.locator("#run-name-text", has_text="renamed <i>run</i>").wait_for()
    run.refresh_from_db()
    assert (run.tags, run.name) == (["baseline"], "renamed <i>run</i>")
    page.reload()  # rendered from the server again: the same notes, still text
    page.locator("#notes-view strong", has_text="bold").wait_for()
    assert page.locator("#notes-view script, #notes-view img").count() == 0


@pytest.mark.e2e
@pytest.mark.slow
def test_events_lane_shows_a_requeue_after_a_worker_is_lost_and_forks_link(page, stack):
    sr = _started(stack["team"], stack["queue"])
    ckpt = f.CheckpointFactory(stage_run=sr, run=sr.run, step=20)
    _ingest(sr.run, "train/loss", range(1, 26), [2.0 - 0.01 * s for s in range(1, 26)])
    fork = stack["team"].runs.create(name="a fork", plan=reduced_lm_plan(), queue=stack["queue"],
                                     parent=sr.run, fork_checkpoint=ckpt)  # fmt: skip
    _open(page, stack, sr.run)
    _wait_traces(page, "train", "lane:stage_start")
    assert not _traces(page, "train", "lane:requeue")
    link = page.locator("#ckpt-table a.fork-btn").first
    assert link.get_attribute("href") == f"/runs/{sr.run.pk}/fork/{ckpt.pk}/"
    assert page.locator(f'#run-forks a[href="/runs/{fork.pk}/"]').count() == 1

    assert _lose_worker() == 1  # the page sees it on its next summary poll
    _wait_traces(page, "train", "lane:requeue", timeout=20_000)
    (lane,) = _traces(page, "train", "lane:requeue")
    assert lane["x"] == [20]  # it resumes from the checkpoint at step 20
    item = page.locator("#run-events li[data-kind=requeue]")
    assert re.search(r"attempt 1\b.*resumes from step 20", item.inner_text())
    page.locator("#run-events li[data-kind=resume]", has_text="attempt 2").wait_for()
    assert _traces(page, "train", "events")  # markers on the curve too
    page.screenshot(path=str(ARTIFACTS / "run-page-events.png"), full_page=True)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_failed_run_shows_its_error_and_traceback_instead_of_empty_charts(page, stack):
    sr = _started(stack["team"], stack["queue"])
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: <b>boom</b>'
    stage_failed(
        stage_run=sr, worker_id="w-doomed", error="RuntimeError: <b>boom</b>", traceback=tb
    )
    _open(page, stack, sr.run)
    page.locator("#run-failure pre.traceback", has_text="RuntimeError: <b>boom</b>").wait_for()
    assert page.inner_text("#run-failure [data-role=where]") == "stage prose-pt failed"
    page.wait_for_function("() => document.getElementById('charts').hidden")
    assert page.locator("#run-failure b").count() == 0
    icon = page.evaluate("() => document.querySelector('link[rel=icon]').href")
    assert page.request.get(icon).status == 200
    # a finished run can be deleted, after a confirm
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click("#delete-run")
    page.wait_for_url(stack["server"].url + "/")
    assert dialogs and "cannot be undone" in dialogs[0]
    assert not Run.objects.filter(pk=sr.run.pk).exists()
