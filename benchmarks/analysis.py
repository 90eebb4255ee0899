"""Benchmark: incremental continual-evaluation analysis vs. recomputing from all points.

Run from the repository root:  python benchmarks/analysis.py [--points N] [--stages T]

A run with T stages and T eval sets, every eval set holding N points (default 1,000,000). The
state is filled with all but the last batches; then batches of ``--batch`` points arrive
round-robin and we time ``ContinualState.update`` + ``snapshot()`` per batch against recomputing
every batch function from the full series (given as ready numpy ``(n, 2)`` arrays, i.e. the
cheapest possible recompute: no JSON / DB decoding is counted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.analysis import (  # noqa: E402
    ContinualState,
    avg_min_acc,
    matrix_from_series,
    matrix_metrics,
    min_acc_per_task,
    stability_gaps,
    wc_acc,
)


def recompute(series, bnds):
    R = matrix_from_series(series, bnds)
    return {
        "matrix": R,
        "metrics": matrix_metrics(R),
        "min_acc_per_task": min_acc_per_task(series, bnds),
        "avg_min_acc": avg_min_acc(series, bnds),
        "wc_acc": wc_acc(series, bnds),
        "stability_gaps": stability_gaps(series, bnds),
    }


def make_series(n: int, stages: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1, dtype=np.float64)
    bnds = [int(n * (i + 1) // stages) for i in range(stages)]
    series = []
    for j in range(stages):
        start = 0 if j == 0 else bnds[j - 1]
        learned = 1 / (1 + np.exp(-(steps - start) / (0.02 * n)))
        decay = np.where(steps > bnds[j], np.exp(-(steps - bnds[j]) / (2.0 * n)), 1.0)
        v = 0.1 + 0.8 * learned * decay + rng.normal(0, 0.01, n)
        series.append(np.column_stack([steps, v]))
    return series, bnds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="points per series")
    ap.add_argument("--stages", type=int, default=8, help="stages = eval sets")
    ap.add_argument("--batch", type=int, default=1_000, help="points per incoming batch")
    ap.add_argument("--timed-batches", type=int, default=40, help="timed batches per eval set")
    ap.add_argument("--repeats", type=int, default=5, help="full recomputations to time")
    args = ap.parse_args()
    n, T, B = args.points, args.stages, args.batch

    series, bnds = make_series(n, T)
    tail = args.timed_batches * B
    state = ContinualState(T, bnds)
    t0 = time.perf_counter()
    for j, s in enumerate(series):
        for a in range(0, n - tail, 100_000):
            chunk = s[a : min(a + 100_000, n - tail)]
            state.update(j, chunk[:, 0], chunk[:, 1])
    fill_s = time.perf_counter() - t0

    upd_ms, upd_snap_ms = [], []
    for k in range(args.timed_batches):
        a = n - tail + k * B
        for j, s in enumerate(series):
            chunk = s[a : a + B]
            t0 = time.perf_counter()
            state.update(j, chunk[:, 0], chunk[:, 1])
            t1 = time.perf_counter()
            snap = state.snapshot()
            t2 = time.perf_counter()
            upd_ms.append((t1 - t0) * 1e3)
            upd_snap_ms.append((t2 - t0) * 1e3)

    full_ms = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        expected = recompute(series, bnds)
        full_ms.append((time.perf_counter() - t0) * 1e3)

    snap.pop("exact")
    identical = snap == expected
    med_inc = statistics.median(upd_snap_ms)
    med_full = statistics.median(full_ms)
    print(f"points per series        : {n:,} ({T} eval sets, {T} stages, batch {B:,})")
    print(f"initial fill             : {fill_s:.2f} s ({n * T:,} points)")
    print(f"update only     median ms: {statistics.median(upd_ms):.3f}")
    print(
        f"update+snapshot median ms: {med_inc:.3f} "
        f"(p95 {np.percentile(upd_snap_ms, 95):.3f}, max {max(upd_snap_ms):.3f})"
    )
    print(f"full recompute  median ms: {med_full:.1f} ({args.repeats} runs)")
    print(f"speed-up (recompute / incremental): {med_full / med_inc:,.0f}x")
    print(f"incremental snapshot identical to batch functions: {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
