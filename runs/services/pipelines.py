"""Editing and deleting stored pipelines. Runs snapshot their plan when submitted, so neither
changes an existing run (creating by plan name is `plans.pipeline_upsert_from_plan`)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from runs.models import Pipeline
from runs.services.plans import pipeline_name_taken, plan_validate_storable


@transaction.atomic
def pipeline_update(
    *, pipeline: Pipeline, plan: dict[str, Any], description: str | None = None
) -> Pipeline:
    """Replace the pipeline's plan (its name included), keeping its id (a rename stays the
    same pipeline). ``description=None`` keeps the stored one.
    Raises ValidationError keyed by plan field path; on error nothing is changed."""
    data = plan_validate_storable(plan, team=pipeline.team)
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    name = data["name"]
    others = Pipeline.objects.filter(team_id=pipeline.team_id).exclude(pk=pipeline.pk)
    if others.filter(name=name).exists():
        raise pipeline_name_taken(name)
    pipeline.name = name
    pipeline.plan = data
    if description is not None:
        pipeline.description = description
    try:
        with transaction.atomic():  # a concurrent create or rename may take the name first
            pipeline.save()
    except IntegrityError:
        raise pipeline_name_taken(name) from None
    return pipeline


@transaction.atomic
def pipeline_delete(*, pipeline: Pipeline) -> int:
    """Delete the pipeline. Its runs stay, with their plan
    snapshots; their pipeline link becomes null. Returns how many runs were unlinked."""
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    unlinked = pipeline.runs.count()
    pipeline.delete()  # Run.pipeline is SET_NULL
    return unlinked
