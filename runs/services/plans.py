"""Translate between stored pipelines and trainers plans (the JSON the engine executes)."""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from runs.models import Pipeline, StageDefinition, Team
from trainers.plan import Plan, PlanError, validate_plan


def stage_to_plan(stage: StageDefinition) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": stage.name,
        "objective": stage.objective,
        "data": stage.data_sources,
        "batch_size": stage.batch_size,
        "seq_len": stage.seq_len,
        "optimizer": stage.optimizer or {},
        "schedule": {**(stage.lr_schedule or {}), "warmup_steps": stage.warmup_steps},
        "eval_sets": stage.eval_sets,
        "eval_interval": stage.eval_interval,
        "checkpoint_interval": stage.checkpoint_interval,
        stage.budget_unit: stage.budget,
    }
    if stage.replay_sources:
        share = stage.replay_ratio / len(stage.replay_sources)
        spec["replay"] = [{"source": s, "ratio": share} for s in stage.replay_sources]
    if stage.task:
        spec["task"] = stage.task
    return {**spec, **(stage.extra or {})}


def pipeline_to_plan(pipeline: Pipeline) -> dict[str, Any]:
    return {
        **pipeline.extra,
        "name": pipeline.name,
        "seed": pipeline.seed,
        "model": pipeline.model_spec,
        "eval_sets": pipeline.eval_sets,
        "stages": [stage_to_plan(s) for s in pipeline.stages.order_by("order")],
    }


_STAGE_COLUMNS = {"name", "objective", "data", "replay", "steps", "tokens", "batch_size",
                  "seq_len", "optimizer", "schedule", "eval_sets", "eval_interval",
                  "checkpoint_interval", "task"}  # fmt: skip


def stage_fields_from_plan(order: int, spec: dict[str, Any]) -> dict[str, Any]:
    schedule = dict(spec.get("schedule") or {})
    warmup = schedule.pop("warmup_steps", 0)
    replay = spec.get("replay") or []
    unit = "tokens" if spec.get("tokens") else "steps"
    return {
        "order": order,
        "name": spec["name"],
        "objective": spec["objective"],
        "data_sources": spec.get("data") or [],
        "replay_sources": [r["source"] for r in replay],
        "replay_ratio": sum(r["ratio"] for r in replay),
        "budget_unit": unit,
        "budget": spec.get(unit) or 0,
        "batch_size": spec.get("batch_size", 16),
        "seq_len": spec.get("seq_len", 64),
        "optimizer": spec.get("optimizer") or {},
        "lr_schedule": schedule,
        "warmup_steps": warmup,
        "eval_sets": spec.get("eval_sets") or [],
        "eval_interval": spec.get("eval_interval", 50),
        "checkpoint_interval": spec.get("checkpoint_interval") or 100,
        "task": spec.get("task") or "",
        "extra": {k: v for k, v in spec.items() if k not in _STAGE_COLUMNS},
    }


_PLAN_COLUMNS = {"name", "seed", "model", "eval_sets", "stages"}


def pipeline_fields_from_plan(data: dict[str, Any]) -> dict[str, Any]:
    """Pipeline columns from a validated plan; top-level fields without a column (log
    interval, checkpoints kept, torch threads, ...) go to ``extra`` so that nothing is lost."""
    return {
        "model_spec": data.get("model", {}),
        "eval_sets": data.get("eval_sets", []),
        "seed": data.get("seed", 0),
        "extra": {k: v for k, v in data.items() if k not in _PLAN_COLUMNS},
    }


def pipeline_name_taken(name: str) -> ValidationError:
    return ValidationError({"name": [f"your team already has a pipeline named {name!r}"]})


@transaction.atomic
def pipeline_upsert_from_plan(
    *, team: Team, plan: dict[str, Any], user=None, replace: bool = True
) -> Pipeline:
    """Create the team's pipeline named like the plan; an existing one of that name is
    replaced (seeding examples, ``"replace": true`` in the API) or, with ``replace=False``,
    refused with a field error on ``name``."""
    data = plan_validate_storable(plan)
    if not replace and Pipeline.objects.filter(team=team, name=data["name"]).exists():
        raise pipeline_name_taken(data["name"])
    pipeline, _ = Pipeline.objects.update_or_create(
        team=team,
        name=data["name"],
        defaults={**pipeline_fields_from_plan(data), "created_by": user},
    )
    pipeline_stages_replace(pipeline=pipeline, stages=data["stages"])
    return pipeline


def pipeline_stages_replace(*, pipeline: Pipeline, stages: list[dict[str, Any]]) -> None:
    """Replace the pipeline's stage rows with the (validated) plan stages, in order."""
    pipeline.stages.all().delete()
    StageDefinition.objects.bulk_create(
        StageDefinition(pipeline=pipeline, **stage_fields_from_plan(i, s))
        for i, s in enumerate(stages)
    )


# Column limits of Pipeline/StageDefinition that a valid plan can still exceed; checked up
# front so that they come back as field errors instead of a database error (a 500).
_NAME_MAX = 100
_INT_MAX = 2**31 - 1  # PositiveIntegerField is a Postgres integer
_BIGINT_MAX = 2**63 - 1


def plan_validate_storable(plan: dict[str, Any]) -> dict[str, Any]:
    """Validate a plan for storing as a pipeline: trainers' rules plus what the rows need
    (stage names unique, warmup within a step budget, names and numbers within their
    columns). Returns the plan as JSON data (only the fields that were given)."""
    data = plan_validate(plan).model_dump(mode="json", exclude_unset=True)
    errors: dict[str, list[str]] = {}

    def err(path: str, msg: str) -> None:
        errors.setdefault(path, []).append(msg)

    if len(data["name"]) > _NAME_MAX:
        err("name", f"at most {_NAME_MAX} characters")
    if not 0 <= data.get("seed", 0) <= _BIGINT_MAX:
        err("seed", f"must be between 0 and {_BIGINT_MAX}")
    if len(data["stages"]) > 2**15 - 1:
        err("stages", "too many stages")
    seen: set[str] = set()
    for i, st in enumerate(data["stages"]):
        p = f"stages.{i}"
        if len(st["name"]) > _NAME_MAX:
            err(f"{p}.name", f"at most {_NAME_MAX} characters")
        if st["name"] in seen:
            err(f"{p}.name", f"duplicate stage name {st['name']!r}")
        seen.add(st["name"])
        if len(st.get("task") or "") > _NAME_MAX:
            err(f"{p}.task", f"at most {_NAME_MAX} characters")
        warmup = (st.get("schedule") or {}).get("warmup_steps", 0)
        for key, value, top in (
            ("steps", st.get("steps"), _BIGINT_MAX),
            ("tokens", st.get("tokens"), _BIGINT_MAX),
            ("batch_size", st.get("batch_size"), _INT_MAX),
            ("seq_len", st.get("seq_len"), _INT_MAX),
            ("eval_interval", st.get("eval_interval"), _INT_MAX),
            ("checkpoint_interval", st.get("checkpoint_interval"), _INT_MAX),
            ("schedule.warmup_steps", warmup, _INT_MAX),
        ):
            if value is not None and value > top:
                err(f"{p}.{key}", f"must be at most {top}")
        if st.get("steps") is not None and warmup > st["steps"]:
            err(f"{p}.schedule.warmup_steps", f"exceeds the stage's steps ({st['steps']})")
    if errors:
        raise ValidationError(errors)
    return data


def plan_validate(plan: dict[str, Any], *, check_files: bool = True) -> Plan:
    """trainers' validation, re-raised as a Django ValidationError keyed by field path.
    ``check_files=False`` for a plan that runs elsewhere (an external run): its ``file:``
    sources and model directory are on the client's machine, not this one."""
    try:
        return validate_plan(plan, check_files=check_files)
    except PlanError as exc:
        errors: dict[str, list[str]] = {}
        for e in exc.errors:
            errors.setdefault(e["path"], []).append(e["message"])
        raise ValidationError(errors) from None


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
