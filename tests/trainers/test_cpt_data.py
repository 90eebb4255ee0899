"""Continual pre-training data strategies (trainers/data/subset.py): a data entry's
``subset`` (count or fraction, by hash, a quality field or reference-model loss) and
``epochs`` (passes over a subset sized by the stage's budget), on real tiny runs."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.trainers.helpers import ROOT, digits_plan
from trainers.checkpoints import list_checkpoints, load_checkpoint
from trainers.data import build
from trainers.data.build import plan_tokenizer, stage_mixture
from trainers.data.sources import DataError, load_source
from trainers.data.subset import Selection, entry_selection, select
from trainers.engine import _Ref, run_plan, run_stage
from trainers.plan import DataSpec, PlanError, SubsetSpec, validate_plan
from trainers.sinks import MemorySink

MODEL = {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
         "max_positions": 64}  # fmt: skip
PROSE_EVAL = {"name": "prose", "source": "builtin:prose", "max_batches": 1, "batch_size": 8,
              "seq_len": 32}  # fmt: skip
STEPS, BATCH = 12, 4


def _stage(name: str, data: list[dict], steps: int = STEPS, **over) -> dict:
    return {"name": name, "objective": "causal_lm", "data": data, "steps": steps,
            "batch_size": BATCH, "seq_len": 32, "eval_sets": ["prose"], "eval_interval": 4,
            "checkpoint_interval": 4, "optimizer": {"lr": 3e-3}, **over}  # fmt: skip


def _plan(*stages: dict, seed: int = 3) -> dict:
    return {"name": "cpt", "seed": seed, "model": MODEL, "eval_sets": [PROSE_EVAL],
            "log_interval": 4, "stages": list(stages)}  # fmt: skip


def epochs_plan() -> dict:
    """prose with epochs 4 (the only entry: it fills every batch), then code with epochs 4
    beside a replay of the prose entry (a quarter of each batch)."""
    return _plan(
        _stage("pt", [{"source": "builtin:prose", "name": "prose", "epochs": 4}]),
        _stage("cpt", [{"source": "builtin:code", "name": "code", "epochs": 4}],
               replay=[{"source": "prose", "ratio": 0.25}]),
    )  # fmt: skip


def points(sink: MemorySink) -> list[tuple[str, int, float]]:
    return sorted((p.key, p.step, p.value) for p in sink.all_points)


@pytest.fixture(scope="module")
def epochs_run(tmp_path_factory):
    """One uninterrupted run of epochs_plan: (plan, out dir, sink)."""
    plan = validate_plan(epochs_plan())
    out = tmp_path_factory.mktemp("epochs")
    sink = MemorySink()
    run_plan(plan, out, sink)
    return plan, out, sink


def _stage_end_streams(out: Path, stage_index: int) -> dict[str, int]:
    end = [c for c in list_checkpoints(out) if c.stage_index == stage_index and c.stage_end]
    return load_checkpoint(Path(end[-1].path)).state["streams"]


def test_epochs_make_that_many_passes_over_a_subset_sized_by_the_budget(epochs_run):
    plan, out, _ = epochs_run
    tok = plan_tokenizer(plan)
    # stage 0: 12 steps x 4 rows / 4 epochs = a 12-row subset, drawn exactly 4 times over
    (prose,) = stage_mixture(plan, 0, tok).parts
    assert prose.stream.n == len(prose.arrays[0]) == STEPS * BATCH // 4
    full = build.source_rows(plan.stages[0].data[0], "lm", 32, "train", tok)
    assert len(full[0]) > 10 * prose.stream.n  # a real subset of the source
    assert _stage_end_streams(out, 0) == {"data.0:prose": 4 * prose.stream.n}
    # stage 1: the entry's share is 3/4 of each batch: ceil(12 x 4 x 0.75 / 4) = 9 rows
    mix = stage_mixture(plan, 1, tok)
    code, replay = mix.parts
    assert code.stream.n == 9
    assert replay.stream.n == prose.stream.n  # replay draws on the subset stage 0 trained on
    assert np.array_equal(replay.arrays[0], prose.arrays[0])
    streams = _stage_end_streams(out, 1)
    start, end = plan.stage_bounds()[1]
    drawn = sum(int(mix.counts(s)[0]) for s in range(start + 1, end + 1))
    assert streams["data.0:code"] == drawn  # what the stage took from the entry...
    assert 3.5 <= drawn / code.stream.n <= 4.5  # ... is about 4 passes over its subset


def test_resume_mid_stage_with_subsets_is_bit_exact(epochs_run, tmp_path):
    plan, _, ref_sink = epochs_run
    sink = MemorySink()
    run_stage(plan, 0, tmp_path, sink)
    r = run_stage(plan, 1, tmp_path, sink, max_steps=5)
    assert not r.completed and r.end_step == STEPS + 5
    build._cache.clear()  # as a new worker process: the subsets are chosen again
    r = run_stage(plan, 1, tmp_path, sink)
    assert r.completed and r.resumed_from == STEPS + 5
    assert points(sink) == points(ref_sink)


PROSE = DataSpec(source="builtin:prose")


def _chosen(spec: SubsetSpec, source: DataSpec = PROSE, tok=None, ref_scores=None) -> list:
    ex = load_source(source, "train")
    got = select(ex, Selection(spec), source, "train", "lm", 32, tok, ref_scores)
    return got.docs if hasattr(got, "docs") else got.pairs


def _digest(docs: list[str]) -> str:
    return hashlib.sha1("\x00".join(docs).encode()).hexdigest()


def test_a_subset_by_hash_is_stable_and_a_larger_count_nests():
    ten, thirty = _chosen(SubsetSpec(count=10)), _chosen(SubsetSpec(count=30))
    assert len(ten) == 10 and len(set(thirty)) == 30
    assert thirty[:10] == ten  # the top of one hash order
    quarter = _chosen(SubsetSpec(fraction=0.25))  # 74 train documents -> 19 (rounded)
    assert quarter == thirty[:19]
    # another process with another hash salt chooses the same documents
    code = (
        "from trainers.data.sources import load_source; from trainers.data.subset import *;"
        "from trainers.plan import *; import hashlib; s = DataSpec(source='builtin:prose');"
        "d = select(load_source(s, 'train'), Selection(SubsetSpec(count=10)), s, 'train', "
        "'lm', 32, None).docs; print(hashlib.sha1('\\x00'.join(d).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip() == _digest(ten)


def test_a_subset_by_hash_is_the_same_rows_for_every_seed():
    rows = []
    for seed in (0, 7):
        stage = _stage("pt", [{"source": "builtin:prose", "subset": {"count": 10}}])
        plan = validate_plan(_plan(stage, seed=seed))
        tok = plan_tokenizer(plan)
        (part,) = stage_mixture(plan, 0, tok).parts
        rows.append(part.arrays[0])
    assert np.array_equal(rows[0], rows[1])
    assert len(rows[0]) < len(build.source_rows(PROSE, "lm", 32, "train", tok)[0])


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train_split(rows: list[dict]) -> list[dict]:
    """The rows load_source keeps for training (its held-out rule: sources._heldout)."""
    from trainers.data.sources import _heldout

    return [r for i, r in enumerate(rows) if not _heldout(str(i))]


def test_a_subset_by_field_keeps_the_highest_quality_texts_and_pairs(tmp_path):
    rng = random.Random(5)
    quality = rng.sample(range(1000), 60)
    rows = [{"text": f"document {i}: " + "word " * rng.randint(5, 30), "prompt": f"Q{i}?",
             "response": f" A{i}.", "quality": q / 10} for i, q in enumerate(quality)]  # fmt: skip
    path = _write_jsonl(tmp_path / "q.jsonl", rows)
    best = sorted(_train_split(rows), key=lambda r: -r["quality"])[:8]
    texts = DataSpec(source=f"file:{path}")
    spec = SubsetSpec(count=8, by="field", field="quality")
    assert _chosen(spec, texts) == [r["text"] for r in best]
    pairs = DataSpec(source=f"file:{path}", prompt_field="prompt", response_field="response")
    assert _chosen(spec, pairs) == [(r["prompt"], r["response"]) for r in best]
    # a parquet file's column, the same way
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet")
    assert _chosen(spec, DataSpec(source=f"file:{tmp_path}/q.parquet")) == [r["text"] for r in best]
    # and it trains: an sft stage on the 8 best pairs, one row each
    stage = _stage("sft", [{"source": f"file:{path}", "prompt_field": "prompt",
                            "response_field": "response",
                            "subset": {"count": 8, "by": "field", "field": "quality"}}],
                   steps=4, objective="sft")  # fmt: skip
    plan = validate_plan(_plan(stage))
    assert run_stage(plan, 0, tmp_path / "run", MemorySink()).completed
    (part,) = stage_mixture(plan, 0, plan_tokenizer(plan)).parts
    assert part.stream.n == 8
    rows[3]["quality"] = "high"
    _write_jsonl(path, rows)
    with pytest.raises(DataError, match="row 3 has no numeric field 'quality'"):
        _chosen(spec, texts)


def _ref_loss_data(tmp_path: Path) -> tuple[Path, list[str]]:
    """A jsonl of English paragraphs and random-symbol strings; the English train docs."""
    from pydoc_data.topics import topics

    rng = random.Random(0)
    english = [t.strip()[:300] for t in list(topics.values())[:40] if len(t) > 300][:16]
    noise = ["".join(rng.choice("qxz#@~^|0{}") for _ in range(300)) for _ in range(16)]
    docs = [d for pair in zip(english, noise, strict=True) for d in pair]
    rows = [{"text": d} for d in docs]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    return path, [r["text"] for r in _train_split(rows) if r["text"] in english]


def test_a_subset_by_ref_loss_keeps_what_a_reference_model_finds_easiest(tmp_path):
    path, english = _ref_loss_data(tmp_path)
    # the reference: a tiny model trained on prose; the file is in its plan (weight 0) so
    # the tokenizer is the one the subset plan trains
    ref_plan = _plan(_stage("ref", [{"source": "builtin:prose"},
                                    {"source": f"file:{path}", "weight": 0}], steps=30))  # fmt: skip
    run_plan(validate_plan(ref_plan), tmp_path / "ref", MemorySink())
    ref_model = str(tmp_path / "ref" / "checkpoints" / "step-00000030" / "model")
    subset = {"by": "ref_loss", "ref_model": ref_model, "count": len(english)}
    plan = validate_plan(_plan(_stage("cpt", [{"source": "builtin:prose"},
                                              {"source": f"file:{path}", "subset": subset}],
                                      steps=3)))  # fmt: skip
    tok = plan_tokenizer(plan)
    assert tok.to_str() == (tmp_path / "ref" / "tokenizer.json").read_text()
    chosen = _chosen(plan.stages[0].data[1].subset, plan.stages[0].data[1], tok, _Ref())
    assert sorted(chosen) == sorted(english)
    assert run_stage(plan, 0, tmp_path / "run", MemorySink()).completed
    # a subset by hash of the same size mixes in noise: the loss is what chose
    by_hash = _chosen(SubsetSpec(count=len(english)), plan.stages[0].data[1])
    assert sorted(by_hash) != sorted(english)


def _mutated(plan: dict, stage: int, entry: int, **fields) -> dict:
    plan = copy.deepcopy(plan)
    plan["stages"][stage]["data"][entry].update(fields)
    return plan


BAD = {
    "fraction 0": (dict(subset={"fraction": 0}), "stages.1.data.0.subset.fraction",
                   "greater than 0"),
    "by field without field": (dict(subset={"by": "field", "count": 3}),
                               "stages.1.data.0.subset.field", "needs field"),
    "by field on a builtin": (dict(subset={"by": "field", "field": "q", "count": 3}),
                              "stages.1.data.0.subset.by", ".jsonl/.parquet"),
    "epochs with count": (dict(subset={"count": 3}, epochs=2), "stages.1.data.0.epochs",
                          "not both"),
    "count and fraction": (dict(subset={"count": 3, "fraction": 0.5}),
                           "stages.1.data.0.subset.fraction", "not both"),
    "a subset of no size": (dict(subset={}, epochs=None), "stages.1.data.0.subset", "needs count"),
    "ref_loss without ref_model": (dict(subset={"by": "ref_loss", "count": 3}),
                                   "stages.1.data.0.subset.ref_model", "needs ref_model"),
    "a missing ref_model": (dict(subset={"by": "ref_loss", "count": 3, "ref_model": "/nope"}),
                            "stages.1.data.0.subset.ref_model", "not found"),
    "epochs 0": (dict(epochs=0), "stages.1.data.0.epochs", "greater than or equal to 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_subsets_name_the_field(case):
    fields, path, reason = BAD[case]
    with pytest.raises(PlanError) as exc:
        validate_plan(_mutated(epochs_plan(), 1, 0, **fields))
    assert any(e["path"] == path and reason in e["message"] for e in exc.value.errors), (
        exc.value.errors
    )


@pytest.mark.parametrize("fields", [{"epochs": 2}, {"subset": {"count": 5}}])
def test_digits_have_no_subset(fields):
    with pytest.raises(PlanError) as exc:
        validate_plan(_mutated(digits_plan(), 0, 0, **fields))
    path = "stages.0.data.0." + next(iter(fields))
    assert [e["path"] for e in exc.value.errors] == [path]
    assert "not builtin:digits" in str(exc.value)


def test_epochs_size_counts_the_entry_share_and_weight():
    plan = validate_plan(epochs_plan())
    # stage 1: 12 steps x 4 x 0.75 / 4 -> 9 rows
    assert entry_selection(plan, 1, plan.stages[1].data[0]) == Selection(SubsetSpec(), 9)
    two = _mutated(epochs_plan(), 1, 0, weight=3.0)
    two["stages"][1]["data"].append({"source": "builtin:prose", "name": "p2", "epochs": 1})
    plan = validate_plan(two)
    # weights 3:1 of the 0.75 left by replay: 36 x 3/4 / 4 = 6.75 -> 7; 36 x 1/4 / 1 = 9
    assert entry_selection(plan, 1, plan.stages[1].data[0]).rows == 7
    assert entry_selection(plan, 1, plan.stages[1].data[1]).rows == 9


@pytest.mark.django_db
def test_a_server_checks_and_resolves_a_subsets_ref_model(team, tmp_path):
    """runs/services/data_access.py: subset.ref_model is read like curriculum.ref_model."""
    from runs.models import DataRoot
    from runs.services.data_access import MODEL_DENIED, PlanAccessError, plan_for_engine

    granted = tmp_path / "granted"
    (granted / "ref").mkdir(parents=True)
    DataRoot.objects.create(team=team, path=str(granted))

    def server_plan(ref_model: str) -> tuple:
        subset = {"by": "ref_loss", "ref_model": ref_model, "count": 3}
        data = _mutated(epochs_plan(), 1, 0, subset=subset, epochs=None)
        return validate_plan(data, check_files=False), data

    out = plan_for_engine(*server_plan(str(granted / "x" / ".." / "ref")), team=team)
    assert out["stages"][1]["data"][0]["subset"]["ref_model"] == str((granted / "ref").resolve())
    for denied in ("/etc", "run:99999999@3"):
        with pytest.raises(PlanAccessError) as exc:
            plan_for_engine(*server_plan(denied), team=team)
        assert str(exc.value) == f"stages.1.data.0.subset.ref_model: {MODEL_DENIED}"
