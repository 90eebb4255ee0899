"""Chart reads of one 1,000,000-point series: rollup window vs all raw points vs MLflow.

Run: ``.venv/bin/python benchmarks/read.py`` (see benchmarks/README.md "## Read").
Not part of the test suite. Same servers as benchmarks/ingest.py, all stopped at exit.

Measured:
* ``GET /api/runs/{id}/series/?keys=K&max_points=1000`` over HTTP (daphne), median of N calls;
* all raw points over HTTP: the API caps ``max_points`` at 100,000 and answers larger windows
  from rollups, so the only raw read over HTTP is the catch-up form ``after_step=`` paged by
  its 50,000-point limit (20 requests for 1M points), timed end to end;
* all raw points in-process: ``series_raw()`` (SQL, psycopg) + ``json.dumps`` of the result;
* MLflow ``MlflowClient.get_metric_history`` of the same series (logged with log_batch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import (
    MLFLOW_MAX_METRICS_PER_BATCH,
    Subprocs,
    machine,
    make_run,
    setup_django,
    table,
)

KEY = "train/loss"


def value(step: int) -> float:
    return 2.0 / (1 + step * 1e-4) + 0.01 * ((step * 7919) % 101) / 101


def ingest_series(run_id: int, n: int, batch: int) -> float:
    from runs.services.ingest import IngestPoint, ingest_points

    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        pts = [
            IngestPoint(KEY, s, value(s), 1_700_000_000.0 + s)
            for s in range(lo, min(n, lo + batch))
        ]
        ingest_points(run_id=run_id, points=pts, publish=False)
    return time.perf_counter() - t0


def timed(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=50, help="timed window reads")
    ap.add_argument("--raw-calls", type=int, default=5, help="timed full raw reads")
    ap.add_argument("--mlflow-points", type=int, default=None, help="default: --points")
    ap.add_argument("--mlflow-calls", type=int, default=3)
    ap.add_argument("--no-mlflow", action="store_true")
    return ap.parse_args()


def bench_window(client, url: str, calls: int) -> tuple[list[float], int, int]:
    """The chart's read, a 1,000-point window (rollups), timed after 5 warm-up calls:
    (timings, points in the window, its rollup level)."""

    def window() -> dict:
        r = client.get(url, params={"keys": KEY, "max_points": 1000})
        r.raise_for_status()
        return r.json()

    w = window()["series"][KEY]
    for _ in range(5):
        window()  # warm-up
    return timed(window, calls), len(w["steps"]), w["level"]


def bench_raw_http(client, url: str, points: int, calls: int) -> list[float]:
    """All raw points over HTTP: the after_step catch-up form, page by page."""
    from runs.selectors.series import MAX_RAW_AFTER

    def raw_http() -> int:
        after, n = -1, 0
        while True:
            r = client.get(url, params={"keys": KEY, "after_step": after})
            r.raise_for_status()
            steps = r.json()["series"][KEY]["steps"]
            n += len(steps)
            if len(steps) < MAX_RAW_AFTER:
                return n
            after = steps[-1]

    assert raw_http() == points
    return timed(raw_http, calls)


def bench_raw_sql(run_id: int, points: int, calls: int) -> list[float]:
    """All raw points in-process: series_raw (SQL) and the JSON encoding of its result."""
    from runs.selectors.series import series_raw

    def raw_sql() -> None:
        steps, values = series_raw(run_id=run_id, key=KEY, min_step=0, max_step=2**62)
        assert len(steps) == points
        json.dumps({"steps": steps, "values": values})

    return timed(raw_sql, calls)


def bench_mlflow(tracking_uri: str, n_ml: int, calls: int) -> tuple[float, list[float]]:
    """Log the series to MLflow with log_batch, then time get_metric_history of it: (seconds
    the logging took, timings of the reads)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    ml = MlflowClient(tracking_uri=tracking_uri)
    ml_run = ml.create_run(ml.create_experiment("bench-read")).info.run_id
    t0 = time.perf_counter()
    for lo in range(0, n_ml, MLFLOW_MAX_METRICS_PER_BATCH):
        hi = min(n_ml, lo + MLFLOW_MAX_METRICS_PER_BATCH)
        ms = [Metric(KEY, value(s), 1_700_000_000_000 + s * 1000, s) for s in range(lo, hi)]
        ml.log_batch(ml_run, metrics=ms)
        if lo and lo % 100_000 == 0:
            print(f"  MLflow: {lo:,} points logged, {time.perf_counter() - t0:.0f} s")
    log_s = time.perf_counter() - t0

    def ml_hist() -> None:
        h = ml.get_metric_history(ml_run, KEY)
        assert len(h) == n_ml, len(h)

    return log_s, timed(ml_hist, calls)


def stats(xs: list[float]) -> tuple[str, str, str]:
    """(median, p95, calls) of timings in ms, as table cells."""
    q = statistics.quantiles(xs, n=20) if len(xs) >= 2 else xs * 19
    return f"{statistics.median(xs):,.1f}", f"{q[-1]:,.1f}", str(len(xs))


def report(args: argparse.Namespace, res: dict, n_ml: int, t_ingest: float) -> None:
    from runs.selectors.series import MAX_RAW_AFTER

    med_w = statistics.median(res["window"])
    rows = [
        (f"GET series max_points=1000 ({res['window_points']} pts, level {res['window_level']})",
         *stats(res["window"]), "1x", "<= 20 ms: " + ("PASS" if med_w <= 20 else "MISS")),
        (f"all raw over HTTP (after_step, {args.points // MAX_RAW_AFTER} pages)",
         *stats(res["raw_http"]), f"{statistics.median(res['raw_http']) / med_w:,.0f}x slower",
         ">= 10x: " + ("PASS" if statistics.median(res["raw_http"]) >= 10 * med_w else "MISS")),
        ("all raw in-process (series_raw SQL + json.dumps)", *stats(res["raw_sql"]),
         f"{statistics.median(res['raw_sql']) / med_w:,.0f}x slower",
         ">= 10x: " + ("PASS" if statistics.median(res["raw_sql"]) >= 10 * med_w else "MISS")),
    ]  # fmt: skip
    if "ml_hist" in res:
        rows.append(
            (f"MLflow get_metric_history ({n_ml:,} pts)", *stats(res["ml_hist"]),
             f"{statistics.median(res['ml_hist']) / med_w:,.0f}x slower", "-")
        )  # fmt: skip
    print()
    print(table(rows, ("read", "median ms", "p95 ms", "calls", "vs window", "target")))
    if "ml_log_s" in res:
        print(
            f"\nMLflow log_batch of {n_ml:,} points (1,000 per call): {res['ml_log_s']:.0f} s "
            f"({n_ml / res['ml_log_s']:,.0f} points/s); Stagewise ingest_points of "
            f"{args.points:,}: {t_ingest:.1f} s"
        )


def main() -> None:
    args = parse_args()
    n_ml = args.mlflow_points or args.points

    import httpx

    print(f"machine: {machine()}")
    setup_django()
    procs = Subprocs()
    res: dict[str, object] = {}
    try:
        base = procs.daphne()
        run, token = make_run("bench-read")
        t_ingest = ingest_series(run.pk, args.points, 10_000)
        print(f"ingested {args.points:,} points via ingest_points in {t_ingest:.1f} s")

        client = httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=300)
        url = f"{base}/api/runs/{run.pk}/series/"
        res["window"], res["window_points"], res["window_level"] = bench_window(
            client, url, args.calls
        )
        res["raw_http"] = bench_raw_http(client, url, args.points, args.raw_calls)
        res["raw_sql"] = bench_raw_sql(run.pk, args.points, args.raw_calls)
        client.close()

        if not args.no_mlflow:
            res["ml_log_s"], res["ml_hist"] = bench_mlflow(procs.mlflow(), n_ml, args.mlflow_calls)
    finally:
        procs.stop()
    report(args, res, n_ml, t_ingest)


if __name__ == "__main__":
    main()
