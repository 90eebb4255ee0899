"""The whole dashboard flow in a real browser against a real server and worker."""

from __future__ import annotations

import json
import re

import pytest

from runs.models import MetricPoint, Run
from tests.e2e.conftest import ARTIFACTS, login
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAIN_COUNT = (
    "() => window.stagewiseCharts ? window.stagewiseCharts.train.pointCount('train/loss') : 0"
)


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _trace_steps(page, key: str) -> list[int]:
    return page.evaluate(
        """(key) => { const c = window.stagewiseCharts.train;
           return Array.from(c.div.data[c.index.get(key)].x); }""",
        key,
    )


def _number_in(page, selector: str, timeout: int = 15_000) -> None:
    page.wait_for_function(
        "(sel) => /\\d/.test((document.querySelector(sel) || {}).textContent || '')",
        arg=selector,
        timeout=timeout,
    )


def test_edit_submit_watch_compare_fork(page, stack):
    base = stack["server"].url
    login(page, stack)

    # -- pipeline editor: a bad field shows its path, the fixed plan previews its LR
    plan = reduced_lm_plan()
    plan["name"] = f"lm-prose-code-sft-{stack['queue'].name[4:]}"
    bad = json.loads(json.dumps(plan))
    bad["stages"][1]["data"][0]["weight"] = -1
    page.goto(base + "/pipelines/new/")
    page.get_by_role("tab", name="JSON").click()
    page.fill("#plan-json", json.dumps(bad, indent=2))
    err = page.locator('#plan-errors li[data-path="stages.1.data.0.weight"]')
    err.wait_for()
    assert "stages.1.data.0.weight" in err.inner_text()
    assert page.locator(".stage-card.has-error").count() >= 1
    _shot(page, "pipeline-editor-error")
    page.fill("#plan-json", json.dumps(plan, indent=2))
    page.locator("#plan-ok").wait_for(state="visible")
    page.wait_for_function(
        "() => { const d = document.getElementById('chart-lr-preview').data;"
        " return d && d.length && d[0].x.length > 50; }"
    )
    _shot(page, "pipeline-editor")
    page.select_option("#run-queue", stack["queue"].name)
    page.click("#run-pipeline")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run_id = int(page.url.rstrip("/").split("/")[-1])

    # -- run page: the loss curve grows live, without a reload
    page.evaluate("() => { window.__sameDocument = true; }")
    page.wait_for_function(f"() => ({TRAIN_COUNT})() > 0", timeout=120_000)
    first = page.evaluate(TRAIN_COUNT)
    page.wait_for_function(f"() => ({TRAIN_COUNT})() > {first}", timeout=60_000)
    # stage bands and boundary lines are drawn on the loss chart
    lines = page.evaluate(
        "() => document.getElementById('chart-train').layout.shapes"
        ".filter(s => s.type === 'line').map(s => s.x0)"
    )
    assert lines == [40, 80]
    # drop the socket mid-run: the page reconnects and catches up from after_step
    page.evaluate("() => window.stagewiseSocket.drop()")
    page.locator('#live-status[data-state="live"]').wait_for(timeout=30_000)
    page.locator("#gaps-table tbody tr").first.wait_for(timeout=120_000)
    # mid-run look at the LR-law panel (extrapolation band of the running stage); not asserted
    page.locator("#lr-law-panel").screenshot(path=str(ARTIFACTS / "run-lr-law-running.png"))
    page.locator("#run-state", has_text="succeeded").wait_for(timeout=180_000)
    page.wait_for_function(
        "() => document.querySelectorAll('#gaps-table tbody tr').length >= 2", timeout=30_000
    )
    assert page.evaluate("() => window.__sameDocument") is True
    stored = sorted(
        MetricPoint.objects.filter(series__run_id=run_id, series__key="train/loss").values_list(
            "step", flat=True
        )
    )
    page.wait_for_function(f"() => ({TRAIN_COUNT})() >= {len(stored)}", timeout=15_000)
    steps = _trace_steps(page, "train/loss")
    assert steps == stored, "every stored point exactly once, in step order"
    page.locator("#chart-matrix .heatmaplayer, #chart-matrix .hm").first.wait_for(timeout=15_000)
    # continual-learning panel: BWT is a number; LR-law panel: the fitted curve is drawn
    _number_in(page, '#analysis-panel [data-metric="bwt"] dd')
    page.wait_for_function(
        "() => { const d = document.getElementById('chart-lr-law').data;"
        " return !!d && d.some(t => t.meta === 'fit' && t.x.length > 10); }",
        timeout=20_000,
    )
    assert re.search(r"\d", page.inner_text("#lr-law-params"))
    _shot(page, "run-page")
    page.locator("#analysis-panel").screenshot(path=str(ARTIFACTS / "run-analysis-panel.png"))
    page.locator("#lr-law-panel").screenshot(path=str(ARTIFACTS / "run-lr-law-panel.png"))

    # -- fork from the stage-1 end checkpoint, land on the new run
    row = page.locator("#ckpt-table tbody tr", has=page.locator("td", has_text=re.compile(r"^40$")))
    row.locator("a.fork-btn").click()  # the fork page: the parent's later stages, as they are
    page.locator("#plan-ok").wait_for(state="visible")
    page.click("#fork-submit")
    page.wait_for_url(re.compile(rf".*/runs/(?!{run_id}/)\d+/$"))
    fork_id = int(page.url.rstrip("/").split("/")[-1])
    fork = Run.objects.get(pk=fork_id)
    assert fork.parent_id == run_id and fork.fork_checkpoint.step == 40
    page.wait_for_function(f"() => ({TRAIN_COUNT})() > 0", timeout=120_000)
    # the parent's points up to the fork step are drawn once, as a muted "shared prefix" trace
    origin = page.inner_text("#fork-origin")
    assert "forked from" in origin and "at step 40" in origin
    prefix = page.wait_for_function(
        """(pid) => { const d = window.stagewiseCharts.train.div.data;
           const t = d.find((t) => (t.legendgroup || "").includes(`parent #${pid}`));
           return t && t.x.length ? { name: t.name, maxX: Math.max(...t.x) } : null; }""",
        arg=run_id,
        timeout=10_000,
    ).json_value()
    assert f"#{run_id}" in prefix["name"] and prefix["maxX"] <= 40
    own = _trace_steps(page, "train/loss")
    assert min(own) > 40  # the fork's own trace holds only its own points
    _shot(page, "fork-page")

    # -- compare the run and its fork: the fork's line starts at step 0, its inherited part
    # (the parent's points up to the fork step) muted, then its own points
    page.goto(f"{base}/compare/?runs={run_id},{fork_id}&keys=train/loss,eval/prose/loss")
    page.wait_for_function(
        "() => { const c = document.querySelectorAll('.compare-chart');"
        " return c.length === 2 && c[0].data && c[0].data.length === 3; }",
        timeout=30_000,
    )
    fork_parts = """(args) => Object.fromEntries(
        document.querySelectorAll('.compare-chart')[args.chart].data
          .filter((t) => t.legendgroup === String(args.run)).map((t) => [t.meta, Array.from(t.x)]))"""
    parts = page.evaluate(fork_parts, {"chart": 0, "run": fork_id})
    assert parts["inherited"] == [s for s in stored if s <= 40]
    assert min(parts["own"]) > 40
    eval_parts = page.evaluate(fork_parts, {"chart": 1, "run": fork_id})
    assert min(eval_parts["inherited"]) <= 40 and max(eval_parts["inherited"]) <= 40
    _shot(page, "compare-global")
    page.select_option("#x-mode", "stage")
    page.wait_for_function(
        "() => document.querySelector('.compare-chart').data.length > 3", timeout=10_000
    )
    assert "mode=stage" in page.url
    # step within stage: the inherited points are the fork's stage 0 (0, 40]
    staged = page.evaluate(
        """(id) => document.querySelector('.compare-chart').data
           .filter((t) => t.legendgroup === String(id) && t.meta === 'inherited')
           .map((t) => Array.from(t.x))""",
        fork_id,
    )
    assert staged == [[s for s in stored if 0 < s <= 40]]
    _number_in(page, f'#cl-table tr[data-run="{run_id}"] [data-metric="bwt"]')
    _shot(page, "compare")

    # -- runs list shows both, with progress
    page.goto(base + "/")
    page.locator(f'#runs-table tr[data-run="{fork_id}"]').wait_for()
    page.locator(f'#runs-table tr[data-run="{run_id}"] .badge', has_text="succeeded").wait_for()
    _number_in(page, f'#runs-table tr[data-run="{run_id}"] [data-metric="bwt"]')
    _shot(page, "runs-list")

    # -- pipeline editor what-if: the law fitted on the finished run, this plan's schedule
    page.goto(f"{base}/pipelines/new/?example=lm_prose_code_sft")
    page.locator("#plan-ok").wait_for(state="visible")
    page.select_option("#whatif-run", str(run_id))
    page.click("#whatif-predict")
    page.wait_for_function(
        "() => { const d = document.getElementById('chart-whatif').data;"
        " return !!d && d.some(t => t.meta === 'predicted' && t.x.length > 10); }",
        timeout=15_000,
    )
    assert page.inner_text("#whatif-errors") == ""
    _shot(page, "pipeline-what-if")
    page.goto(base + "/queues/")
    page.locator(f'section[data-queue="{stack["queue"].name}"]').wait_for()
    _shot(page, "queues")
    page.goto(base + "/pipelines/")
    _shot(page, "pipelines")

    # -- datasets: upload with a progress bar, then preview the first records
    sample = ARTIFACTS / "sample.jsonl"
    sample.write_text("".join(json.dumps({"text": f"record {i}"}) + "\n" for i in range(50)))
    page.goto(base + "/datasets/")
    page.fill("#upload-form input[name=name]", "e2e-sample")
    page.set_input_files("#upload-form input[name=file]", str(sample))
    page.click("#upload-form button[type=submit]")
    page.locator("#upload-status", has_text="Stored e2e-sample v1").wait_for()
    page.locator('section[data-dataset="e2e-sample"] a', has_text="preview").click()
    page.locator("pre.preview", has_text="record 0").wait_for()
    _shot(page, "dataset-preview")
    assert not page.js_errors, page.js_errors


def test_editor_renames_then_deletes_a_pipeline(page, stack):
    """A rename saves to the same pipeline (no second one); delete asks, then goes back to
    the list."""
    from runs.models import Pipeline
    from runs.services.plans import pipeline_upsert_from_plan

    base = stack["server"].url
    team = stack["team"]
    plan = {**reduced_lm_plan(), "name": "e2e-original"}
    pipeline = pipeline_upsert_from_plan(team=team, plan=plan)
    login(page, stack)

    page.goto(f"{base}/pipelines/{pipeline.pk}/edit/")
    page.locator("#plan-ok").wait_for(state="visible")
    page.get_by_role("tab", name="JSON").click()
    page.fill("#plan-json", json.dumps({**plan, "name": "e2e-renamed"}, indent=2))
    page.fill("#pipeline-description", "renamed in the browser")
    page.click("#save-pipeline")
    page.locator("#editor-status", has_text="Saved pipeline “e2e-renamed”").wait_for()
    assert page.inner_text("#pipeline-title") == "e2e-renamed"
    assert list(Pipeline.objects.filter(team=team).values_list("pk", "name", "description")) == [
        (pipeline.pk, "e2e-renamed", "renamed in the browser")
    ]
    page.goto(base + "/pipelines/")
    rows = page.locator("#pipelines-table tbody tr")
    assert rows.count() == 1
    assert "e2e-renamed" in rows.first.inner_text()

    # a name another pipeline of the team has: the error names the field, nothing changes
    pipeline_upsert_from_plan(team=team, plan={**plan, "name": "e2e-other"})
    page.goto(f"{base}/pipelines/{pipeline.pk}/edit/")
    page.locator("#plan-ok").wait_for(state="visible")
    page.get_by_role("tab", name="JSON").click()
    page.fill("#plan-json", json.dumps({**plan, "name": "e2e-other"}, indent=2))
    page.click("#save-pipeline")
    page.locator('#plan-errors li[data-path="name"]', has_text="already has").wait_for()
    assert Pipeline.objects.get(pk=pipeline.pk).name == "e2e-renamed"
    _shot(page, "pipeline-editor-rename-conflict")

    page.once("dialog", lambda d: d.accept())
    page.click("#delete-pipeline")
    page.wait_for_url(base + "/pipelines/")
    assert not Pipeline.objects.filter(pk=pipeline.pk).exists()
    assert page.locator("#pipelines-table tbody tr").count() == 1
    assert "e2e-renamed" not in page.inner_text("#pipelines-table")
    assert not page.js_errors, page.js_errors
