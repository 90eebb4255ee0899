"""The pipeline builder and the fork page in a real browser: controls found by role and
label, as a person (or a screen reader) finds them."""

from __future__ import annotations

import copy
import json
import re
import uuid

import pytest

from tests.e2e.conftest import ARTIFACTS, login

ALL_SETS = ["prose", "code", "docstrings"]


@pytest.fixture
def stack(transactional_db, tmp_path):
    """A team member and the web server; no worker (nothing here trains). Replaces the
    conftest's ``stack`` for this module, so its ``page`` and ``login`` work as there."""
    from tests import factories as f
    from tests.servers import Daphne

    team = f.TeamFactory()
    user = f.UserFactory()
    user.save()  # the factory sets the password without saving it
    f.MembershipFactory(user=user, team=team, role="member")
    queue = f.QueueFactory(name=f"e2e-{uuid.uuid4().hex[:8]}", paused=True)  # nothing starts
    server = Daphne(tmp_path)
    yield {"team": team, "user": user, "queue": queue, "server": server}
    server.stop()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _stage(page, n: int):
    return page.get_by_role("group", name=f"Stage {n}", exact=True)


def _row(scope, name: str):
    return scope.get_by_role("group", name=name, exact=True)


def _field(scope, label: str):
    return scope.get_by_label(label, exact=True)


def _valid(page) -> None:
    page.locator("#plan-ok").wait_for(state="visible")


def _check_eval_sets(stage, names=ALL_SETS) -> None:
    group = stage.get_by_role("group", name="Eval sets", exact=True)
    for name in names:
        group.get_by_label(name, exact=True).check()


EXPECTED = {
    "name": "builder-e2e",
    "seed": 0,
    "model": {"arch": "gpt2", "size": "tiny", "vocab_size": 512, "max_positions": 128},
    "eval_sets": [{"name": n, "source": f"builtin:{n}"} for n in ALL_SETS],
    "stages": [
        {
            "name": "prose-pt",
            "objective": "causal_lm",
            "data": [
                {"source": "builtin:prose", "name": "prose", "weight": 0.9},
                {"source": "builtin:docstrings", "name": "docstrings", "weight": 0.1},
            ],
            "steps": 40,
            "optimizer": {"lr": 0.003},
            "schedule": {
                "kind": "wsd",
                "warmup_steps": 5,
                "decay_shape": "1-sqrt",
                "min_lr": 0.0003,
            },
            "eval_sets": ALL_SETS,
            "eval_interval": 10,
            "checkpoint_interval": 20,
            "task": "prose",
        },
        {
            "name": "code-cpt",
            "objective": "causal_lm",
            "data": [{"source": "builtin:code", "name": "code"}],
            "steps": 40,
            "replay": [{"source": "prose", "ratio": 0.3}, {"source": "docstrings", "ratio": 0.05}],
            "optimizer": {"lr": 0.003},
            "schedule": {
                "kind": "cosine",
                "warmup_steps": 5,
                "warmup_from": "previous",
                "min_lr": 0.0003,
            },
            "eval_sets": ALL_SETS,
            "dense_eval": {"interval": 5, "steps": 10},
            "task": "code",
        },
        {
            "name": "docstring-sft",
            "objective": "sft",
            "data": [{"source": "builtin:docstrings", "name": "docstrings"}],
            "steps": 20,
            "optimizer": {"lr": 0.001},
            "schedule": {
                "kind": "cosine",
                "warmup_steps": 2,
                "warmup_from": "previous",
                "min_lr": 0.0001,
            },
            "eval_sets": ALL_SETS,
            "dense_eval": {"interval": 5, "steps": 10},
            "task": "docstrings",
        },
    ],
}


def _plan_level(page) -> None:
    settings = page.get_by_role("group", name="Pipeline settings")
    _field(settings, "Pipeline name").fill("builder-e2e")
    model = settings.get_by_role("group", name="Model", exact=True)
    _field(model, "Vocabulary size").fill("512")
    _field(model, "Max positions").fill("128")
    for i, name in enumerate(ALL_SETS, start=1):
        settings.get_by_role("button", name="Add eval set").click()
        row = _row(settings, f"Eval set {i}")
        _field(row, "Eval set name").fill(name)
        _field(row, "Source").select_option(f"builtin:{name}")


def _optimizer_and_schedule(stage, lr: str, kind: str, warmup: str, min_lr: str, **extra) -> None:
    _field(stage, "Learning rate").fill(lr)
    _field(stage, "Schedule").select_option(kind)
    _field(stage, "Warmup steps").fill(warmup)
    _field(stage, "Min LR").fill(min_lr)
    if "warm_from" in extra:
        _field(stage, "Warm up from").select_option(extra["warm_from"])
    if "decay_shape" in extra:
        _field(stage, "Decay shape").select_option(extra["decay_shape"])


def _data(st, n: int, source: str, name: str, weight: str | None = None) -> None:
    if n > 1:
        st.get_by_role("button", name="Add data source").click()
    row = _row(st, f"Data source {n}")
    _field(row, "Source").select_option(source)
    _field(row, "Name (for replay)").fill(name)
    if weight is not None:
        _field(row, "Weight").fill(weight)


def _evaluation(st, task: str, *, dense: bool = False, **intervals: str) -> None:
    _check_eval_sets(st)
    if dense:  # every 5 steps during the first 10 after the boundary
        st.get_by_label("Dense evaluation after the boundary").click()  # redraws its fields
        _field(st, "Dense eval interval").fill("5")
        _field(st, "Dense eval steps").fill("10")
    for label, value in intervals.items():
        _field(st, f"{label.capitalize()} interval (steps)").fill(value)
    _field(st, "Own task (eval set)").select_option(task)


def _stage_1(page) -> None:
    st = _stage(page, 1)
    _field(st, "Stage name").fill("prose-pt")
    _data(st, 1, "builtin:prose", "prose", "0.9")
    _data(st, 2, "builtin:docstrings", "docstrings", "0.1")
    _field(st, "Steps").fill("40")
    _optimizer_and_schedule(st, "0.003", "wsd", "5", "0.0003", decay_shape="1-sqrt")
    _evaluation(st, "prose", eval="10", checkpoint="20")


def _stage_2(page) -> None:
    page.get_by_role("button", name="Add stage").click()
    st = _stage(page, 2)
    _field(st, "Stage name").fill("code-cpt")
    _data(st, 1, "builtin:code", "code")
    assert _field(st, "Steps").input_value() == "40"  # a new stage starts with the last budget
    for i, (source, ratio) in enumerate([("prose", "0.3"), ("docstrings", "0.05")], start=1):
        st.get_by_role("button", name="Add replay source").click()
        row = _row(st, f"Replay source {i}")
        _field(row, "Replay of").select_option(source)
        _field(row, "Ratio").fill(ratio)
    # wsd first: its own parameters go when the kind changes to cosine
    _field(st, "Schedule").select_option("wsd")
    _field(st, "Decay fraction").fill("0.3")
    _optimizer_and_schedule(st, "0.003", "cosine", "5", "0.0003", warm_from="previous")
    assert _field(st, "Decay fraction").count() == 0
    _evaluation(st, "code", dense=True)


def _stage_3(page) -> None:
    page.get_by_role("button", name="Add stage").click()
    st = _stage(page, 3)
    _field(st, "Stage name").fill("docstring-sft")
    _field(st, "Objective").select_option("sft")
    _data(st, 1, "builtin:docstrings", "docstrings")
    _field(st, "Steps").fill("20")
    _optimizer_and_schedule(st, "0.001", "cosine", "2", "0.0001", warm_from="previous")
    _evaluation(st, "docstrings", dense=True)


def _stage_names(page) -> list[str]:
    return page.evaluate("() => window.stagewiseBuilder.plan().stages.map((s) => s.name)")


def _reorder(page) -> None:
    """Move with the buttons, duplicate, drag a card by its handle, delete."""
    order = ["prose-pt", "code-cpt", "docstring-sft"]
    page.get_by_role("button", name="Move stage 3 up").click()
    assert _stage_names(page) == [order[0], order[2], order[1]]
    # the focus stays on the moved stage's button: the keyboard can go on moving it
    assert page.evaluate("() => document.activeElement.id") == "stage-1-up"
    page.keyboard.press("Enter")
    assert _stage_names(page) == [order[2], order[0], order[1]]
    page.get_by_role("button", name="Move stage 1 down").click()
    page.get_by_role("button", name="Move stage 2 down").click()
    assert _stage_names(page) == order
    page.get_by_role("button", name="Duplicate stage 3").click()
    assert _stage_names(page) == [*order, "docstring-sft-copy"]
    # Playwright's emulated HTML5 drag does not start if the page scrolls under the mouse:
    # a window as tall as the page for the drag
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1440, "height": height + 100})
    _stage(page, 4).locator(".drag-handle").drag_to(_stage(page, 1))
    page.set_viewport_size({"width": 1440, "height": 1000})
    assert _stage_names(page) == ["docstring-sft-copy", *order]
    page.get_by_role("button", name="Delete stage 1").click()
    assert _stage_names(page) == order


def _errors_next_to_fields(page) -> None:
    ratio = _field(_row(_stage(page, 2), "Replay source 1"), "Ratio")
    ratio.fill("1.5")
    err = page.locator('#plan-errors li[data-path="stages.1.replay.0.ratio"]')
    err.wait_for()
    row = _row(_stage(page, 2), "Replay source 1")
    row.get_by_role("alert").filter(has_text="less than or equal to 1").wait_for()
    assert ratio.get_attribute("aria-invalid") == "true"
    _field(_stage(page, 1), "Steps").fill("0")  # a second error at once, in another stage
    page.locator('#plan-errors li[data-path="stages.0.steps"]').wait_for()
    assert err.count() == 1
    _shot(page, "builder-errors")
    ratio.fill("0.3")
    _field(_stage(page, 1), "Steps").fill("40")
    _valid(page)


# The form's controls that have no accessible name (a label, aria-label or aria-labelledby).
UNLABELLED = """() => [...document.querySelectorAll(
    '#panel-form input, #panel-form select, #panel-form textarea, #panel-form button')]
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.id || el.outerHTML.slice(0, 80))"""


def _stored_plan(team):
    from runs.models import Pipeline

    return Pipeline.objects.get(team=team, name="builder-e2e").plan


@pytest.mark.e2e
@pytest.mark.slow
def test_build_a_three_stage_pipeline_with_the_form_only(page, stack):
    base = stack["server"].url
    login(page, stack)
    page.goto(base + "/pipelines/new/")
    _valid(page)  # the starting plan is valid
    _plan_level(page)
    _stage_1(page)
    _stage_2(page)
    _stage_3(page)
    _valid(page)
    _shot(page, "builder-form")
    assert page.evaluate(UNLABELLED) == []
    _reorder(page)
    _errors_next_to_fields(page)
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#editor-status", has_text="Saved pipeline “builder-e2e”").wait_for()
    assert _stored_plan(stack["team"]) == EXPECTED
    assert page.evaluate("() => document.getElementById('chart-lr-preview').data[0].x.length") > 50

    # the JSON view shows the same plan; an edit there shows in the form ...
    page.get_by_role("tab", name="JSON").click()
    shown = json.loads(page.evaluate("() => window.stagewiseBuilder.json().text()"))
    assert shown == EXPECTED
    edited = copy.deepcopy(EXPECTED)
    edited["stages"][1]["steps"] = 50
    edited["stages"][2]["name"] = "sft"
    page.fill("#plan-json", json.dumps(edited, indent=2))
    _valid(page)
    page.get_by_role("tab", name="Form").click()
    assert _field(_stage(page, 2), "Steps").input_value() == "50"
    assert _field(_stage(page, 3), "Stage name").input_value() == "sft"
    # ... and back: a form edit shows in the JSON view
    _field(_stage(page, 3), "Learning rate").fill("0.0005")
    page.get_by_role("tab", name="JSON").click()
    shown = json.loads(page.evaluate("() => window.stagewiseBuilder.json().text()"))
    assert shown["stages"][2]["optimizer"] == {"lr": 0.0005}
    # a schema error in the JSON view is marked in the editor and next to the form's field
    edited["stages"][2]["optimizer"]["lr"] = -1
    page.fill("#plan-json", json.dumps(edited, indent=2))
    page.locator('#plan-errors li[data-path="stages.2.optimizer.lr"]').wait_for()
    page.locator("#panel-json .cm-lintRange-error").first.wait_for()
    _shot(page, "builder-json")
    page.get_by_role("tab", name="Form").click()
    lr = _field(_stage(page, 3), "Learning rate")
    assert lr.input_value() == "-1" and lr.get_attribute("aria-invalid") == "true"
    lr.fill("0.0005")
    _valid(page)
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#editor-status", has_text="Saved pipeline").wait_for()
    edited["stages"][2]["optimizer"]["lr"] = 0.0005
    assert _stored_plan(stack["team"]) == edited
    assert not page.js_errors, page.js_errors


@pytest.mark.e2e
@pytest.mark.slow
def test_sources_and_what_if_follow_the_team_and_the_plans_model(page, stack):
    from django.utils import timezone

    from tests import factories as f
    from tests.runs.reduced_plan import reduced_lm_plan

    team, queue = stack["team"], stack["queue"]
    tiny = reduced_lm_plan()
    small = {**tiny, "model": {**tiny["model"], "size": "small"}}
    done = {"state": "succeeded", "finished_at": timezone.now(), "queue": queue}
    a = team.runs.create(name="tiny-run", plan=tiny, **done)
    b = team.runs.create(name="small-run", plan=small, **done)
    notes = f.DatasetFactory(team=team, name="notes")
    for v in (1, 2):
        f.DatasetVersionFactory(dataset=notes, version=v)
    f.DatasetFactory(name="theirs")  # another team's
    login(page, stack)
    page.goto(stack["server"].url + "/pipelines/new/?example=lm_prose_code_sft")
    _valid(page)
    options = page.get_by_label("run to fit the law on").locator("option")
    assert options.all_inner_texts() == [f"#{a.pk} tiny-run (succeeded)"]
    # a stage's sources: the builtin sets and the team's registered dataset versions
    source = _field(_row(_stage(page, 1), "Data source 1"), "Source")
    offered = source.locator("option").evaluate_all("(os) => os.map((o) => o.value)")
    assert {"builtin:code", "dataset:notes", "dataset:notes@1", "dataset:notes@2"} <= set(offered)
    assert not any("theirs" in o for o in offered)
    source.select_option("dataset:notes@1")
    assert page.evaluate("() => window.stagewiseBuilder.plan().stages[0].data[0].source") == (
        "dataset:notes@1"
    )
    model = page.get_by_role("group", name="Model", exact=True)
    _field(model, "Size").select_option("small")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('#whatif-run option')].map(o => o.value).join() === '{b.pk}'"
    )
    _field(model, "Size").select_option("base")
    page.locator("#whatif-empty", has_text="this plan's model").wait_for()
    assert page.get_by_role("button", name="Predict").is_disabled()
    assert not page.js_errors, page.js_errors


@pytest.mark.e2e
@pytest.mark.slow
def test_fork_page_edits_the_later_stages_and_creates_the_fork(page, stack, tmp_path):
    from runs.models import Run
    from runs.services.runs import run_submit
    from tests import factories as f
    from tests.runs.reduced_plan import reduced_lm_plan

    team, queue = stack["team"], stack["queue"]
    parent = run_submit(
        team=team, queue=queue, plan=reduced_lm_plan(), name="parent", external=True
    )
    ckpt_dir = tmp_path / "ckpt-40"
    ckpt_dir.mkdir()
    (ckpt_dir / "model.pt").write_bytes(b"weights")
    stage0 = parent.stage_runs.get(stage_index=0)
    ckpt = f.CheckpointFactory(
        run=parent, stage_run=stage0, step=40, path=str(ckpt_dir), stage_end=True
    )
    login(page, stack)
    page.goto(f"{stack['server'].url}/runs/{parent.pk}/fork/{ckpt.pk}/")
    _valid(page)
    # stage 1 is inherited: shown, not editable; stages 2 and 3 are the parent's, editable
    assert _field(_stage(page, 1), "Stage name").is_disabled()
    assert _stage(page, 1).get_by_role("button", name="Delete stage 1").count() == 0
    assert _field(_stage(page, 2), "Stage name").input_value() == "code-cpt"
    assert page.locator("#fork-diff li").count() == 0
    _field(_stage(page, 2), "Learning rate").fill("0.002")
    _field(_stage(page, 3), "Steps").fill("30")
    diff = page.locator("#fork-diff")
    diff.locator('li[data-path="stages.1.optimizer.lr"]', has_text="0.003").wait_for()
    diff.locator('li[data-path="stages.2.steps"]', has_text="30").wait_for()
    assert diff.locator("li").count() == 2
    _valid(page)
    _shot(page, "fork-builder")
    page.get_by_role("button", name="Create fork").click()
    page.wait_for_url(re.compile(rf".*/runs/(?!{parent.pk}/)\d+/$"))
    fork = Run.objects.get(pk=int(page.url.rstrip("/").split("/")[-1]))
    assert fork.parent_id == parent.pk and fork.fork_checkpoint_id == ckpt.pk
    assert fork.plan["stages"][0] == parent.plan["stages"][0]
    assert fork.plan["stages"][1]["optimizer"]["lr"] == 0.002
    assert fork.plan["stages"][2]["steps"] == 30
    assert fork.plan["stages"][1]["replay"] == parent.plan["stages"][1]["replay"]
    assert not page.js_errors, page.js_errors


# ---------------------------------------------------------------- the pages' data (no browser)


@pytest.mark.django_db
def test_builder_pages_carry_the_plan_schema_and_the_teams_dataset_versions(user, team, queue):
    from django.test import Client

    from tests import factories as f
    from tests.runs.reduced_plan import reduced_lm_plan
    from trainers.plan import plan_schema

    ds = f.DatasetFactory(team=team, name="notes")
    for v in (1, 2):
        f.DatasetVersionFactory(dataset=ds, version=v, format="text", storage_path="/x")
    f.DatasetFactory(team=f.TeamFactory(), name="theirs")
    c = Client()
    c.force_login(user)
    data = c.get("/pipelines/new/").context["page_data"]
    assert data["schema"] == plan_schema()
    assert data["datasets"] == [{"name": "notes", "team": team.slug, "versions": [2, 1]}]
    assert "builtin:docstrings" in data["builtin_sources"]
    run = team.runs.create(name="p", plan=reduced_lm_plan(), queue=queue)
    ckpt = f.CheckpointFactory(stage_run=f.StageRunFactory(run=run, stage_index=0), step=40)
    resp = c.get(f"/runs/{run.pk}/fork/{ckpt.pk}/")
    assert resp.status_code == 200
    page = resp.context["page_data"]
    assert page["checkpoint"] == {"id": ckpt.pk, "step": 40, "stage_end": False, "stage_index": 0}
    assert page["plan"] == run.plan and page["schema"] == plan_schema()
    other = team.runs.create(name="o", plan=reduced_lm_plan(), queue=queue)
    assert c.get(f"/runs/{other.pk}/fork/{ckpt.pk}/").status_code == 404  # not its checkpoint
    outsider = f.UserFactory()
    f.MembershipFactory(user=outsider, team=f.TeamFactory())
    c.force_login(outsider)
    assert c.get(f"/runs/{run.pk}/fork/{ckpt.pk}/").status_code == 404
