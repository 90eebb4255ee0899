"""Metric ingest throughput: ingest_points vs POST /api/runs/{id}/metrics/ vs MLflow log_batch.

Run: ``.venv/bin/python benchmarks/ingest.py`` (see benchmarks/README.md "## Ingest").
Not part of the test suite. Starts its own embedded Postgres/Redis (throw-away data dir)
unless DATABASE_URL and REDIS_URL are both set, a daphne server and an ``mlflow server``
(Postgres backend store, database ``mlflow`` on the same server); all are stopped at exit.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from dataclasses import dataclass

from common import (
    MLFLOW_MAX_METRICS_PER_BATCH,
    Subprocs,
    machine,
    make_run,
    point_counts,
    setup_django,
    table,
)

KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s")


def make_batches(n_batches: int, batch: int, start_step: int = 0) -> list[list[tuple]]:
    """Batches of ``batch`` points over len(KEYS) keys, steps continuing across batches."""
    per_key = batch // len(KEYS)
    out, step = [], start_step
    for _ in range(n_batches):
        rows = []
        for s in range(step, step + per_key):
            for j, k in enumerate(KEYS):
                rows.append((k, s, 1.0 / (s + 1) + j, 1_700_000_000.0 + s * 0.01))
        out.append(rows)
        step += per_key
    return out


def bench_direct(run_id: int, batches: list[list[tuple]]) -> float:
    from runs.services.ingest import IngestPoint, ingest_points

    t0 = time.perf_counter()
    n = 0
    for rows in batches:
        pts = [IngestPoint(k, s, v, t) for k, s, v, t in rows]
        n += ingest_points(run_id=run_id, points=pts)
    return n / (time.perf_counter() - t0)


def bench_http(base: str, token: str, run_id: int, batches: list[list[tuple]]) -> float:
    import httpx

    url = f"{base}/api/runs/{run_id}/metrics/"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    with httpx.Client(headers=headers, timeout=120) as client:
        t0 = time.perf_counter()
        n = 0
        for rows in batches:  # JSON encoding is counted, as MLflow's client encoding is
            body = json.dumps(
                {"points": [{"key": k, "step": s, "value": v, "time": t} for k, s, v, t in rows]}
            )
            r = client.post(url, content=body)
            r.raise_for_status()
            n += r.json()["accepted"]
        return n / (time.perf_counter() - t0)


def bench_mlflow(tracking_uri: str, batches: list[list[tuple]]) -> float:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.create_experiment(f"bench-ingest-{time.time_ns()}")
    run_id = client.create_run(exp).info.run_id
    metric_batches = []
    for rows in batches:
        ms = [Metric(k, v, int(t * 1000), s) for k, s, v, t in rows]
        for i in range(0, len(ms), MLFLOW_MAX_METRICS_PER_BATCH):
            metric_batches.append(ms[i : i + MLFLOW_MAX_METRICS_PER_BATCH])
    client.log_batch(run_id, metrics=metric_batches[0])  # warm-up (connection, first insert)
    t0 = time.perf_counter()
    n = 0
    for ms in metric_batches[1:]:
        client.log_batch(run_id, metrics=ms)
        n += len(ms)
    rate = n / (time.perf_counter() - t0)
    client.set_terminated(run_id)
    return rate


@dataclass
class Results:
    """Points/s of each path, and the (points, rollup rows) of both runs around the re-ingest."""

    direct: float
    http: float
    again_direct: float
    again_http: float
    before: tuple[int, int]
    after: tuple[int, int]
    before_h: tuple[int, int]
    after_h: tuple[int, int]
    mlflow: float | None = None
    concurrent: dict[str, Concurrent] | None = None  # web tier -> the concurrent case


@dataclass
class Concurrent:
    """Many writers at once: aggregate points/s, request latency, points lost."""

    points_per_s: float
    p50_ms: float
    p99_ms: float
    lost: int


def bench_concurrent(base: str, writers: int, batches: int, batch: int) -> Concurrent:
    """``writers`` threads, each posting ``batches`` batches of ``batch`` points to a run of
    its own at once (bodies encoded beforehand: the server is measured, not the client)."""
    import threading

    import httpx

    runs = [make_run(f"bench-conc-{i}") for i in range(writers)]
    bodies = [
        json.dumps(
            {"points": [{"key": k, "step": s, "value": v, "time": t} for k, s, v, t in rows]}
        )
        for rows in make_batches(batches, batch)
    ]
    latencies: list[float] = []
    accepted = [0] * writers
    start = threading.Barrier(writers + 1)

    def write(i: int) -> None:
        run, token = runs[i]
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        with httpx.Client(headers=headers, timeout=120) as client:
            client.get(f"{base}/api/runs/{run.pk}/")  # connection up before the clock starts
            start.wait()
            for body in bodies:
                t0 = time.perf_counter()
                r = client.post(f"{base}/api/runs/{run.pk}/metrics/", content=body)
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                accepted[i] += r.json()["accepted"]

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    expected = batches * (batch // len(KEYS)) * len(KEYS)
    stored = sum(point_counts(run.pk)[0] for run, _ in runs)
    lat = sorted(x * 1000 for x in latencies)
    return Concurrent(
        points_per_s=sum(accepted) / elapsed,
        p50_ms=lat[len(lat) // 2],
        p99_ms=lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
        lost=writers * expected - stored,
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=10_000, help="points per Stagewise batch")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per Stagewise path")
    ap.add_argument("--mlflow-points", type=int, default=100_000, help="points logged to MLflow")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--writers", type=int, default=20, help="concurrent writers (0: skip)")
    ap.add_argument("--writer-batches", type=int, default=10, help="batches per writer")
    ap.add_argument("--writer-batch", type=int, default=1_000, help="points per writer batch")
    ap.add_argument(
        "--web-processes", type=int, default=os.cpu_count() or 2, help="multi-process web tier"
    )
    ap.add_argument(
        "--no-freeze", action="store_true", help="leave the input batches to the garbage collector"
    )
    return ap.parse_args()


def bench_stagewise(base: str, args: argparse.Namespace) -> Results:
    """Both Stagewise paths, then the same batches again (idempotent re-ingest)."""
    run_direct, _ = make_run("bench-direct")
    run_http, token = make_run("bench-http")
    # Warm-up: one batch per path (temp table creation, server import, plan caches), into
    # runs of its own so that the timed batches start new series.
    warm = make_batches(1, args.batch)
    bench_direct(make_run("bench-warm-direct")[0].pk, warm)
    bench_http(base, token, make_run("bench-warm-http")[0].pk, warm)

    data = make_batches(args.batches, args.batch)
    # The pre-built batches are ~10 objects per point; without this, every garbage
    # collection during the timed loops would walk all of them (a benchmark artefact: a
    # producer does not hold its whole history in memory). README reports both.
    if not args.no_freeze:
        gc.freeze()
    direct = bench_direct(run_direct.pk, data)
    http = bench_http(base, token, run_http.pk, data)

    # Idempotent re-ingest: the same batches again, same (key, step) → replace, no new rows.
    before = point_counts(run_direct.pk)
    again_direct = bench_direct(run_direct.pk, data)
    after = point_counts(run_direct.pk)
    before_h = point_counts(run_http.pk)
    again_http = bench_http(base, token, run_http.pk, data)
    after_h = point_counts(run_http.pk)
    expected = args.batches * args.batch
    assert before[0] == expected, (before, expected)
    assert before == after, f"re-ingest changed row counts: {before} -> {after}"
    assert before_h == after_h, f"re-ingest over HTTP changed counts: {before_h} -> {after_h}"
    return Results(direct, http, again_direct, again_http, before, after, before_h, after_h)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def report(args: argparse.Namespace, r: Results) -> None:
    direct, http, again_direct, again_http = r.direct, r.http, r.again_direct, r.again_http
    rows = [
        ("ingest_points (direct)", f"{direct:,.0f}", ">= 200,000", "PASS" if direct >= 2e5 else "MISS", "-"),
        ("POST /metrics/ (HTTP, daphne)", f"{http:,.0f}", ">= 100,000", "PASS" if http >= 1e5 else "MISS", ratio(http, direct) + " of direct"),
        ("re-ingest, ingest_points", f"{again_direct:,.0f}", "rows unchanged", "PASS", ratio(again_direct, direct) + " of first"),
        ("re-ingest, POST /metrics/", f"{again_http:,.0f}", "rows unchanged", "PASS", ratio(again_http, http) + " of first"),
    ]  # fmt: skip
    mlflow_rate = r.mlflow
    if mlflow_rate:
        ok = http >= 10 * mlflow_rate
        rows.append(("MLflow log_batch (1,000/call)", f"{mlflow_rate:,.0f}", "-", "-", "1.0x"))
        rows.append(("POST /metrics/ vs MLflow", ratio(http, mlflow_rate), ">= 10x", "PASS" if ok else "MISS", ""))  # fmt: skip
        rows.append(("ingest_points vs MLflow", ratio(direct, mlflow_rate), "-", "-", ""))
    print(
        f"\n{args.batches} timed batches x {args.batch:,} points ({len(KEYS)} keys) per "
        f"Stagewise path; MLflow: {args.mlflow_points:,} points in calls of "
        f"{MLFLOW_MAX_METRICS_PER_BATCH:,}\n"
    )
    print(table(rows, ("path", "points/s", "target", "met", "ratio")))
    if r.concurrent:
        print(
            f"\nconcurrent: {args.writers} writers x {args.writer_batches} batches of "
            f"{args.writer_batch:,} points, each to a run of its own\n"
        )
        one = r.concurrent["1 daphne process"].points_per_s
        crows = [
            (tier, f"{c.points_per_s:,.0f}", f"{c.p50_ms:.0f}", f"{c.p99_ms:.0f}", str(c.lost),
             ratio(c.points_per_s, one))
            for tier, c in r.concurrent.items()
        ]  # fmt: skip
        print(table(crows, ("web tier", "points/s", "p50 ms", "p99 ms", "lost", "vs 1 process")))
    print(
        f"\nrow counts (points, rollup rows) direct run: before re-ingest {r.before}, after "
        f"{r.after}; HTTP run: before {r.before_h}, after {r.after_h}"
    )


def main() -> None:
    args = parse_args()

    print(f"machine: {machine()}")
    setup_django()
    procs = Subprocs()
    try:
        single = procs.daphne()
        results = bench_stagewise(single, args)
        if args.writers:
            many = procs.daphne(processes=args.web_processes)
            tiers = {"1 daphne process": single, f"{args.web_processes} processes": many}
            results.concurrent = {
                tier: bench_concurrent(url, args.writers, args.writer_batches, args.writer_batch)
                for tier, url in tiers.items()
            }
        # MLflow's server is started only now: on a small machine its background work would
        # otherwise take CPU from the Stagewise measurements.
        if not args.no_mlflow:
            ml = procs.mlflow()
            n_ml = max(args.mlflow_points // args.batch, 1)
            results.mlflow = bench_mlflow(ml, make_batches(n_ml, args.batch))
    finally:
        procs.stop()
    report(args, results)


if __name__ == "__main__":
    main()
