"""A table of points → sources (``upload.Source``), one per distinct ``run`` value (one source
when there is no run column). CSV/TSV (also .gz), JSON Lines (.jsonl, .ndjson; .json: JSON
Lines or one array of objects) and Parquet, chosen by the file's extension, read with pyarrow.

Long tables have a row per point: run, key, step, value[, time]. The columns are found by
name (the first of ``LONG`` that the table has, which covers Neptune's Parquet exporter) or
named with ``--map role=column``. A row with an empty value is skipped; any other row needs a
whole, non-negative step.

Wide tables (``--wide``, W&B's ``run.history()``): one row per step, one column per metric.
Every numeric column becomes a key, except the step, time and run columns, unnamed columns
(an exported index) and names starting with "_" (W&B's own: _runtime, _timestamp, ...).

Times are unix seconds, Parquet/Arrow timestamps, or ISO 8601 text (UTC when it names no
zone)."""

from __future__ import annotations

import bz2
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainers.imports.common import BadInput, one_line
from trainers.imports.upload import source

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".json": "json", ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
LONG = {"run": ("run", "run_id"), "key": ("key", "metric", "attribute_path"),
        "step": ("step", "_step"), "value": ("value", "float_value"),
        "time": ("time", "timestamp", "_timestamp")}  # fmt: skip
WIDE = {"run": ("run", "run_id"), "step": ("_step", "step"),
        "time": ("_timestamp", "time", "timestamp")}  # fmt: skip


def read_table(path: str, *, mapping: dict[str, str], wide: bool = False, prefix: str = "",
               name: str | None = None):  # fmt: skip
    """(sources, notes) from the table at ``path``; raises BadInput."""
    kind = file_kind(path)
    table = _load(path, kind)
    if table.num_rows == 0:
        raise BadInput(f"{path}: no rows")
    roles = _roles(table, mapping, wide, path)
    runs, run_code = _run_column(table, roles["run"])
    if wide:
        keys, code, rows, value, empty = _melt(table, roles, path)
    else:
        keys, code, rows, value, empty = _long(table, roles)
    step = _steps(table[roles["step"]].take(rows), f"column {roles['step']!r}", rows)
    time = np.full(len(rows), np.nan)
    if roles["time"]:
        time = _seconds(table[roles["time"]], f"column {roles['time']!r}")[rows]
    keys = [prefix + str(k) for k in keys]
    origin = {"format": kind, "path": str(Path(path).resolve())}
    stem = name or Path(path).name.split(".")[0]
    sources, notes = [], []
    for r, run in enumerate(runs):
        mine = run_code[rows] == r
        if not mine.any():
            notes.append(f"{path}: run {run!r} has no values, not imported")
            continue
        if run is None or (name and len(runs) == 1):
            run_name = stem
        else:
            run_name = f"{name}/{run}" if name else run or stem
        src = source(run_name, {**origin, **({"run": run} if run is not None else {})},
                     keys, code[mine], step[mine], value[mine], time[mine])  # fmt: skip
        src.skipped += int(empty[run_code == r].sum())
        sources.append(src)
    if not sources:
        raise BadInput(f"{path}: no values to import")
    return sources, notes


def file_kind(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{path}: no such file")
    if not p.is_file():
        raise BadInput(f"{path}: not a file")
    suffixes = [s.lower() for s in p.suffixes[-2:]]
    if len(suffixes) == 2 and suffixes[1] in (".gz", ".bz2") and suffixes[0] != ".parquet":
        suffixes = suffixes[:1]
    kind = EXTENSIONS.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise BadInput(f"{path}: unknown extension {p.suffix or '(none)'!r}: expected "
                       f"{', '.join(EXTENSIONS)} (CSV, JSON Lines also .gz)")  # fmt: skip
    return kind


def _load(path: str, kind: str):
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if kind in ("csv", "tsv"):
            options = pa_csv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")
            return pa_csv.read_csv(path, parse_options=options)
        if kind == "parquet":
            return pq.read_table(path)
        return _json_table(path, kind)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read it as {kind}: {one_line(e)}") from None


def _json_table(path: str, kind: str):
    """JSON Lines (or a JSON array of objects) → a table; a column whose values mix types
    (numbers and text) becomes text."""
    import pyarrow as pa

    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(Path(path).suffix.lower(), open)
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    rows = _json_rows(text, kind == "json" and text.lstrip().startswith("["), path)
    columns = {}
    for name in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array(
                [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                pa.string(),
            )  # fmt: skip
    return pa.table(columns)


def _json_rows(text: str, array: bool, path: str) -> list[dict]:
    """The objects of a JSON array, or of JSON Lines (blank lines skipped)."""
    lines = None if array else [(n, s) for n, s in enumerate(text.splitlines(), 1) if s.strip()]
    at = 0  # the line being read
    try:
        if lines is None:
            rows = json.loads(text)
        else:
            rows = []
            for at, line in lines:  # noqa: B007 - `at` names the bad line
                rows.append(json.loads(line))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not JSON at line {at or e.lineno}: {e.msg}") from None
    rows = rows if isinstance(rows, list) else [rows]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            where = f"item {i}" if lines is None else f"line {lines[i][0]}"
            raise BadInput(f"{path}: {where} is not a JSON object (one row per object)")
    return rows


def _roles(table, mapping: dict[str, str], wide: bool, path: str) -> dict[str, str | None]:
    """The column of each role (None: the table has none; only run and time may lack)."""
    names = table.column_names
    if wide and {"key", "value"} & mapping.keys():
        raise BadInput("--wide: every numeric column is a key; --map key=/value= do not apply")
    listed = ", ".join(map(repr, names[:12])) + (", ..." if len(names) > 12 else "")
    roles = {}
    for role, defaults in (WIDE if wide else LONG).items():
        if role in mapping:
            if mapping[role] not in names:
                raise BadInput(f"{path}: no column {mapping[role]!r} (--map {role}=...); "
                               f"its columns: {listed}")  # fmt: skip
            roles[role] = mapping[role]
            continue
        roles[role] = next((c for c in defaults if c in names), None)
        if roles[role] is None and role not in ("run", "time"):
            raise BadInput(f"{path}: no {role} column (looked for {', '.join(defaults)}); "
                           f"name it with --map {role}=COLUMN; its columns: {listed}")  # fmt: skip
    return roles


def _run_column(table, column: str | None) -> tuple[list, np.ndarray]:
    """The distinct runs (first seen first; [None]: no run column) and each row's index."""
    if column is None:
        return [None], np.zeros(table.num_rows, np.int64)
    return _codes(table[column], f"column {column!r}")


def _long(table, roles: dict):
    """(keys, key index, row numbers, values, empty per row) of the rows with a value."""
    import pyarrow.compute as pc

    value_column = table[roles["value"]]
    valid = pc.is_valid(value_column).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(valid)
    keys, code = _codes(table[roles["key"]].take(rows), f"column {roles['key']!r}", rows)
    value = _floats(value_column, f"column {roles['value']!r}")[rows]
    return keys, code, rows, value, ~valid


def _melt(table, roles: dict, path: str):
    """Wide → long: (keys, key index, row numbers, values, empty per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    skip = {c for c in roles.values() if c}
    keys = [c for c in table.column_names
            if c not in skip and c.strip() and not c.startswith(("_", "Unnamed:"))
            and (pa.types.is_integer(t := table.schema.field(c).type)
                 or pa.types.is_floating(t) or pa.types.is_decimal(t))]  # fmt: skip
    if not keys:
        raise BadInput(f"{path}: --wide: no numeric columns besides {', '.join(sorted(skip))}")
    codes, rows, values = [], [], []
    for i, key in enumerate(keys):
        column = table[key]
        mine = np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))
        codes.append(np.full(len(mine), i, np.int64))
        rows.append(mine)
        values.append(_floats(column, f"column {key!r}")[mine])
    empty = np.zeros(table.num_rows, bool)  # a wide table's empty cells are not points
    return keys, np.concatenate(codes), np.concatenate(rows), np.concatenate(values), empty


def _codes(column, what: str, rows=None) -> tuple[list, np.ndarray]:
    """(distinct values as text, first seen first; each row's index among them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise BadInput(f"{what}: row {_row(_first(pc.is_null(column)), rows)} is empty")
    try:
        text = pc.cast(column, pa.string()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise BadInput(f"{what} holds {column.type}, not names") from None
    encoded = text.dictionary_encode()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def _floats(column, what: str, rows=None) -> np.ndarray:
    """float64 values, NaN where empty; BadInput for text that is not a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if not (numeric or text):
        raise BadInput(f"{what} holds {kind}, not numbers")
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # text: Python's float() is more lenient (spaces)
        pass
    out = np.full(len(column), np.nan)
    for i, v in enumerate(column.to_pylist()):
        if v is not None:
            try:
                out[i] = float(v)
            except ValueError:
                raise BadInput(f"{what}: {v!r} in row {_row(i, rows)} is not a number") from None
    return out


def _steps(column, what: str, rows) -> np.ndarray:
    """Whole, non-negative steps (int64); BadInput naming the first row that has none."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise BadInput(f"{what}: row {_row(_first(pc.is_null(column)), rows)} has no step")
    if pa.types.is_integer(column.type):
        steps = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
        bad = steps < 0
    else:
        f = _floats(column, what, rows)
        bad = ~np.isfinite(f) | (f != np.floor(f)) | (f < 0) | (f > 2.0**63)
        steps = np.where(bad, 0, f).astype(np.int64)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        shown = column[i].as_py()
        raise BadInput(f"{what}: {shown!r} in row {_row(i, rows)} is not a step (a whole "
                       "number >= 0)")  # fmt: skip
    return steps


def _seconds(column, what: str) -> np.ndarray:
    """Unix seconds (float64, NaN where empty) from numbers, timestamps or ISO 8601 text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        ticks = pc.cast(pc.cast(column, pa.int64()), pa.float64())
        return ticks.to_numpy(zero_copy_only=False) / per_second
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _floats(column, what)
    out = np.full(len(column), np.nan)
    for i, v in enumerate(column.to_pylist()):
        if v is None or not v.strip():
            continue
        try:
            out[i] = float(v)
        except ValueError:
            try:
                t = datetime.fromisoformat(v.strip())
            except ValueError:
                raise BadInput(f"{what}: {v!r} in row {i + 1} is neither unix seconds nor "
                               "an ISO 8601 time") from None  # fmt: skip
            out[i] = (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return out


def _first(mask) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _row(i: int, rows) -> int:
    """The 1-based row number in the file of position ``i`` (of ``rows``, when given)."""
    return int(rows[i] if rows is not None else i) + 1
