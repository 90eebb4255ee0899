"""Cost of ``trainers.client`` ``run.log()`` on the training thread.

Run: ``.venv/bin/python benchmarks/client.py`` (see benchmarks/README.md "## Client").
Not part of the test suite. Starts a throw-away embedded Postgres/Redis and daphne, creates a
free-form run, then times, interleaved in rounds, a loop of ``--calls`` steps that computes
8 metric values (the baseline) and the same loop with ``run.log(metrics, step=step)``. The
per-call cost is the logging loop's time per call minus the baseline's median per call;
every logged point must be stored exactly once at the end.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from common import Subprocs, machine, make_run, point_counts, setup_django, table

KEYS = ("train/loss", "lr", "train/grad_norm", "train/epoch", "train/tokens",
        "eval/prose/loss", "eval/code/loss", "train/tokens_per_s")  # fmt: skip


def metrics_at(step: int) -> dict[str, float]:
    return {k: math.sin(step * 0.001 + j) + 2.0 for j, k in enumerate(KEYS)}


def time_loop(calls: int, first: int, log) -> list[float]:
    """Seconds per call of ``calls`` loop iterations, each building the metrics dict and
    (when ``log`` is given) logging it."""
    out = []
    clock = time.perf_counter
    for step in range(first, first + calls):
        t0 = clock()
        m = metrics_at(step)
        if log is not None:
            log(m, step=step)
        out.append(clock() - t0)
    return out


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000, help="log() calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(machine())
    setup_django()
    procs = Subprocs()
    url = procs.daphne()
    _, token = make_run("bench-client-token")
    from trainers import client

    run = client.init(url=url, token=token, name="bench-client")
    run.stage("bench")
    base: list[float] = []
    logged: list[float] = []
    step = 0
    for _ in range(args.rounds):
        base += time_loop(args.calls, 10**9, None)  # the same work, nothing logged
        logged += time_loop(args.calls, step, run.log)
        step += args.calls
    t0 = time.perf_counter()
    run.finish()
    drain = time.perf_counter() - t0
    total = point_counts(run.id)[0]  # (run, key, step) is unique: none is stored twice
    expected = step * len(KEYS)
    b50 = statistics.median(base)
    rows = [
        (
            "loop without logging (baseline)",
            f"{b50 * 1e6:.2f}",
            f"{pct(base, 0.99) * 1e6:.2f}",
            "-",
        ),
        (
            "loop with run.log(), 8 keys",
            f"{statistics.median(logged) * 1e6:.2f}",
            f"{pct(logged, 0.99) * 1e6:.2f}",
            "-",
        ),  # fmt: skip
        (
            "run.log() itself (loop minus baseline median)",
            f"{(statistics.median(logged) - b50) * 1e6:.2f}",
            f"{(pct(logged, 0.99) - b50) * 1e6:.2f}",
            "PASS" if statistics.median(logged) - b50 < 20e-6 else "MISS",
        ),  # fmt: skip
    ]
    print(table(rows, ("per call", "median µs", "p99 µs", "< 20 µs median")))
    print(f"{step:,} calls, {expected:,} points logged; stored {total:,}; "
          f"finish() drained the rest in {drain:.2f} s")  # fmt: skip
    ok = total == expected
    print("all logged points stored exactly once:", ok)
    procs.stop()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
