"""The pipeline builder's page data, and the fork page: the builder opened on a run's stages
after one of its checkpoints (the earlier ones shown as inherited), which POSTs the fork to
``/api/runs/<id>/fork/`` from the browser. With ``?merge=<checkpoint id>,...`` (the lineage
page's merge action) the fork's one new stage starts from the average of those checkpoints
(``init_merge``, equal weights)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from runs.models import Checkpoint
from runs.selectors.datasets import dataset_list
from runs.selectors.queues import queues_for_teams
from runs.selectors.runs import run_get
from runs.selectors.teams import team_ids_for
from trainers.plan import BUILTIN_SOURCES, plan_schema


def builder_data(user) -> dict:
    """What the builder's form needs besides the plan: the plan's JSON schema (the form is
    generated from it) and the sources a stage may pick (builtin ones and the team's
    registered dataset versions, ``dataset:<name>`` being the newest)."""
    datasets = [
        {"name": d.name, "team": d.team.slug, "versions": [v.version for v in d.versions.all()]}
        for d in dataset_list(user=user)
    ]
    return {"schema": plan_schema(), "builtin_sources": list(BUILTIN_SOURCES), "datasets": datasets}


MAX_MERGE = 16  # trainers.plan: init_merge takes at most 16 checkpoints


def merge_picks(user, text: str) -> list[dict]:
    """The checkpoints named by ``?merge=12,15`` that ``user`` may see, in that order, as
    init_merge entries with equal weights (unknown ids are left out)."""
    ids = [int(x) for x in (text or "").split(",") if x.strip().isdigit()][:MAX_MERGE]
    ids = [x for x in dict.fromkeys(ids) if x < 2**63]
    found = Checkpoint.objects.filter(pk__in=ids, run__team_id__in=team_ids_for(user))
    by_id = {c.pk: c for c in found.select_related("run")}
    picked = [by_id[x] for x in ids if x in by_id]
    weight = round(1 / len(picked), 6) if picked else 1.0
    return [{"run": c.run_id, "step": c.step, "weight": weight, "name": c.run.name}
            for c in picked]  # fmt: skip


@login_required
def fork_page(request, run_id: int, checkpoint_id: int):
    run = run_get(user=request.user, run_id=run_id)
    ckpt = run and run.checkpoints.select_related("stage_run").filter(pk=checkpoint_id).first()
    if ckpt is None or not isinstance(run.plan.get("stages"), list):
        raise Http404("no such checkpoint of this run")
    checkpoint = {"id": ckpt.pk, "step": ckpt.step, "stage_end": ckpt.stage_end,
                  "stage_index": ckpt.stage_run.stage_index}  # fmt: skip
    data = {
        "run": {"id": run.pk, "name": run.name, "queue": run.queue.name if run.queue else None},
        "checkpoint": checkpoint,
        "plan": run.plan,
        "team": run.team.slug,
        "queues": [q.name for q in queues_for_teams(team_ids_for(request.user))],
        "merge": merge_picks(request.user, request.GET.get("merge", "")),
        **builder_data(request.user),
    }
    context = {"run": run, "ckpt": ckpt, "page_data": data, "merge": data["merge"]}
    return render(request, "frontend/fork.html", context)
