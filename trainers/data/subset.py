"""Which documents of a data entry a stage trains on: continual pre-training subsets.

A data entry's ``subset`` ranks the documents of its training split, best first, and keeps
a prefix of that ranking, before packing:

- ``by: hash``: a hash of each document's text (blake2b, not Python's salted ``hash``), so
  the choice is the same for every seed, run and machine, and a larger count keeps every
  document of a smaller one (the prefixes nest);
- ``by: field``: the highest values of a numeric quality field of a .jsonl/.parquet source;
- ``by: ref_loss``: the lowest mean token loss under ``ref_model`` (of each document's
  first seq_len tokens; the model must share the run's tokenizer).

``count`` keeps that many documents, ``fraction`` that share of them (at least one). With
the entry's ``epochs`` the subset is sized in rows instead: the rows the stage draws from the
entry (steps x batch_size x the entry's share of each batch, exact when the entry fills every
batch) divided by epochs, rounded up, so the entry's stream passes over it ``epochs`` times.
The top documents are taken until they give that many rows and the rows are cut there (a
source with fewer rows is used whole: fewer passes). The kept documents are packed in ranking
order. Sizing needs the plan, so the selection is a `Selection` built by `entry_selection`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from trainers.data.packing import IGNORE
from trainers.data.sources import Examples, Pairs, Preferences, Texts, source_quality
from trainers.data.tokenizer import encode, eos_id
from trainers.plan import DataSpec, Plan, SubsetSpec

# (subset spec, (ids, labels) of one row per document) -> mean loss of each row
RefScores = Callable[[SubsetSpec, tuple[np.ndarray, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Selection:
    """How one entry's documents are chosen: ``spec`` ranks them and gives count/fraction;
    ``rows`` (epochs) is the number of rows the subset holds instead."""

    spec: SubsetSpec
    rows: int | None = None

    def key(self) -> tuple:
        """Cache key part: everything that changes the rows."""
        s = self.spec
        return (s.by, s.count, s.fraction, s.field, s.ref_model, self.rows)


def entry_selection(plan: Plan, stage_index: int, d: DataSpec) -> Selection | None:
    """The selection of data entry ``d`` of stage ``stage_index`` (None: all documents).
    With epochs, sized by that stage's budget and the entry's share of its batches."""
    if d.subset is None and d.epochs is None:
        return None
    spec = d.subset or SubsetSpec()
    if d.epochs is None:
        return Selection(spec)
    st = plan.stages[stage_index]
    replay = sum(r for _, r, _ in plan.resolve_replay(stage_index))
    share = (1.0 - replay) * d.weight / sum(x.weight for x in st.data)
    rows = math.ceil(st.num_steps * st.batch_size * share / d.epochs - 1e-9)
    return Selection(spec, max(1, rows))


def _items(ex: Examples) -> list:
    if isinstance(ex, Texts):
        return ex.docs
    if isinstance(ex, Pairs):
        return ex.pairs
    assert isinstance(ex, Preferences), "images have no documents to choose"
    return ex.triples


def _like(ex: Examples, items: list) -> Examples:
    """Examples of ex's kind holding ``items``."""
    if isinstance(ex, Texts):
        return Texts(items)
    return Pairs(items) if isinstance(ex, Pairs) else Preferences(items)


def _text(item: str | tuple[str, ...]) -> str:
    """A document's text as an LM reads it (a pair: prompt + response; a preference:
    prompt + chosen)."""
    return item if isinstance(item, str) else item[0] + item[1]


def hash_order(items: list) -> np.ndarray:
    """Indices of ``items`` by a stable 64-bit hash of their content (ties: first first)."""
    # a separator between the parts of a pair: ("ab", "c") and ("a", "bc") differ
    keys = ["\x1f".join(x) if isinstance(x, tuple) else x for x in items]
    h = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") for k in keys]
    return np.argsort(np.array(h, dtype=np.uint64), kind="stable")


def document_rows(texts: list[str], tok: Tokenizer, seq_len: int) -> tuple[np.ndarray, ...]:
    """One (ids, labels) row per document: its first seq_len tokens (with EOS), padded with
    EOS and labels IGNORE; what a reference model scores."""
    eos = eos_id(tok)
    ids = np.full((len(texts), seq_len), eos, dtype=np.int64)
    labels = np.full((len(texts), seq_len), IGNORE, dtype=np.int64)
    for i, x in enumerate(encode(tok, texts)):
        x = np.append(x, eos)[:seq_len]
        ids[i, : len(x)] = labels[i, : len(x)] = x
    return ids, labels


def ranking(
    ex: Examples,
    spec: SubsetSpec,
    source: DataSpec,
    split: str,
    seq_len: int,
    tok: Tokenizer | None,
    ref_scores: RefScores | None,
) -> np.ndarray:
    """Indices of ex's documents (``split`` of ``source``), best first."""
    items = _items(ex)
    if spec.by == "hash":
        return hash_order(items)
    if spec.by == "field":
        assert spec.field is not None
        quality = source_quality(source, split, spec.field)
        assert len(quality) == len(items)
        return np.argsort(-quality, kind="stable")
    if ref_scores is None or tok is None:
        raise ValueError("subset by ref_loss needs a reference scorer (the engine passes one)")
    losses = ref_scores(spec, document_rows([_text(x) for x in items], tok, seq_len))
    return np.argsort(np.asarray(losses), kind="stable")


def _docs_for_rows(ranked: list, fmt: str, seq_len: int, tok: Tokenizer, rows: int) -> int:
    """How many of the ``ranked`` documents give ``rows`` rows in format ``fmt``: packed text
    fills a row per seq_len tokens (EOS included); a pair or preference gives one row when
    its prompt fits (trainers/data/packing.py sft_rows); anything else one row each."""
    if fmt == "lm":
        weights = [len(x) + 1 for x in encode(tok, [_text(x) for x in ranked])]
        need = rows * seq_len
    elif fmt in ("sft", "pref"):
        weights = [int(len(p) <= seq_len - 4) for p in encode(tok, [x[0] for x in ranked])]
        need = rows
    else:
        weights, need = [1] * len(ranked), rows
    return int(np.searchsorted(np.cumsum(weights), need)) + 1


def select(
    ex: Examples,
    sel: Selection,
    source: DataSpec,
    split: str,
    fmt: str,
    seq_len: int,
    tok: Tokenizer | None,
    ref_scores: RefScores | None = None,
) -> Examples:
    """The chosen documents of ``ex`` (``split`` of ``source``), best first. With
    ``sel.rows`` the caller cuts the rows these documents give to ``sel.rows`` (the last
    document may be cut; with a length curriculum, the longest)."""
    items = _items(ex)
    ranked = [items[i] for i in ranking(ex, sel.spec, source, split, seq_len, tok, ref_scores)]
    n, s = len(items), sel.spec
    if s.count is not None:
        k = s.count
    elif s.fraction is not None:
        k = max(1, math.floor(s.fraction * n + 0.5))
    else:
        assert sel.rows is not None and tok is not None
        k = _docs_for_rows(ranked, fmt, seq_len, tok, sel.rows)
    return _like(ex, ranked[: min(k, n)])
