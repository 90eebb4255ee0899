"""The compare page's data, 20 runs x 4 series of 100,000 points: one bulk request against
one request per run and series.

Run: ``.venv/bin/python benchmarks/compare.py`` (see benchmarks/README.md "## Compare").
Not part of the test suite. Same servers as benchmarks/read.py, all stopped at exit.

Measured over HTTP (daphne, token auth), in the same process and on the same data, after
warm-up calls:
* ``GET /api/series/?runs=<20 ids>&keys=<4 keys>&max_points=1500&lineage=true``, the compare
  page's one request (median of N calls);
* the same lines as 80 ``GET /api/runs/{id}/series/?keys=K&max_points=1500&lineage=true``
  requests, one after another and 6 at a time (a browser's connections per host);
* the bulk read in-process (``series_bulk``, no HTTP, no JSON) and its query count.
Every bulk line is checked equal to the single-run endpoint's answer for it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from common import Subprocs, machine, make_run, setup_django, table
from read import timed as read_timed

KEYS = ["train/loss", "lr", "eval/prose/loss", "eval/code/loss"]
MAX_POINTS = 1500  # frontend/static/frontend/js/compare_store.js MAX_POINTS


def value(run: int, key: int, step: int) -> float:
    return (2.0 + 0.1 * key) / (1 + step * 1e-4) + 0.01 * ((step * 7919 + run * 31) % 101) / 101


def ingest(run_ids: list[int], points: int, batch: int) -> float:
    from runs.services.ingest import IngestPoint, ingest_points

    t0 = time.perf_counter()
    for r, run_id in enumerate(run_ids):
        for lo in range(0, points, batch):
            steps = range(lo, min(points, lo + batch))
            pts = [IngestPoint(k, s, value(r, ki, s), 1_700_000_000.0 + s)
                   for ki, k in enumerate(KEYS) for s in steps]  # fmt: skip
            ingest_points(run_id=run_id, points=pts, publish=False)
    return time.perf_counter() - t0


def timed(fn, calls: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    return read_timed(fn, calls)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--points", type=int, default=100_000, help="per series")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=6, help="connections of the per-line form")
    return ap.parse_args()


class Reads:
    """The two ways of reading the page's lines over HTTP."""

    def __init__(self, base: str, token: str, run_ids: list[int], parallel: int):
        import httpx

        self.base, self.run_ids, self.parallel = base, run_ids, parallel
        headers = {"Authorization": f"Token {token}"}
        limits = httpx.Limits(max_connections=parallel)
        self.client = httpx.Client(headers=headers, timeout=300, limits=limits)
        self.pool = ThreadPoolExecutor(parallel)

    def bulk(self) -> dict:
        params = {"runs": ",".join(map(str, self.run_ids)), "keys": ",".join(KEYS),
                  "max_points": MAX_POINTS, "lineage": "true"}  # fmt: skip
        r = self.client.get(f"{self.base}/api/series/", params=params)
        r.raise_for_status()
        return r.json()

    def one(self, run_id: int, key: str) -> dict:
        params = {"keys": key, "max_points": MAX_POINTS, "lineage": "true"}
        r = self.client.get(f"{self.base}/api/runs/{run_id}/series/", params=params)
        r.raise_for_status()
        return r.json()["series"][key]

    def per_line(self) -> list[dict]:
        return [self.one(r, k) for r in self.run_ids for k in KEYS]

    def per_line_parallel(self) -> list[dict]:
        jobs = [(r, k) for r in self.run_ids for k in KEYS]
        return list(self.pool.map(lambda rk: self.one(*rk), jobs))

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


def check_equal(reads: Reads) -> int:
    """Every bulk line equals the single-run endpoint's; returns the points in the answer."""
    body = reads.bulk()
    assert not body["missing"] and body["max_points"] == MAX_POINTS, body["missing"]
    singles = iter(reads.per_line())
    n = 0
    for entry in body["runs"]:
        for key in KEYS:
            line = entry["series"][key]
            assert line == next(singles), (entry["run"], key)
            n += len(line["steps"])
    return n


def in_process(run_ids: list[int], calls: int) -> tuple[list[float], int]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.selectors.series import series_bulk

    user = get_user_model().objects.get(username="bench")

    def read() -> dict:
        return series_bulk(user=user, run_ids=run_ids, keys=KEYS, max_points=MAX_POINTS,
                           lineage=True)  # fmt: skip

    with CaptureQueriesContext(connection) as ctx:
        read()
    return timed(read, calls), len(ctx.captured_queries)


def stats(xs: list[float]) -> tuple[str, str]:
    q = statistics.quantiles(xs, n=20) if len(xs) >= 2 else xs * 19
    return f"{statistics.median(xs):,.1f}", f"{q[-1]:,.1f}"


def report(args, res: dict) -> None:
    bulk = statistics.median(res["bulk"])
    lines = args.runs * len(KEYS)
    rows = [
        (f"bulk: 1 request, {lines} lines ({res['points']:,} points)", *stats(res["bulk"]),
         "1x", "< 300 ms: " + ("PASS" if bulk < 300 else "MISS")),
        (f"per line: {lines} requests, one after another", *stats(res["seq"]),
         f"{statistics.median(res['seq']) / bulk:,.1f}x slower",
         ">= 5x: " + ("PASS" if statistics.median(res["seq"]) >= 5 * bulk else "MISS")),
        (f"per line: {lines} requests, {args.parallel} at a time", *stats(res["par"]),
         f"{statistics.median(res['par']) / bulk:,.1f}x slower",
         ">= 5x: " + ("PASS" if statistics.median(res["par"]) >= 5 * bulk else "MISS")),
        (f"bulk in-process (series_bulk, {res['queries']} queries)", *stats(res["inproc"]),
         f"{statistics.median(res['inproc']) / bulk:.2f}x", "-"),
    ]  # fmt: skip
    print()
    print(table(rows, ("read", "median ms", "p95 ms", "vs bulk", "target")))


def main() -> None:
    args = parse_args()
    print(f"machine: {machine()}")
    setup_django()
    procs = Subprocs()
    res: dict = {}
    try:
        base = procs.daphne()
        made = [make_run(f"bench-compare-{i}") for i in range(args.runs)]
        run_ids, token = [r.pk for r, _ in made], made[0][1]
        t = ingest(run_ids, args.points, 10_000)
        total = args.runs * len(KEYS) * args.points
        print(f"ingested {total:,} points via ingest_points in {t:.1f} s")
        reads = Reads(base, token, run_ids, args.parallel)
        res["points"] = check_equal(reads)
        res["bulk"] = timed(reads.bulk, args.calls)
        res["seq"] = timed(reads.per_line, max(3, args.calls // 4))
        res["par"] = timed(reads.per_line_parallel, max(3, args.calls // 4))
        reads.close()
        res["inproc"], res["queries"] = in_process(run_ids, args.calls)
    finally:
        procs.stop()
    report(args, res)


if __name__ == "__main__":
    main()
