"""Dataset readers: shipped builtin sets and user files, each with a deterministic
train / heldout split.

builtin:prose       English from pydoc_data.topics (one document per topic)
builtin:code        a fixed, sorted subset of the Python stdlib's top-level .py files
builtin:docstrings  (signature -> first docstring sentence) pairs parsed with ast from the
                    same stdlib files
builtin:digits      scikit-learn's load_digits (see trainers/data/digits.py)
builtin:arithmetic  generated problems (prompt "37+58=", answer "95"; trainers/data/arithmetic.py)
builtin:docstring_prefs  (prompt, chosen, rejected) from the docstring pairs
                    (trainers/data/preferences.py)
file:/abs/x.txt     documents separated by blank lines
file:/abs/x.jsonl   one object per line: text_field, or prompt_field/response_field (and a
                    numeric quality field for a subset by field: source_quality)
file:/abs/x.parquet the same fields as columns

Held-out membership is a function of a stable key (topic/file/function name, or the row
index for files) so it never depends on the seed or on the other sources in a plan.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainers.plan import SourceSpec

HELDOUT_EVERY = 10  # ~10% of documents are held out
CODE_MAX_BYTES = 700_000  # builtin:code budget: enough text, tokenises in about a second


@dataclass(frozen=True)
class Texts:
    docs: list[str]


@dataclass(frozen=True)
class Pairs:
    pairs: list[tuple[str, str]]


@dataclass(frozen=True)
class Preferences:
    triples: list[tuple[str, str, str]]  # (prompt, chosen, rejected)


@dataclass(frozen=True)
class Images:
    x: np.ndarray  # (N, 64) float32 in [0, 1]
    y: np.ndarray  # (N,) int64


Examples = Texts | Pairs | Preferences | Images


class DataError(ValueError):
    """A source could not be read (missing file, bad field...)."""


def _heldout(key: str) -> bool:
    return zlib.crc32(key.encode()) % HELDOUT_EVERY == 0


def _split(keyed: list[tuple[str, object]], split: str) -> list:
    want = split == "heldout"
    return [v for k, v in keyed if _heldout(k) == want]


@functools.cache
def _prose() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(k, topics[k].strip()) for k in sorted(topics) if topics[k].strip()]


@functools.cache
def _stdlib_files() -> list[Path]:
    """Sorted top-level stdlib modules, skipping tiny and huge ones, up to CODE_MAX_BYTES."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for p in sorted(root.glob("*.py")):
        size = p.stat().st_size
        if not 2_000 <= size <= 60_000 or p.name.startswith("_"):
            continue
        out.append(p)
        total += size
        if total >= CODE_MAX_BYTES:
            break
    return out


@functools.cache
def _code() -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8", errors="replace")) for p in _stdlib_files()]


def _first_sentence(doc: str) -> str:
    para = " ".join(doc.strip().split("\n\n")[0].split())
    end = para.find(". ")
    sent = para if end < 0 else para[: end + 1]
    return sent if sent.endswith(".") else sent + "."


@functools.cache
def _docstrings() -> list[tuple[str, tuple[str, str]]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    pairs = []
    for p in sorted(root.glob("*.py")):
        if p.name.startswith("_"):
            continue
        mod, src = p.stem, p.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        todo: list[tuple[str, ast.AST]] = [("", n) for n in tree.body]
        while todo:
            prefix, node = todo.pop(0)
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                todo += [(f"{prefix}{node.name}.", n) for n in node.body]
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if node.name.startswith("_") or not doc:
                continue
            sent = _first_sentence(doc)
            if not 10 <= len(sent) <= 200:
                continue
            name = f"{mod}.{prefix}{node.name}"
            prompt = f"Summarise {name}({ast.unparse(node.args)})\nSummary:"
            pairs.append((name, (prompt, " " + sent)))
    return pairs


def _read_rows(spec: SourceSpec, path: str, quality: str | None = None) -> list[dict]:
    """The records of a .jsonl/.parquet file, each with the spec's string fields (and the
    numeric ``quality`` field, when given: a subset by field)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file not found: {path}")
    if spec.chosen_field:
        fields = [spec.prompt_field, spec.chosen_field, spec.rejected_field]
    elif spec.prompt_field:
        fields = [spec.prompt_field, spec.response_field]
    else:
        fields = [spec.text_field]
    if path.endswith(".jsonl"):
        rows = []
        with p.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        wanted = fields + ([quality] if quality else [])
        missing = [f for f in wanted if f not in table.column_names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r}")
        rows = table.select(wanted).to_pylist()
    for n, r in enumerate(rows):
        for f in fields:
            if not isinstance(r.get(f), str):
                raise DataError(f"{path}: row {n} has no string field {f!r}")
        if quality and not _finite_number(r.get(quality)):
            raise DataError(f"{path}: row {n} has no numeric field {quality!r}")
    return rows


def _finite_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_source(spec: SourceSpec, split: str) -> Examples:
    """The examples of one source and split ("train" or "heldout")."""
    s = spec.source
    if s == "builtin:prose":
        return Texts(_split(_prose(), split))
    if s == "builtin:code":
        return Texts(_split(_code(), split))
    if s == "builtin:docstrings":
        return Pairs(_split(_docstrings(), split))
    if s == "builtin:arithmetic":
        from trainers.data.arithmetic import arithmetic_examples

        return Pairs(_split(arithmetic_examples(spec.digits or [1, 2]), split))
    if s == "builtin:docstring_prefs":
        from trainers.data.preferences import docstring_preferences

        return Preferences(_split(docstring_preferences(), split))
    if s == "builtin:digits":
        from trainers.data.digits import digits_split

        x, y = digits_split(split, spec.classes, spec.permute_seed)
        return Images(x, y)
    path = spec.file_path
    assert path is not None
    if path.endswith(".txt"):
        p = Path(path)
        if not p.is_file():
            raise DataError(f"file not found: {path}")
        paras = [d.strip() for d in p.read_text(encoding="utf-8").split("\n\n") if d.strip()]
        return Texts(_split([(str(i), d) for i, d in enumerate(paras)], split))
    rows = _read_rows(spec, path)
    if spec.chosen_field:
        keyed = [
            (str(i), (r[spec.prompt_field], r[spec.chosen_field], r[spec.rejected_field]))
            for i, r in enumerate(rows)
        ]
        return Preferences(_split(keyed, split))
    if spec.prompt_field:
        keyed = [
            (str(i), (r[spec.prompt_field], r[spec.response_field])) for i, r in enumerate(rows)
        ]
        return Pairs(_split(keyed, split))
    return Texts(_split([(str(i), r[spec.text_field]) for i, r in enumerate(rows)], split))


def source_quality(spec: SourceSpec, split: str, field: str) -> np.ndarray:
    """The numeric ``field`` of each example of a .jsonl/.parquet source and split, aligned
    with load_source's examples: the score of a subset by field (higher is better)."""
    path = spec.file_path
    if path is None or path.endswith(".txt"):
        raise DataError(f"{spec.source}: plain text has no field {field!r}")
    rows = _read_rows(spec, path, quality=field)
    keyed = [(str(i), float(r[field])) for i, r in enumerate(rows)]
    return np.array(_split(keyed, split), dtype=np.float64)


def tokenizer_texts(ex: Examples) -> list[str]:
    """Text a tokenizer should learn from."""
    if isinstance(ex, Texts):
        return ex.docs
    if isinstance(ex, Pairs):
        return [p + r for p, r in ex.pairs]
    if isinstance(ex, Preferences):
        return [p + c for p, c, _ in ex.triples] + [p + r for p, _, r in ex.triples]
    return []
