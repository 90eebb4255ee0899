"""From plan entries to arrays: the run's tokenizer, training rows per source, stage
mixtures (data + replay) and fixed evaluation batches. Results are cached per process so
consecutive stages (and eval sets sharing a source) tokenise once.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

import numpy as np
import torch
from tokenizers import Tokenizer

from trainers.data.mixture import Mixture, Part, Stream, curriculum_order
from trainers.data.packing import pack, sft_rows
from trainers.data.sources import (
    Examples,
    Images,
    Pairs,
    Preferences,
    Texts,
    load_source,
    tokenizer_texts,
)
from trainers.data.subset import RefScores, Selection, entry_selection, select
from trainers.data.tokenizer import encode, eos_id, train_tokenizer
from trainers.plan import CurriculumSpec, DataSpec, EvalSetSpec, Plan, SourceSpec, SubsetSpec

Arrays = tuple[np.ndarray, ...]
EVAL_SEED = 12345  # eval batches are the same for every run and seed: curves compare
_cache: dict[tuple, Arrays] = {}


def plan_tokenizer(plan: Plan) -> Tokenizer:
    """BPE trained on the train split of every text source in the plan, in plan order."""
    specs: list[SourceSpec] = [d for st in plan.stages for d in st.data] + list(plan.eval_sets)
    seen, texts = set(), []
    for s in specs:
        if s.source_kind != "images" and s.key() not in seen:
            seen.add(s.key())
            texts += tokenizer_texts(load_source(s, "train"))
    return train_tokenizer(texts, plan.model.vocab_size)


def _tok_id(tok: Tokenizer) -> str:
    return hashlib.sha1(tok.to_str().encode()).hexdigest()[:12]


def source_rows(
    spec: SourceSpec,
    fmt: str,
    seq_len: int,
    split: str,
    tok: Tokenizer | None,
    by_length=False,
    selection: Selection | None = None,
    ref_scores: RefScores | None = None,
) -> Arrays:
    """Rows of one source. fmt: "sft" masks prompts of pairs; "lm" packs everything;
    "pref" gives preference rows (trainers/data/preferences.py), "prompts" an rl stage's
    prompts with answers (trainers/data/prompts.py); images give (x, y). by_length packs
    documents shortest first (length curriculum). ``selection``: only the documents of a
    data entry's subset (trainers/data/subset.py; ``ref_scores`` scores them by ref_loss),
    cut to its rows when it is sized by epochs."""
    tok_key = _tok_id(tok) if tok else None
    key = (spec.key(), fmt, seq_len, split, tok_key, by_length, selection and selection.key())
    if key in _cache:
        return _cache[key]
    ex = load_source(spec, split)
    if selection is not None:
        assert isinstance(spec, DataSpec)
        ex = select(ex, selection, spec, split, fmt, seq_len, tok, ref_scores)
    out = _format(ex, fmt, seq_len, tok, by_length)
    if selection is not None and selection.rows is not None:
        out = tuple(a[: selection.rows] for a in out)
    if len(out[0]) == 0:
        raise ValueError(f"{spec.source} ({split}) gives no rows of length {seq_len}")
    _cache[key] = out
    return out


def _format(ex: Examples, fmt: str, seq_len: int, tok: Tokenizer | None, by_length: bool) -> Arrays:
    """Row-aligned arrays of examples in format ``fmt`` (see source_rows)."""
    if isinstance(ex, Images):
        return (ex.x, ex.y)
    assert tok is not None
    if isinstance(ex, Preferences):
        from trainers.data.preferences import preference_rows

        return preference_rows(tok, ex.triples, seq_len)
    if fmt == "prompts":
        from trainers.data.prompts import prompt_rows

        assert isinstance(ex, Pairs)
        return prompt_rows(tok, ex.pairs, seq_len)
    eos = eos_id(tok)
    if isinstance(ex, Pairs) and fmt == "sft":
        p = encode(tok, [a for a, _ in ex.pairs])
        r = encode(tok, [b for _, b in ex.pairs])
        if by_length:
            order = np.argsort([len(a) + len(b) for a, b in zip(p, r, strict=True)], kind="stable")
            p, r = [p[i] for i in order], [r[i] for i in order]
        return sft_rows(p, r, seq_len, eos)
    docs = ex.docs if isinstance(ex, Texts) else [a + b for a, b in ex.pairs]
    ids = encode(tok, docs)
    if by_length:
        ids = sorted(ids, key=len)
    chunks = pack(ids, seq_len, eos)
    return (chunks, chunks)


def _fmt(objective: str, spec: SourceSpec) -> str:
    if spec.source_kind == "images":
        return "images"
    if spec.source_kind == "preference":
        return "pref"
    if objective == "rl":
        return "prompts"
    return "sft" if objective == "sft" and spec.source_kind == "pairs" else "lm"


EVAL_FORMATS = {"classification": "images", "preference": "pref", "exact_match": "prompts"}


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def stage_mixture(
    plan: Plan,
    stage_index: int,
    tok: Tokenizer | None,
    ref_scores: Callable[[CurriculumSpec | SubsetSpec, Arrays], np.ndarray] | None = None,
) -> Mixture:
    """The stage's data entries (weighted, sharing 1 - replay) plus its replay parts; an
    entry with a subset (or epochs) gives only its chosen documents, in its replay too.
    ``ref_scores`` (the engine's): mean loss of each row under a spec's ref_model."""
    st = plan.stages[stage_index]
    replay = plan.resolve_replay(stage_index)
    share = 1.0 - sum(r for _, r, _ in replay)
    wsum = sum(d.weight for d in st.data)
    cur = st.curriculum
    parts = []
    for j, d in enumerate(st.data):
        by_len = cur is not None and cur.by == "length" and d.source_kind != "images"
        sel = entry_selection(plan, stage_index, d)
        fmt = _fmt(st.objective, d)
        arrays = source_rows(d, fmt, st.seq_len, "train", tok, by_len, sel, ref_scores)
        name = f"data.{j}:{d.ref}"
        first = None
        if cur is not None:
            if cur.by == "length" and d.source_kind == "images":
                first = curriculum_order((arrays[0] > 0).sum(1))  # ink: fewer strokes first
            elif cur.by == "length":
                first = np.arange(len(arrays[0]))  # already packed shortest first
            elif ref_scores is not None:
                first = curriculum_order(ref_scores(cur, arrays))
        stream = Stream(len(arrays[0]), _seed(plan.seed, stage_index, name), first)
        parts.append(Part(name, share * d.weight / wsum, arrays, stream))
    for r, (d, ratio, k) in enumerate(replay):
        sel = entry_selection(plan, k, d)  # the documents stage k trained on
        fmt = _fmt(plan.stages[k].objective, d)
        arrays = source_rows(d, fmt, st.seq_len, "train", tok, False, sel, ref_scores)
        name = f"replay.{r}:{d.ref}"
        parts.append(
            Part(name, ratio, arrays, Stream(len(arrays[0]), _seed(plan.seed, stage_index, name)))
        )
    return Mixture(parts, st.batch_size, _seed(plan.seed, stage_index, "mixture"))


def eval_batches(es: EvalSetSpec, tok: Tokenizer | None) -> list[tuple[torch.Tensor, ...]]:
    """Fixed batches: a seeded sample of max_batches * batch_size rows of the split."""
    fmt = EVAL_FORMATS.get(es.kind) or ("sft" if es.source_kind == "pairs" else "lm")
    arrays = source_rows(es, fmt, es.seq_len, es.split, tok)
    n = min(len(arrays[0]), es.max_batches * es.batch_size)
    idx = np.sort(np.random.default_rng(EVAL_SEED).permutation(len(arrays[0]))[:n])
    out = []
    for i in range(0, n, es.batch_size):
        sel = idx[i : i + es.batch_size]
        out.append(tuple(torch.from_numpy(np.ascontiguousarray(a[sel])) for a in arrays))
    return out


def to_tensors(batch: Arrays) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a) for a in batch)
