"""Seed the example pipelines shipped in trainers/examples and submit a demo run."""

from __future__ import annotations

import json
from pathlib import Path

from runs.models import Pipeline, Queue, Run, Team
from runs.services.plans import pipeline_upsert_from_plan
from runs.services.runs import run_submit

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "trainers" / "examples"
DEMO_PIPELINE = "lm_prose_code_sft.json"


def example_plans() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.json"))]


def seed_examples(*, team: Team) -> list[Pipeline]:
    """Create the example pipelines the team does not have yet (never overwrites edits)."""
    seeded = []
    for plan in example_plans():
        if not Pipeline.objects.filter(team=team, name=plan["name"]).exists():
            seeded.append(pipeline_upsert_from_plan(team=team, plan=plan))
    return seeded


def submit_demo_run(*, team: Team, queue: Queue) -> Run:
    plan = json.loads((EXAMPLES_DIR / DEMO_PIPELINE).read_text())
    pipeline = Pipeline.objects.get(team=team, name=plan["name"])
    return run_submit(team=team, queue=queue, pipeline=pipeline, name="demo", tags=["demo"])
