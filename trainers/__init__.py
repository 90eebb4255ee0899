"""Stagewise training library: plans, schedules, data, objectives, engine, CLI.

Pure Python + torch/transformers; never imports Django or the `runs` app. Heavy modules
(torch) load only when `trainers.engine` and friends are imported.
"""

from trainers.plan import Plan, PlanError, plan_schema, validate_plan

__all__ = ["Plan", "PlanError", "plan_schema", "validate_plan"]
