"""The 3-stage LM example with a budget small enough for tests (seconds per stage)."""

import json

from runs.services.demo import EXAMPLES_DIR

OVERRIDES = {
    "stages.0.steps": 40,
    "stages.0.schedule.warmup_steps": 5,
    "stages.1.steps": 40,
    "stages.1.schedule.warmup_steps": 5,
    "stages.1.dense_eval": {"interval": 5, "steps": 10},
    "stages.2.steps": 20,
    "stages.2.schedule.warmup_steps": 2,
    "stages.2.dense_eval": {"interval": 5, "steps": 10},
    **{f"stages.{i}.eval_interval": 10 for i in range(3)},
    **{f"stages.{i}.checkpoint_interval": 10 for i in range(3)},
    **{f"eval_sets.{i}.max_batches": 1 for i in range(3)},
}


def reduced_lm_plan() -> dict:
    from runs.services.plans import apply_overrides

    plan = json.loads((EXAMPLES_DIR / "lm_prose_code_sft.json").read_text())
    return apply_overrides(plan, OVERRIDES)
