"""``python -m trainers import``: TensorBoard event files and tables of points (CSV, JSON Lines,
Parquet; long or W&B-style wide) become runs on a real daphne server, with the user's stage
marks; bad input is one line on stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.workers import ROOT

db = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cli(server, token, tmp_path, monkeypatch, capsys):
    """``python -m trainers import ...`` in this process: (exit status, stdout, stderr)."""
    from trainers.cli import main

    monkeypatch.setenv("STAGEWISE_TOKEN", token)
    monkeypatch.setenv("STAGEWISE_SPOOL_DIR", str(tmp_path / "spools"))

    def run(*args: str) -> tuple[int, str, str]:
        status = main(["import", *args, "--report-to", server.url, "--no-progress"])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _stored(run_id: int) -> dict[tuple[str, int], float]:
    from runs.models import MetricPoint

    rows = MetricPoint.objects.filter(series__run_id=run_id)
    return {(k, s): v for k, s, v in rows.values_list("series__key", "step", "value")}


def _stages(run_id: int) -> list[tuple]:
    from runs.models import Run

    run = Run.objects.get(pk=run_id)
    return [(sr.name, sr.start_step, sr.end_step, sr.state)
            for sr in run.stage_runs.order_by("stage_index")]  # fmt: skip


def _run_ids(summary: str) -> dict[str, int]:
    """{run name: run id} from the summary's "NAME: run ID: URL" lines."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S.*): run (\d+): http", summary, re.M)}


# ------------------------------------------------------------------ TensorBoard


def _write_events(logdir, seed: int) -> dict[tuple[str, int], float]:
    """torch's SummaryWriter: three scalar tags (one as a tensor summary), a histogram and
    text that are not scalars. Returns what a float32 reader gives back."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(seed)
    written = {}
    with SummaryWriter(str(logdir)) as w:
        for step in range(100):
            loss, lr = 3.0 - step / 50 + rng.random() / 10, 1e-3 * min(1.0, step / 10)
            w.add_scalar("train/loss", loss, step)
            w.add_scalar("lr", lr, step, new_style=True)  # a tensor summary
            written[("train/loss", step)], written[("lr", step)] = loss, lr
            if step % 10 == 0:
                w.add_scalar("eval/prose/loss", loss + 0.2, step)
                written[("eval/prose/loss", step)] = loss + 0.2
                w.add_histogram("weights", rng.random(16), step)
                w.add_text("note", f"step {step}", step)
    return {k: float(np.float32(v)) for k, v in written.items()}


@db
@pytest.mark.timeout(180)
def test_tensorboard_scalars_become_keys_with_their_steps_and_the_stage_marks(
    server, token, tmp_path
):
    from runs.models import MetricPoint, Run

    written = {"a": _write_events(tmp_path / "tb" / "a", 0),
               "b": _write_events(tmp_path / "tb" / "b", 1)}  # fmt: skip
    env = {**os.environ, "STAGEWISE_TOKEN": token, "STAGEWISE_SPOOL_DIR": str(tmp_path / "s")}
    r = subprocess.run(
        [sys.executable, "-m", "trainers", "import", "tensorboard", str(tmp_path / "tb"),
         "--stage", "0:prose-pt", "--stage", "50:code-cpt", "--report-to", server.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ids = _run_ids(r.stdout)
    assert sorted(ids) == ["tb/a", "tb/b"], r.stdout  # one run per directory of event files
    for name, run_id in ids.items():
        assert _stored(run_id) == written[name[-1]]  # every scalar, exactly as float32
        assert _stages(run_id) == [("prose-pt", 0, 50, "succeeded"),
                                   ("code-cpt", 50, 99, "succeeded")]  # fmt: skip
        run = Run.objects.get(pk=run_id)
        assert run.name == name and run.config["imported_from"]["format"] == "tensorboard"
    assert "3 keys" in r.stdout and "300 points" not in r.stdout and "210 points" in r.stdout
    assert "stages: prose-pt 0..50, code-cpt 50..99" in r.stdout
    from trainers.imports.upload import log_takes_time

    if log_takes_time():  # the events' wall times, when the client passes them on
        times = MetricPoint.objects.filter(series__run_id=ids["tb/a"]).values_list("wall_time")
        assert max(t for (t,) in times) < 2e9 and min(t for (t,) in times) > 1e9


# ------------------------------------------------------------------ tables


def _long_rows() -> list[dict]:
    """Two runs, out of order, one empty value (skipped) and one repeated point (the last
    one is kept)."""
    rows = []
    for run, offset in (("alpha", 0.0), ("beta", 1.0)):
        for step in range(0, 30):
            rows.append({"run": run, "key": "train/loss", "step": step, "value": 3 - step / 10 + offset,
                         "time": 1.7e9 + step})  # fmt: skip
            if step % 10 == 0:
                rows.append({"run": run, "key": "eval/loss", "step": step, "value": offset + step,
                             "time": 1.7e9 + step})  # fmt: skip
    rows.reverse()
    rows.append({"run": "alpha", "key": "eval/loss", "step": 20, "value": None, "time": None})
    rows.append({"run": "beta", "key": "eval/loss", "step": 0, "value": 42.0, "time": None})
    return rows


def _expected(rows: list[dict], run: str) -> dict[tuple[str, int], float]:
    out = {}
    for row in rows:
        if row["run"] == run and row["value"] is not None:
            out[(row["key"], row["step"])] = row["value"]
    return out


def _write(rows: list[dict], path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        pa_csv.write_csv(pa.Table.from_pylist(rows), path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


@db
@pytest.mark.timeout(180)
def test_long_tables_in_csv_jsonl_and_parquet_give_one_run_per_run_value(cli, tmp_path):
    from runs.models import Run

    rows = _long_rows()
    for ext in ("csv", "jsonl", "parquet"):
        path = tmp_path / f"points-{ext}.{ext}"
        _write(rows, path)
        status, out, err = cli("table", str(path), "--stage", "15:sft", "--name", ext)
        assert status == 0, err
        ids = _run_ids(out)
        assert sorted(ids) == [f"{ext}/alpha", f"{ext}/beta"], out
        for run in ("alpha", "beta"):
            run_id = ids[f"{ext}/{run}"]
            assert _stored(run_id) == _expected(rows, run)
            assert _stages(run_id) == [("train", 0, 15, "succeeded"), ("sft", 15, 29, "succeeded")]
            assert Run.objects.get(pk=run_id).config["imported_from"]["run"] == run
        assert (
            "not stored: 1 empty or non-finite value\n" in out
            and "1 value given again later" in out
        )
    assert Run.objects.count() == 6


@db
@pytest.mark.timeout(180)
def test_map_names_the_columns_and_wide_histories_make_a_key_per_column(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    mapped = tmp_path / "renamed.csv"
    mapped.write_text("RunCol,metric,_step,val,ts\n"
                      "r1,loss,0,2.5,2024-05-01T00:00:00Z\nr1,loss,1,2.25,2024-05-01T00:00:01Z\n"
                      "r1,acc,1,0.5,\n")  # fmt: skip
    status, out, err = cli("table", str(mapped), "--map", "run=RunCol,key=metric",
                           "--map", "step=_step,value=val,time=ts", "--prefix", "w/")  # fmt: skip
    assert status == 0, err
    assert _stored(_run_ids(out)["r1"]) == {("w/loss", 0): 2.5, ("w/loss", 1): 2.25,
                                            ("w/acc", 1): 0.5}  # fmt: skip
    # W&B history: _step, W&B's own "_" columns, metrics logged at some steps only, text.
    n = 40
    history = pa.table({
        "_step": list(range(n)), "_runtime": [s * 2.0 for s in range(n)],
        "_timestamp": [1.7e9 + s for s in range(n)],
        "loss": [4.0 - s / 20 for s in range(n)],
        "eval/acc": [s / 100 if s % 10 == 0 else None for s in range(n)],
        "epoch": [s // 20 for s in range(n)], "split": ["train"] * n,
        "bad": [float("nan")] * (n - 1) + [1.0],
    })  # fmt: skip
    pq.write_table(history, tmp_path / "history.parquet")
    status, out, err = cli("table", str(tmp_path / "history.parquet"), "--wide",
                           "--name", "wandb run", "--stage", "0:pt", "--stage", "19:cpt")  # fmt: skip
    assert status == 0, err
    run_id = _run_ids(out)["wandb run"]
    expected = {("loss", s): 4.0 - s / 20 for s in range(n)}
    expected |= {("eval/acc", s): s / 100 for s in range(0, n, 10)}
    expected |= {("epoch", s): float(s // 20) for s in range(n)} | {("bad", n - 1): 1.0}
    assert _stored(run_id) == expected
    assert _stages(run_id) == [("pt", 0, 19, "succeeded"), ("cpt", 19, 39, "succeeded")]
    assert "39 empty or non-finite values" in out


@db
@pytest.mark.timeout(120)
def test_a_neptune_export_is_found_without_a_map(cli, tmp_path):
    """Neptune's Parquet exporter: decimal steps, UTC timestamps, one column per value type
    (rows of other types have no float_value and are skipped)."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = [("RUN-1", "metrics/loss", Decimal(s), t0 + dt.timedelta(seconds=s), 1.0 / (s + 1))
            for s in range(10)]  # fmt: skip
    rows.append(("RUN-1", "sys/name", None, None, None))
    schema = pa.schema([("run_id", pa.string()), ("attribute_path", pa.string()),
                        ("step", pa.decimal128(18, 6)), ("timestamp", pa.timestamp("ms", "UTC")),
                        ("float_value", pa.float64())])  # fmt: skip
    table = pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema)
    pq.write_table(table, tmp_path / "neptune.parquet")
    status, out, err = cli("table", str(tmp_path / "neptune.parquet"), "--stage", "4:decay")
    assert status == 0, err
    run_id = _run_ids(out)["RUN-1"]
    assert _stored(run_id) == {("metrics/loss", s): 1.0 / (s + 1) for s in range(10)}
    assert _stages(run_id) == [("train", 0, 4, "succeeded"), ("decay", 4, 9, "succeeded")]
    status, out, err = cli("table", str(tmp_path / "neptune.parquet"), "--team", "no-such-team")
    assert status == 1 and out == "", (out, err)  # the server refuses: no run, one line
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-such-team" in errors[0] and "Traceback" not in err


# ------------------------------------------------------------------ stage marks, bad input


def test_stage_marks_without_points_create_no_stage():
    from trainers.imports.common import Mark
    from trainers.imports.upload import plan_stages

    steps = np.array([0, 0, 5, 6, 100, 101])
    marks = [Mark(0, "a"), Mark(10, "b"), Mark(20, "c"), Mark(101, "d")]
    plan = plan_stages(marks, steps)
    assert plan.stages == [("a", 0, 0), ("c", 20, 4)]  # b: no point before c; d: none after
    assert plan.empty == [Mark(10, "b"), Mark(101, "d")]
    assert plan_stages([Mark(5, "x")], steps).stages == [("train", 0, 0), ("x", 5, 3)]
    assert plan_stages([], steps).stages == [("train", 0, 0)]


def _bad_inputs(tmp) -> list[tuple[list[str], str]]:
    (tmp / "points.xlsx").write_text("x")
    (tmp / "nokey.csv").write_text("run,step,value\na,1,2.0\n")
    (tmp / "text-step.csv").write_text("key,step,value\nloss,1,2.0\nloss,ten,3.0\n")
    (tmp / "half-step.jsonl").write_text('{"key": "l", "step": 1.5, "value": 1}\n')
    (tmp / "ok.csv").write_text("key,step,value\nloss,1,2.0\n")
    (tmp / "empty-logs").mkdir()
    (tmp / "broken.jsonl").write_text('{"key": "l", "step": 1, "value": 1}\n{"key": \n')
    return [
        (["table", str(tmp / "missing.csv")], "no such file"),
        (["table", str(tmp / "points.xlsx")], "unknown extension '.xlsx'"),
        (["table", str(tmp / "nokey.csv")], "no key column"),
        (["table", str(tmp / "ok.csv"), "--map", "key=metric"], "no column 'metric'"),
        (["table", str(tmp / "ok.csv"), "--map", "colour=x"], "the roles are"),
        (["table", str(tmp / "text-step.csv")], "'ten' in row 2 is not a number"),
        (["table", str(tmp / "half-step.jsonl")], "1.5 in row 1 is not a step"),
        (["table", str(tmp / "broken.jsonl")], "not JSON at line 2"),
        (["table", str(tmp / "ok.csv"), "--stage", "600"], "expected STEP:NAME"),
        (["table", str(tmp / "ok.csv"), "--stage", "x:pt"], "expected STEP:NAME"),
        (["table", str(tmp / "ok.csv"), "--stage", "5:a", "--stage", "5:b"], "two stages"),
        (["tensorboard", str(tmp / "empty-logs")], "no TensorBoard event files"),
        (["tensorboard", str(tmp / "nowhere")], "no such file or directory"),
    ]


def test_bad_input_is_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    from trainers.cli import main

    monkeypatch.setenv("STAGEWISE_TOKEN", "not-used")
    for args, message in _bad_inputs(tmp_path):
        status = main(["import", *args, "--report-to", "http://127.0.0.1:9"])
        out, err = capsys.readouterr()
        assert status == 2, (args, err)
        assert err.startswith("error:") and err.count("\n") == 1 and message in err, (args, err)
    monkeypatch.delenv("STAGEWISE_TOKEN")
    assert main(["import", "table", str(tmp_path / "ok.csv"), "--report-to", "http://x"]) == 2
    assert "no API token" in capsys.readouterr().err
