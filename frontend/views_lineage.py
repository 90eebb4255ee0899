"""The lineage page: a run's family (root ancestor and every descendant) as a tree of runs
and the checkpoints they were forked from (``runs.selectors.lineage.run_family``)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse

from runs.selectors.lineage import run_family
from runs.selectors.series import MAX_BULK_RUNS


@login_required
def lineage_page(request, run_id: int):
    family = run_family(user=request.user, run_id=run_id)
    if family is None:
        raise Http404("run not found")
    chosen = family["runs"][:MAX_BULK_RUNS]  # what the compare page reads in one request
    compare_url = f"{reverse('compare')}?runs={','.join(map(str, chosen))}"
    context = {
        "family": family,
        "compare_url": compare_url,
        "compare_cut": len(chosen) < len(family["runs"]),
    }
    return render(request, "frontend/lineage.html", context)
