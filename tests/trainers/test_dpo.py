"""The dpo objective, the preference eval and preference data (builtin:docstring_prefs).

One module-scoped real run (tiny GPT-2: SFT on docstrings, then DPO on docstring
preferences) is shared by the tests. Held-out preference accuracy at the dpo stage's end,
measured for seeds 0, 1, 2 of this plan: 0.608, 0.602, 0.620 (from 0.536, 0.524, 0.530 at
the stage's start): the test asks for 0.55 and a rise of 0.03.
"""

import copy
from pathlib import Path

import numpy as np
import pytest

from trainers.data.packing import IGNORE
from trainers.data.preferences import docstring_preferences, preference_rows
from trainers.data.sources import _docstrings, _heldout
from trainers.data.tokenizer import load_tokenizer
from trainers.engine import run_plan, run_stage
from trainers.plan import PlanError, validate_plan
from trainers.sinks import MemorySink

SFT_STEPS, DPO_STEPS = 300, 150
MIN_ACC, MIN_RISE = 0.55, 0.03


def _eval(name: str, source: str, kind: str, **over) -> dict:
    return {"name": name, "source": source, "kind": kind, "max_batches": 4, "batch_size": 48,
            "seq_len": 48, **over}  # fmt: skip


def dpo_plan() -> dict:
    """SFT on docstrings, then DPO on docstring preferences; prefs = held-out pairs."""
    common = {"batch_size": 16, "seq_len": 48}
    return {
        "name": "tiny-dpo",
        "seed": 0,
        "model": {
            "arch": "gpt2",
            "n_layer": 2,
            "n_embd": 64,
            "n_head": 2,
            "vocab_size": 384,
            "max_positions": 96,
        },  # fmt: skip
        "eval_sets": [
            _eval("prefs", "builtin:docstring_prefs", "preference"),
            _eval("doc", "builtin:docstrings", "lm", max_batches=1),
        ],
        "log_interval": 25,
        "stages": [
            {
                "name": "sft",
                "objective": "sft",
                "data": [{"source": "builtin:docstrings"}],
                "steps": SFT_STEPS,
                "optimizer": {"lr": 3e-3, "grad_clip": 1.0},
                "schedule": {"kind": "cosine", "warmup_steps": 10},
                "eval_sets": ["doc"],
                "eval_interval": 1000,
                **common,
            },  # fmt: skip
            {
                "name": "dpo",
                "objective": "dpo",
                "data": [{"source": "builtin:docstring_prefs"}],
                "dpo": {"beta": 0.1},
                "steps": DPO_STEPS,
                "optimizer": {"lr": 1e-3, "grad_clip": 1.0, "weight_decay": 0.0, "reset": True},
                "schedule": {"kind": "constant", "warmup_steps": 5},
                "eval_sets": ["prefs", "doc"],
                "eval_interval": 50,
                **common,
            },  # fmt: skip
        ],
    }


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo")
    sink = MemorySink()
    run_plan(validate_plan(dpo_plan()), out, sink)
    return out, sink


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_heldout_preference_accuracy_rises(dpo_run):
    _, sink = dpo_run
    acc = dict(sink.series("eval/prefs/acc"))
    start, end = acc[SFT_STEPS], acc[SFT_STEPS + DPO_STEPS]
    assert sorted(acc) == [300, 350, 400, 450]  # the stage's start, then every 50 steps
    assert end > MIN_ACC, acc
    assert end > start + MIN_RISE, acc
    margin = dict(sink.series("eval/prefs/margin"))
    assert margin[SFT_STEPS + DPO_STEPS] > margin[SFT_STEPS]


def test_train_extras_rise(dpo_run):
    _, sink = dpo_run
    for key in ("train/pref_acc", "train/reward_margin"):
        steps = [s for s, _ in sink.series(key)]
        assert steps == list(range(SFT_STEPS + 1, SFT_STEPS + DPO_STEPS + 1))  # dpo only
        v = [x for _, x in sink.series(key)]
        assert _mean(v[-25:]) > _mean(v[:25]) + 0.1, key
    # at the first step the model is its reference: every margin is exactly 0
    assert sink.series("train/reward_margin")[0][1] == 0.0
    assert sink.series("train/pref_acc")[0][1] == 0.0
    chosen = dict(sink.series("train/chosen_logp"))
    assert all(v < 0 for v in chosen.values())


def _rows(sink: MemorySink, stage: int | None = None) -> list[tuple[str, int, float]]:
    return sorted((p.key, p.step, p.value) for p in sink.all_points if stage in (None, p.stage))


def test_dpo_resumes_bit_for_bit(dpo_run, tmp_path):
    """Stop the dpo stage mid-way (max_steps), continue: every stage-1 point equals the
    uninterrupted run's; the resumed call rebuilds the frozen reference from the origin."""
    ref_out, ref_sink = dpo_run
    plan = validate_plan(dpo_plan())
    sft_end = ref_out / "checkpoints" / f"step-{SFT_STEPS:08d}"
    sink = MemorySink()
    r = run_stage(plan, 1, tmp_path, sink, init_from=sft_end, max_steps=60)
    assert not r.completed and r.end_step == SFT_STEPS + 60
    r = run_stage(plan, 1, tmp_path, sink, init_from=sft_end)
    assert r.completed and r.resumed_from == SFT_STEPS + 60
    assert _rows(sink) == _rows(ref_sink, stage=1)


def test_preference_rows_mask_prompts(dpo_run):
    out, _ = dpo_run
    tok = load_tokenizer(out / "tokenizer.json")
    triples = [t for _, t in docstring_preferences()[:40]]
    c_ids, c_lab, r_ids, r_lab = preference_rows(tok, triples, 48)
    assert c_ids.shape == c_lab.shape == r_ids.shape == r_lab.shape
    assert c_ids.dtype == np.int64
    kept = [t for t in triples if len(tok.encode(t[0]).ids) <= 48 - 4]
    assert len(c_ids) == len(kept)
    for k, (prompt, chosen, rejected) in enumerate(kept):
        n = len(tok.encode(prompt).ids)
        assert (c_ids[k, :n] == r_ids[k, :n]).all()  # the same prompt on both sides
        assert (c_lab[k, :n] == IGNORE).all() and (r_lab[k, :n] == IGNORE).all()
        assert (c_lab[k, n:] != IGNORE).any() and (r_lab[k, n:] != IGNORE).any()
        for labels, text in ((c_lab[k], chosen), (r_lab[k], rejected)):
            got = tok.decode([int(x) for x in labels if x != IGNORE][:-1])  # less EOS
            assert text.strip().startswith(got.strip()[:20])


def test_docstring_preferences_are_stable_and_split_like_docstrings():
    prefs = docstring_preferences()
    pairs = _docstrings()
    assert [k for k, _ in prefs] == [k for k, _ in pairs]
    heldout_sentences = {s for k, (_, s) in pairs if _heldout(k)}
    train_sentences = {s for k, (_, s) in pairs if not _heldout(k)}
    for (key, (prompt, chosen, rejected)), (_, pair) in zip(prefs, pairs, strict=True):
        assert (prompt, chosen) == pair and rejected != chosen
        pool = heldout_sentences if _heldout(key) else train_sentences
        assert rejected in pool  # never a sentence of the other split
    lengths = np.array([len(c) - len(r) for _, (_, c, r) in prefs])
    assert abs(lengths.mean()) < 2.0  # rejected is as long as chosen on average


def _dpo_first(plan: dict) -> None:
    plan["stages"][0] = {**copy.deepcopy(plan["stages"][1]), "name": "first"}


def _replay_prefs(plan: dict) -> None:
    replay = [{"source": "builtin:docstring_prefs", "ratio": 0.2}]
    plan["stages"].append({**copy.deepcopy(plan["stages"][0]), "name": "sft2", "replay": replay})


BAD_PLANS = [
    # dpo on text data
    (lambda p: p["stages"][1]["data"][0].update(source="builtin:prose"), "stages.1.data.0.source"),
    # beta <= 0
    (lambda p: p["stages"][1]["dpo"].update(beta=0.0), "stages.1.dpo.beta"),
    (lambda p: p["stages"][1]["dpo"].update(beta=-1.0), "stages.1.dpo.beta"),
    # preference eval on a text / pair source; a preference source measured as lm
    (lambda p: p["eval_sets"][0].update(source="builtin:prose"), "eval_sets.0.kind"),
    (lambda p: p["eval_sets"][1].update(kind="preference"), "eval_sets.1.kind"),
    (lambda p: p["eval_sets"][0].update(kind="lm"), "eval_sets.0.kind"),
    # dpo settings on an sft stage; dpo as the first stage (no trained reference)
    (lambda p: p["stages"][0].update(dpo={"beta": 0.1}), "stages.0.dpo"),
    (_dpo_first, "stages.0.objective"),
    # preference pairs replayed in a later sft stage
    (_replay_prefs, "stages.2.replay.0.source"),
]


@pytest.mark.parametrize(("mutate", "path"), BAD_PLANS)
def test_bad_plans_name_the_field(mutate, path):
    plan = dpo_plan()
    mutate(plan)
    with pytest.raises(PlanError) as exc:
        validate_plan(plan)
    assert path in [e["path"] for e in exc.value.errors], exc.value.errors


def test_example_plan_validates():
    import json

    example = Path(__file__).resolve().parents[2] / "trainers/examples/docstrings_sft_dpo.json"
    plan = validate_plan(json.loads(example.read_text()))
    kinds = {e.name: e.kind for e in plan.eval_sets}
    assert [st.objective for st in plan.stages] == ["sft", "dpo"]
    assert "preference" in kinds.values() and "lm" in kinds.values()
