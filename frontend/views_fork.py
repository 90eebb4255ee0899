"""The pipeline builder's page data, and the fork page: the builder opened on a run's stages
after one of its checkpoints (the earlier ones shown as inherited), which POSTs the fork to
``/api/runs/<id>/fork/`` from the browser."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

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
        **builder_data(request.user),
    }
    return render(request, "frontend/fork.html", {"run": run, "ckpt": ckpt, "page_data": data})
