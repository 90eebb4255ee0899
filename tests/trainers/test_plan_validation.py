import json

import pytest

from tests.trainers.helpers import ROOT, cli, digits_plan, lm_plan
from trainers.plan import PlanError, plan_schema, validate_plan


def _bad(mutate) -> dict:
    plan = lm_plan()
    mutate(plan)
    return plan


def _set(path: str, value):
    def mutate(plan):
        obj = plan
        keys = path.split(".")
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        last = keys[-1]
        if isinstance(obj, list):
            obj[int(last)] = value
        else:
            obj[last] = value

    return mutate


INVALID = {
    "unknown_objective": (_set("stages.1.objective", "rlhf"), "stages.1.objective", "causal_lm"),
    "negative_ratio": (_set("stages.1.replay.0.ratio", -0.5), "stages.1.replay.0.ratio", "0"),
    "ratio_above_one": (_set("stages.1.replay.0.ratio", 1.5), "stages.1.replay.0.ratio", "1"),
    "negative_weight": (_set("stages.1.data.0.weight", -1), "stages.1.data.0.weight", "0"),
    "zero_weights": (_set("stages.0.data.0.weight", 0), "stages.0.data", "positive"),
    "unknown_dataset": (
        _set("stages.0.data.0.source", "builtin:wiki"),
        "stages.0.data.0",
        "unknown dataset",
    ),
    "missing_file": (
        _set("stages.0.data.0.source", "file:/nonexistent/x.txt"),
        "stages.0.data.0.source",
        "file not found",
    ),
    "missing_source": (
        lambda p: p["stages"][0]["data"][0].pop("source"),
        "stages.0.data.0.source",
        "required",
    ),
    "eval_interval_zero": (
        _set("stages.0.eval_interval", 0),
        "stages.0.eval_interval",
        "greater than 0",
    ),
    "budget_zero": (_set("stages.2.steps", 0), "stages.2.steps", "greater than 0"),
    "no_budget": (lambda p: p["stages"][2].pop("steps"), "stages.2", "steps or tokens"),
    "undefined_eval_set": (
        _set("stages.2.eval_sets", ["prose", "nope"]),
        "stages.2.eval_sets.1",
        "not defined",
    ),
    "undefined_task": (_set("stages.0.task", "nope"), "stages.0.task", "not defined"),
    "replay_of_future": (
        _set("stages.1.replay.0.source", "builtin:docstrings"),
        "stages.1.replay.0.source",
        "earlier stage",
    ),
    "sft_on_text": (
        _set("stages.2.data.0.source", "builtin:prose"),
        "stages.2.data",
        "prompt/response",
    ),
    "no_stages": (_set("stages", []), "stages", "at least 1"),
    "unknown_field": (_set("stages.0.lr", 1), "stages.0.lr", "Extra inputs"),
    "bad_arch": (_set("model.arch", "rnn"), "model.arch", "gpt2"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_plan_names_field_and_reason(case):
    mutate, path, reason = INVALID[case]
    with pytest.raises(PlanError) as exc:
        validate_plan(_bad(mutate))
    errs = exc.value.errors
    assert any(e["path"].startswith(path) and reason in e["message"] for e in errs), errs
    assert path in str(exc.value)


def test_examples_and_helper_plans_are_valid():
    for f in sorted((ROOT / "trainers" / "examples").glob("*.json")):
        validate_plan(json.loads(f.read_text()))
    validate_plan(lm_plan())
    validate_plan(digits_plan())


def test_classification_needs_mlp_and_digits():
    plan = digits_plan()
    plan["model"] = {"arch": "gpt2"}
    with pytest.raises(PlanError) as exc:
        validate_plan(plan)
    assert any(e["path"] == "stages.0.objective" for e in exc.value.errors)


def test_plan_roundtrips_through_json_and_has_schema():
    plan = validate_plan(lm_plan())
    again = validate_plan(json.loads(plan.model_dump_json()))
    assert again == plan
    schema = plan_schema()
    assert "stages" in schema["properties"]
    assert plan.stage_bounds() == [(0, 12), (12, 22), (22, 30)]


def test_token_budget_converts_to_steps():
    plan = lm_plan()
    del plan["stages"][0]["steps"]
    plan["stages"][0]["tokens"] = 1000  # 4 x 32 tokens per step -> ceil(7.8)
    assert validate_plan(plan).stages[0].num_steps == 8


@pytest.mark.parametrize(
    "case", ["unknown_objective", "negative_ratio", "missing_file", "undefined_eval_set"]
)
def test_cli_validate_and_run_reject_before_training(tmp_path, case):
    mutate, path, reason = INVALID[case]
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(_bad(mutate)))
    for args in (["validate", str(f)], ["run", str(f), "--out", str(tmp_path / "out")]):
        r = cli(*args)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert any(line.startswith(path) and reason in line for line in lines), r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_cli_validate_ok_and_missing_file(tmp_path):
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(lm_plan()))
    r = cli("validate", str(f))
    assert r.returncode == 0 and r.stdout.strip() == "ok"
    r = cli("run", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "plan file not found" in r.stderr and "Traceback" not in r.stderr
    f.write_text("{not json")
    r = cli("validate", str(f))
    assert r.returncode == 2 and "invalid JSON" in r.stderr


def test_cli_schema():
    r = cli("schema")
    assert r.returncode == 0
    assert json.loads(r.stdout)["title"] == "Plan"


def test_check_files_false_skips_only_the_local_files():
    """A plan that runs on another machine (an external run): its data files and model
    directory are not looked for here, everything else is still checked."""
    plan = lm_plan()
    plan["model"]["path"] = "/models/elsewhere/base"
    plan["stages"][1]["data"] = [{"source": "file:/data/elsewhere/code.txt"}]
    with pytest.raises(PlanError) as exc:
        validate_plan(plan)
    assert {e["path"] for e in exc.value.errors} == {"model"}  # pydantic stops at the model
    plan["model"]["path"] = None
    with pytest.raises(PlanError) as exc:
        validate_plan(plan)
    assert [e["path"] for e in exc.value.errors] == ["stages.1.data.0.source"]
    plan["model"]["path"] = "/models/elsewhere/base"
    validated = validate_plan(plan, check_files=False)
    assert validated.model.path == "/models/elsewhere/base"
    plan["stages"][0]["steps"] = 0
    with pytest.raises(PlanError) as exc:
        validate_plan(plan, check_files=False)
    assert [e["path"] for e in exc.value.errors] == ["stages.0.steps"]
