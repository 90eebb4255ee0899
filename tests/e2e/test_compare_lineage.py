"""The compare page over many runs (grouped by tag as mean and band, stage boundaries, the
config differences only, everything restored from the URL) and the lineage page of a run
family, in a real browser against a real server. No worker: the runs are external (their
points ingested directly) or forks that stay queued."""

from __future__ import annotations

import re
import uuid

import pytest

from runs.services.freeform import freeform_run_create
from runs.services.ingest import IngestPoint, ingest_points
from runs.services.plans import apply_overrides
from runs.services.runs import run_fork, run_submit
from tests import factories as f
from tests.e2e.conftest import ARTIFACTS, login
from tests.runs.reduced_plan import reduced_lm_plan
from tests.servers import Daphne


@pytest.fixture
def stack(transactional_db, tmp_path, team, user, queue):
    """conftest's stack without the worker: a team member, a queue and the web server."""
    user.save()  # the factory sets the password without saving it (the login form needs it)
    queue.allowed_teams.add(team)
    server = Daphne(tmp_path)
    yield {"team": team, "user": user, "queue": queue, "server": server}
    server.stop()


def _run(stack, name: str, tags: list[str], lr: float, offset: float):
    """An external run of the reduced 3-stage plan (stages end at steps 40, 80, 100), its
    stage 0 learning rate ``lr``, with a train/loss point at every step."""
    plan = apply_overrides(reduced_lm_plan(), {"stages.0.optimizer.lr": lr})
    run = run_submit(team=stack["team"], queue=stack["queue"], plan=plan, name=name, tags=tags,
                     user=stack["user"], external=True)  # fmt: skip
    pts = [IngestPoint("train/loss", s, offset + 3.0 / (1 + s) ** 0.5) for s in range(101)]
    ingest_points(run_id=run.pk, points=pts, publish=False)
    return run


def _chart(page, expr: str):
    return page.evaluate(
        f"() => {{ const d = document.querySelector('.compare-chart'); return {expr}; }}"
    )


def _wait_chart(page, cond: str) -> None:
    page.wait_for_function(
        "(cond) => { const d = document.querySelector('.compare-chart');"
        " return !!d && !!d.data && document.getElementById('compare-status').dataset.state === 'ready'"
        " && new Function('d', 'return ' + cond)(d); }",
        arg=cond,
        timeout=30_000,
    )


MEANS = "d.data.filter((t) => t.meta === 'mean').map((t) => t.name)"
BANDS = "d.data.filter((t) => t.meta === 'band').length"
BOUNDARIES = "(d.layout.shapes || []).filter((s) => (s.name || '').startsWith('boundary')).length"


@pytest.mark.e2e
@pytest.mark.slow
def test_compare_groups_by_tag_draws_boundaries_and_diffs_only_what_differs(page, stack):
    a1 = _run(stack, "lr-high-1", ["sweep", "A"], 0.003, 0.0)
    a2 = _run(stack, "lr-high-2", ["sweep", "A"], 0.003, 0.2)
    b = _run(stack, "lr-low", ["sweep", "B"], 0.0005, 0.5)
    base = stack["server"].url
    login(page, stack)
    requests: list[str] = []

    # the runs list the login landed on fetches its sparklines (also /api/series/): let it
    # finish before counting the compare page's requests
    page.wait_for_load_state("networkidle")
    page.on("request", lambda r: requests.append(r.url) if "/api/" in r.url else None)
    page.goto(f"{base}/compare/?runs={a1.pk},{a2.pk},{b.pk}&keys=train/loss")
    _wait_chart(page, "d.data.length === 3")
    # one request for the runs, one for every series of them (not one per run)
    assert sum("/api/series/" in u for u in requests) == 1, requests
    assert sum("/api/ui/compare/" in u for u in requests) == 1, requests
    assert not [u for u in requests if "/api/runs/" in u], requests
    # each run's two stage boundaries (steps 40 and 80)
    assert _chart(page, BOUNDARIES) == 6
    xs = _chart(page, "d.layout.shapes.map((s) => s.x0)")
    assert sorted(set(xs)) == [40, 80]

    page.select_option("#group-by", "tag")
    _wait_chart(page, f"{MEANS}.length === 2")
    assert sorted(_chart(page, MEANS)) == ["A · mean of 2", "B · mean of 1"]
    assert _chart(page, BANDS) == 2
    band = _chart(page, "d.data.find((t) => t.meta === 'band' && t.name.startsWith('A'))")
    lower = _chart(page, "d.data.find((t) => t.meta === 'band-lower' && t.name.startsWith('A'))")
    mean = _chart(page, "d.data.find((t) => t.meta === 'mean' && t.name.startsWith('A'))")
    assert band["fill"] == "tonexty"
    # mean ± 1 std of two lines 0.2 apart: the band is 0.1 above and below the mean
    for lo, m, hi in zip(lower["y"], mean["y"], band["y"], strict=True):
        assert abs(hi - m - 0.1) < 1e-9 and abs(m - lo - 0.1) < 1e-9
    assert "group=tag" in page.url
    page.screenshot(path=str(ARTIFACTS / "compare-grouped.png"), full_page=True)

    page.reload()
    _wait_chart(page, f"{MEANS}.length === 2")
    assert page.input_value("#group-by") == "tag"
    assert _chart(page, BOUNDARIES) == 6

    # the config differences: only stage 0's learning rate differs, and the table fits
    fields = page.eval_on_selector_all(
        "#diff-table tr[data-field]", "rs => rs.map(r => r.dataset.field)"
    )
    assert fields == ["stage 0 · optimizer.lr"]
    sections = page.eval_on_selector_all(
        "#diff-table tr.section", "rs => rs.map(r => r.dataset.section)"
    )
    assert sections == ["stage 0"]
    widths = page.evaluate(
        "() => { const t = document.getElementById('diff-table');"
        " return [t.scrollWidth, t.parentElement.clientWidth]; }"
    )
    assert widths[0] <= widths[1], widths

    # the runs list: a sparkline per run, all from one request
    requests.clear()
    page.goto(f"{base}/")
    for run in (a1, a2, b):
        page.locator(f'#runs-table tr[data-run="{run.pk}"] svg.spark polyline').wait_for()
    assert sum("/api/series/" in u for u in requests) == 1, requests
    assert page.js_errors == []


@pytest.mark.e2e
@pytest.mark.slow
def test_the_config_diff_of_unrelated_runs_fits_the_page(page, stack):
    planned = _run(stack, "planned", [], 0.003, 0.0)
    config = {"lr": 0.01, "model": {"arch": "x" * 400}, "notes": "a long value " * 40}
    free = freeform_run_create(team=stack["team"], queue=stack["queue"], name="free-form",
                               config=config, user=stack["user"])  # fmt: skip
    login(page, stack)
    page.goto(f"{stack['server'].url}/compare/?runs={planned.pk},{free.pk}")
    page.locator("#diff-table tr[data-field]").first.wait_for()
    fields = page.eval_on_selector_all(
        "#diff-table tr[data-field]", "rs => rs.map(r => r.dataset.field)"
    )
    assert "model · arch" in fields and "config · lr" in fields
    widths = page.evaluate(
        "() => { const t = document.getElementById('diff-table');"
        " return [t.scrollWidth, t.parentElement.clientWidth]; }"
    )
    assert widths[0] <= widths[1], widths
    arch = page.locator('#diff-table tr[data-field="model · arch"] td.differs').last
    assert arch.get_attribute("title") == "x" * 400  # the whole value on hover
    assert arch.bounding_box()["height"] < 80  # cut, not a column of text
    assert page.js_errors == []


def _checkpoint(run, step: int, tmp_path, stage_end: bool):
    folder = tmp_path / f"ckpt-{run.pk}-{step}"
    folder.mkdir()
    stage = run.stage_runs.get(stage_index=0 if step <= 40 else 1)
    return f.CheckpointFactory(run=run, stage_run=stage, step=step, path=str(folder),
                               stage_end=stage_end)  # fmt: skip


@pytest.fixture
def family(stack, tmp_path):
    parent = _run(stack, "parent", ["fam"], 0.003, 0.0)
    mid = _checkpoint(parent, 20, tmp_path, stage_end=False)
    end = _checkpoint(parent, 40, tmp_path, stage_end=True)
    fork1 = run_fork(checkpoint=mid, user=stack["user"], name="fork-mid")
    fork2 = run_fork(checkpoint=end, user=stack["user"], name="fork-end")
    return {"parent": parent, "forks": [fork1, fork2], "checkpoints": [mid, end]}


@pytest.mark.e2e
@pytest.mark.slow
def test_lineage_shows_the_family_as_links_and_compares_it(page, stack, family):
    parent, (fork1, fork2) = family["parent"], family["forks"]
    base = stack["server"].url
    login(page, stack)
    page.goto(f"{base}/runs/{fork2.pk}/lineage/")
    tree = page.locator("#lineage-tree")
    kinds = tree.locator("li").evaluate_all(
        "ls => ls.map(l => [l.dataset.kind, l.dataset.run || l.dataset.checkpoint, l.dataset.depth])"
    )
    mid, end = family["checkpoints"]
    assert kinds == [
        ["run", str(parent.pk), "0"],
        ["checkpoint", str(mid.pk), "1"],
        ["run", str(fork1.pk), "2"],
        ["checkpoint", str(end.pk), "1"],
        ["run", str(fork2.pk), "2"],
    ]
    for run in (parent, fork1, fork2):
        link = tree.locator(f'li[data-run="{run.pk}"] a')
        assert link.get_attribute("href") == f"/runs/{run.pk}/"
        assert link.inner_text() == run.name
    assert "current" in tree.locator(f'li[data-run="{fork2.pk}"]').get_attribute("class")
    page.screenshot(path=str(ARTIFACTS / "lineage.png"), full_page=True)

    page.click("#compare-family")
    page.wait_for_url(re.compile(rf"/compare/\?runs={parent.pk},{fork1.pk},{fork2.pk}(&|$)"))
    page.wait_for_function(
        "() => document.getElementById('compare-status').dataset.state === 'ready'"
    )
    checked = page.eval_on_selector_all(
        "#run-picker input:checked", "xs => xs.map(x => Number(x.value))"
    )
    assert sorted(checked) == sorted([parent.pk, fork1.pk, fork2.pk])
    assert page.js_errors == []


# ------------------------------------------------------------------ the page without a browser


def test_lineage_page_hides_other_teams_and_404s_for_them(client, transactional_db, tmp_path):
    team, other = f.TeamFactory(), f.TeamFactory()
    user = f.UserFactory()
    user.save()
    f.MembershipFactory(user=user, team=team)
    queue = f.QueueFactory(name=f"q-{uuid.uuid4().hex[:8]}")
    queue.allowed_teams.add(team, other)
    stack = {"team": team, "queue": queue, "user": user}
    parent = _run(stack, "parent", [], 0.003, 0.0)
    ckpt = _checkpoint(parent, 40, tmp_path, stage_end=True)
    ours = run_fork(checkpoint=ckpt, user=user, name="ours")
    theirs = run_fork(checkpoint=ckpt, user=user, team=other, name="theirs-fork")
    grandchild = run_fork(checkpoint=_checkpoint(theirs, 60, tmp_path, stage_end=False),
                          user=user, team=team, name="under-theirs")  # fmt: skip
    client.force_login(user)
    page = client.get(f"/runs/{ours.pk}/lineage/").content.decode()
    assert f'href="/runs/{parent.pk}/"' in page and f'href="/runs/{ours.pk}/"' in page
    assert "theirs-fork" not in page and "under-theirs" not in page
    assert f"/compare/?runs={parent.pk},{ours.pk}" in page
    # seen from the grandchild: its visible family starts below the other team's run
    page = client.get(f"/runs/{grandchild.pk}/lineage/").content.decode()
    assert "theirs-fork" not in page and "parent" not in page.split('id="lineage-tree"')[1]
    assert client.get(f"/runs/{theirs.pk}/lineage/").status_code == 404
    assert client.get("/runs/2000000000/lineage/").status_code == 404
