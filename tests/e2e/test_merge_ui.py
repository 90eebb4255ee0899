"""The merge action in a real browser: on a family's lineage page pick two forks' stage-end
checkpoints, open the fork page with a merge stage prefilled (init_merge, equal weights),
change a weight, create the run; its lineage then draws an edge from both parents. No
worker: the checkpoints are folders with a model config, and the new run stays queued."""

from __future__ import annotations

import re
import uuid

import pytest

from runs.models import Run
from runs.services.runs import run_fork, run_submit
from tests import factories as f
from tests.e2e.conftest import ARTIFACTS, login
from tests.servers import Daphne

MODEL = {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
         "max_positions": 64}  # fmt: skip


def _stage(name: str) -> dict:
    return {"name": name, "objective": "causal_lm", "data": [{"source": "builtin:prose"}],
            "steps": 3, "batch_size": 4, "seq_len": 32}  # fmt: skip


@pytest.fixture
def stack(transactional_db, tmp_path):
    """A team member, a paused queue and the web server (nothing trains)."""
    team = f.TeamFactory()
    user = f.UserFactory()
    user.save()  # the factory sets the password without saving it
    f.MembershipFactory(user=user, team=team, role="member")
    queue = f.QueueFactory(name=f"e2e-{uuid.uuid4().hex[:8]}", paused=True)
    server = Daphne(tmp_path)
    yield {"team": team, "user": user, "queue": queue, "server": server}
    server.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_merge_two_forks_from_the_lineage_page(page, stack, tmp_path):
    plan = {"name": "merge-ui", "model": MODEL, "stages": [_stage("base"), _stage("tune")]}
    base = run_submit(team=stack["team"], queue=stack["queue"], plan=plan, name="base")
    at3 = f.checkpoint_on_disk(base, 3, 0, tmp_path)
    forks = [run_fork(checkpoint=at3, name=f"fork-{k}") for k in (1, 2)]
    ends = [f.checkpoint_on_disk(fk, 6, 1, tmp_path) for fk in forks]
    login(page, stack)
    page.goto(f"{stack['server'].url}/runs/{forks[0].pk}/lineage/")
    picks = page.locator('input[name="merge-pick"]')
    assert not picks.first.is_visible()  # only once merging
    page.get_by_role("button", name="Merge checkpoints…").click()
    go = page.get_by_role("button", name="Merge the picked checkpoints")
    assert go.is_disabled()
    page.locator(f'input[name="merge-pick"][value="{ends[0].pk}"]').check()
    assert go.is_disabled()
    page.locator(f'input[name="merge-pick"][value="{ends[1].pk}"]').check()
    status = page.locator("#merge-status")
    assert status.inner_text() == (f"Merge #{forks[0].pk} @6 + #{forks[1].pk} @6 (equal weights).")
    page.screenshot(path=str(ARTIFACTS / "lineage-merge-pick.png"), full_page=True)
    go.click()

    page.wait_for_url(re.compile(rf"/runs/{forks[0].pk}/fork/{ends[0].pk}/\?merge="))
    page.locator("#plan-ok").wait_for(state="visible")  # the server accepts the merge stage
    merge_stage = page.get_by_role("group", name="Stage 3", exact=True)
    assert merge_stage.get_by_label("Stage name", exact=True).input_value() == "merge"
    second = merge_stage.get_by_role("group", name="Init merge 2", exact=True)
    assert second.get_by_label("Run", exact=True).input_value() == str(forks[1].pk)
    weight = second.get_by_label("Weight", exact=True)
    assert weight.input_value() == "0.5"
    weight.fill("1.5")
    page.locator("#plan-ok").wait_for(state="visible")
    page.screenshot(path=str(ARTIFACTS / "fork-merge.png"), full_page=True)
    page.get_by_role("button", name="Create fork").click()

    page.wait_for_url(re.compile(rf".*/runs/(?!{forks[0].pk}/)\d+/$"))
    merged = Run.objects.get(pk=int(page.url.rstrip("/").split("/")[-1]))
    assert merged.parent_id == forks[0].pk and merged.fork_checkpoint_id == ends[0].pk
    assert merged.plan["stages"][2]["init_merge"] == [
        {"run": forks[0].pk, "step": 6, "path": None, "weight": 0.5},
        {"run": forks[1].pk, "step": 6, "path": None, "weight": 1.5},
    ]
    parents = list(merged.merge_parents.values_list("checkpoint_id", "weight"))
    assert parents == [(ends[0].pk, 0.5), (ends[1].pk, 1.5)]

    page.goto(f"{stack['server'].url}/runs/{merged.pk}/lineage/")
    tree = page.locator("#lineage-tree")
    kinds = tree.locator("li").evaluate_all(
        "ls => ls.map(l => [l.dataset.kind, l.dataset.run || l.dataset.checkpoint"
        " || l.dataset.merged, l.dataset.depth])"
    )
    assert kinds == [
        ["run", str(base.pk), "0"], ["checkpoint", str(at3.pk), "1"],
        ["run", str(forks[0].pk), "2"], ["checkpoint", str(ends[0].pk), "3"],
        ["run", str(merged.pk), "4"],
        ["run", str(forks[1].pk), "2"], ["checkpoint", str(ends[1].pk), "3"],
        ["merge", str(merged.pk), "4"],
    ]  # fmt: skip
    edge = tree.locator(f'li[data-kind="merge"][data-merged="{merged.pk}"] a')
    assert edge.get_attribute("href") == f"/runs/{merged.pk}/"
    links = tree.locator(f'li[data-run="{merged.pk}"] .merge-of a')
    assert links.evaluate_all("as => as.map(a => a.getAttribute('href'))") == [
        f"/runs/{forks[0].pk}/",
        f"/runs/{forks[1].pk}/",
    ]
    page.screenshot(path=str(ARTIFACTS / "lineage-merged.png"), full_page=True)
    assert page.js_errors == []
