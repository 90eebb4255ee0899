"""Every shipped example plan runs through ``python -m trainers run`` with
``--max-steps-per-stage`` (the CLI's own entry point, in this process: one torch import for
all of them), every stage trains, and the run ends with its last stage's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainers import cli

EXAMPLES = Path(cli.__file__).parent / "examples"
PLANS = sorted(EXAMPLES.glob("*.json"))


def test_every_example_is_listed():
    stems = {p.stem for p in PLANS}
    kinds = {"arith_pt_cpt_sft_rl", "docstrings_sft_dpo", "growth_identity", "merge_two_forks"}
    assert kinds | {"cpt_subset_epochs", "lm_prose_code_sft"} <= stems


@pytest.mark.parametrize("plan_path", PLANS, ids=lambda p: p.stem)
def test_example_runs_with_capped_stages(plan_path, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", str(plan_path), "--out", str(out), "--max-steps-per-stage", "2"]
    assert cli.main([*args, "--no-progress"]) == 0, capsys.readouterr().err
    plan = json.loads(plan_path.read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = sorted(r["step"] for r in rows if r["key"] == "train/loss")
    assert losses == list(range(1, 2 * len(plan["stages"]) + 1))
    ends = [p for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert f"step-{2 * len(plan['stages']):08d}" in {p.name for p in ends}
