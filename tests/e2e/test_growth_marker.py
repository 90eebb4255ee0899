"""The run page marks a stage that grows the model (issue #15, growth between stages): its
boundary carries the growth's label and the "more metrics" chart shows `model/params`.

A real daphne server and Chromium, no worker: the example plan runs as an external run whose
points (model/params as a real run of it logged them, see trainers/README.md; a synthetic
loss line) are stored straight through ``runs.services.ingest.ingest_points``, as in
test_run_page_features.py."""

from __future__ import annotations

import json

import pytest

from runs.services.demo import EXAMPLES_DIR
from runs.services.runs import run_submit
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_run_page_features import _ingest, _open, _traces, _wait_traces, stack  # noqa: F401

# model/params at each stage start of examples/growth_identity.json (2 -> 4 -> 8 layers)
PARAMS = {0: 141_056, 400: 241_024, 700: 440_960}


def _annotations(page, chart: str) -> list[dict]:
    return page.evaluate(
        """(id) => (document.getElementById(id).layout.annotations || [])
             .filter((a) => a.name && a.name.startsWith("grow-")).map((a) => ({ x: a.x, text: a.text }))""",
        f"chart-{chart}",
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_a_grown_stage_is_marked_at_its_boundary_and_model_params_is_shown(page, stack):  # noqa: F811
    plan = json.loads((EXAMPLES_DIR / "growth_identity.json").read_text())
    run = run_submit(team=stack["team"], queue=stack["queue"], plan=plan, external=True)
    steps = list(range(1, 901))
    _ingest(run, "train/loss", steps, [6.0 - 0.003 * s for s in steps])
    _ingest(run, "model/params", list(PARAMS), list(PARAMS.values()))
    _ingest(run, "epoch", steps, [s / 300 for s in steps])  # sorts before model/params

    _open(page, stack, run)
    _wait_traces(page, "train", "train/loss", "t[0].x.length === 900")
    page.wait_for_function(
        "() => (document.getElementById('chart-train').layout.annotations || [])"
        ".some((a) => a.name === 'grow-2')"
    )
    want = [
        {"x": 400, "text": "grown ×2 (identity, 2 → 4 layers)"},
        {"x": 700, "text": "grown ×2 (identity, 4 → 8 layers)"},
    ]
    assert _annotations(page, "train") == want
    lines = page.evaluate(
        """() => document.getElementById('chart-train').layout.shapes
             .filter((s) => s.type === 'line').map((s) => [s.x0, s.line.color])"""
    )
    assert lines == [[400, "#8e44ad"], [700, "#8e44ad"]]  # both boundaries grow the model

    _wait_traces(page, "other", "model/params")
    assert page.eval_on_selector("#other-metric", "(el) => el.value") == "model/params"
    (params,) = _traces(page, "other", "model/params")
    assert dict(zip(params["x"], params["y"], strict=True)) == PARAMS
    page.locator("#train-card").screenshot(path=str(ARTIFACTS / "run-growth-marker.png"))

    # the user's choice stays: picking another metric is not undone by the next summary poll
    page.select_option("#other-metric", "epoch")
    _wait_traces(page, "other", "epoch")
    page.wait_for_timeout(3500)  # one summary poll (every 3 s)
    assert page.eval_on_selector("#other-metric", "(el) => el.value") == "epoch"
