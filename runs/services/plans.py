"""Plans as the server validates and stores them. A pipeline keeps its plan as one document
(``Pipeline.plan``); a run snapshots the validated plan with every default filled in."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from runs.models import Pipeline, Team
from runs.services.data_access import PlanReads, plan_pin_datasets, plan_reads
from trainers.plan import Plan, PlanError, PlanLimits, validate_plan


def plan_limits() -> PlanLimits:
    """The server's plan limits (settings STAGEWISE_PLAN_LIMITS, see README)."""
    from django.conf import settings

    return PlanLimits(**settings.STAGEWISE_PLAN_LIMITS)


def pipeline_name_taken(name: str) -> ValidationError:
    return ValidationError({"name": [f"your team already has a pipeline named {name!r}"]})


@transaction.atomic
def pipeline_upsert_from_plan(
    *, team: Team, plan: dict[str, Any], user=None, replace: bool = True
) -> Pipeline:
    """Create the team's pipeline named like the plan; an existing one of that name is
    replaced (seeding examples, ``"replace": true`` in the API) or, with ``replace=False``,
    refused with a field error on ``name``."""
    data = plan_validate_storable(plan, team=team)
    if not replace and Pipeline.objects.filter(team=team, name=data["name"]).exists():
        raise pipeline_name_taken(data["name"])
    pipeline, _ = Pipeline.objects.update_or_create(
        team=team, name=data["name"], defaults={"plan": data, "created_by": user}
    )
    return pipeline


def plan_validate_storable(plan: dict[str, Any], *, team: Team | None = None) -> dict[str, Any]:
    """Validate a plan for storing as one of ``team``'s pipelines and return it as the JSON
    document to keep: the fields the user gave, normalised by the schema (``1e3`` ->
    ``1000``), nothing added or dropped (``dataset:<name>`` stays unpinned: each run takes
    the latest version). Reading it back and validating gives the same plan."""
    return plan_validate(plan, team=team).model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True)
class CheckedPlan:
    plan: Plan  # validated, references as written
    reads: PlanReads  # what it reads, resolved for its team

    def snapshot(self) -> dict[str, Any]:
        """What a run stores: every default filled in, ``dataset:`` references pinned."""
        return plan_pin_datasets(self.plan.model_dump(mode="json"), self.reads)


def plan_check(plan: dict[str, Any], *, team: Team | None, external: bool = False) -> CheckedPlan:
    """trainers' validation (syntax and rules; it reads no file), then what ``team`` may read
    (runs/services/data_access.py), re-raised as a Django ValidationError keyed by field
    path. ``team=None`` (no team known) allows builtin sources only. ``external`` for a plan
    that runs elsewhere: its ``file:`` sources and model directory are on the client's
    machine, neither checked nor read here."""
    try:
        validated = validate_plan(plan, check_files=False, limits=plan_limits())
    except PlanError as exc:
        errors: dict[str, list[str]] = {}
        for e in exc.errors:
            errors.setdefault(e["path"], []).append(e["message"])
        raise ValidationError(errors) from None
    return CheckedPlan(validated, plan_reads(validated, team=team, external=external))


def plan_validate(
    plan: dict[str, Any], *, team: Team | None = None, external: bool = False
) -> Plan:
    """``plan_check`` for callers that need only the validated plan (previews, what-if)."""
    return plan_check(plan, team=team, external=external).plan


def apply_overrides(plan: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides are {"dotted.path": value}, e.g. {"stages.1.steps": 50, "seed": 3}."""
    out = copy.deepcopy(plan)
    for path, value in (overrides or {}).items():
        node: Any = out
        parts = str(path).split(".")
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        except (ValueError, IndexError, TypeError, AttributeError):
            raise ValidationError({f"overrides.{path}": ["no such field in the plan"]}) from None
    return out
