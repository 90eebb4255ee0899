"""Live push under load: N runs each logging R points/s through ``ingest_points`` (one batch
every 100 ms), one websocket client per run on a real daphne server.

    python benchmarks/live.py [--runs 10] [--rate 500] [--seconds 60] [--batch-ms 100]

Reports the latency from the ``ingest_points`` call to the websocket receipt (p50/p95/p99/max)
next to the ``ingest_points`` call time itself (the baseline, measured in the same run), and
checks that every client ends with every point exactly once after its ``after_step``
catch-up (REST API). Uses the embedded Postgres/Redis of ``$STAGEWISE_DATA_DIR`` (or
``DATABASE_URL``/``REDIS_URL``); its rows are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

import websockets  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402

from runs.models import Membership, Queue, Run, Team  # noqa: E402
from runs.services.ingest import IngestPoint, ingest_points  # noqa: E402

KEY = "bench/loss"
LOG = Path(os.environ.get("TMPDIR", "/tmp")) / "stagewise-bench-live-daphne.log"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daphne(port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": settings.DATABASE_URL, "REDIS_URL": settings.REDIS_URL,
           "STAGEWISE_DATA_DIR": str(settings.STAGEWISE_DATA_DIR),
           "SESSION_COOKIE_SECURE": "false"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "webapp.asgi:application"],  # fmt: skip
        cwd=ROOT, env=env, stdout=open(LOG, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("daphne did not start")


class Client:
    """What the browser does: keep the last step, dedupe by step, catch up after a gap."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.steps: set[int] = set()
        self.last = -1
        self.received_dupes = 0
        self.gaps = 0
        self.latencies: list[float] = []
        self.push: list[float] = []  # message's sent_at (inside the ingest call) -> receipt

    def take(self, steps, values) -> None:
        for s in steps:
            if s in self.steps:
                self.received_dupes += 1
            self.steps.add(s)
            self.last = max(self.last, s)


def catch_up(base: str, cookie: str, client: Client) -> None:
    while True:
        url = f"{base}/api/runs/{client.run_id}/series/?keys={KEY}&after_step={client.last}"
        req = urllib.request.Request(url, headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=30) as resp:
            s = json.load(resp)["series"][KEY]
        if not s["steps"]:
            return
        client.take(s["steps"], s["values"])


async def listen(base, ws_base, cookie, client, sent, stop: asyncio.Event, ready) -> None:
    url = f"{ws_base}/ws/runs/{client.run_id}/"
    async with websockets.connect(
        url, additional_headers={"Cookie": cookie, "Origin": base}, max_size=None
    ) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        ready()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            t = time.time()
            msg = json.loads(raw)
            if msg.get("type") != "run.points":
                continue
            t0 = sent.get((client.run_id, msg["min_step"]))
            if t0 is not None:
                client.latencies.append(t - t0)
            client.push.append(t - msg["sent_at"])
            if msg["min_step"] > client.last + 1:
                client.gaps += 1
                await asyncio.to_thread(catch_up, base, cookie, client)
            s = msg["series"][KEY]
            client.take(s["steps"], s["values"])


def produce(run_id: int, per_batch: int, batches: int, period: float, sent, call_times, t_start):
    from django.db import close_old_connections

    step = 0
    for b in range(batches):
        target = t_start + b * period
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        pts = [IngestPoint(KEY, step + i, 1.0 / (step + i + 1)) for i in range(per_batch)]
        t0 = time.time()
        sent[(run_id, step)] = t0
        ingest_points(run_id=run_id, points=pts)
        call_times.append((t0, time.time() - t0))
        step += per_batch
    close_old_connections()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rate", type=int, default=500, help="points per second per run")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--batch-ms", type=float, default=100)
    return ap.parse_args()


def create_runs(n: int) -> tuple[Team, object, Queue, list[Run]]:
    """A team of its own, a member, a paused queue and ``n`` running runs."""
    tag = uuid.uuid4().hex[:8]
    team = Team.objects.create(name=f"bench-live-{tag}", slug=f"bench-live-{tag}")
    user = get_user_model().objects.create_user(f"bench-live-{tag}", password=uuid.uuid4().hex)
    Membership.objects.create(user=user, team=team, role="member")
    queue = Queue.objects.create(name=f"bench-live-{tag}", paused=True)
    runs = [Run.objects.create(team=team, name=f"bench {i}", plan={}, queue=queue,
                               state="running") for i in range(n)]  # fmt: skip
    return team, user, queue, runs


def session_cookie(user) -> str:
    """A logged-in browser's session cookie for ``user``."""
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def start_listeners(base, ws_base, cookie, clients, sent):
    """One websocket per client on a thread of its own, once all are connected: (the thread,
    a callable that stops them)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    connected = threading.Semaphore(0)

    async def all_clients():
        await asyncio.gather(*(listen(base, ws_base, cookie, c, sent, stop,
                                      connected.release) for c in clients))  # fmt: skip

    listener = threading.Thread(target=loop.run_until_complete, args=(all_clients(),))
    listener.start()
    for _ in clients:
        if not connected.acquire(timeout=30):
            raise SystemExit("websocket clients did not connect")
    return listener, lambda: loop.call_soon_threadsafe(stop.set)


def produce_all(runs, per_batch, batches, period, sent, call_times) -> float:
    """Every run's producer at once; the seconds from their common start to the last batch."""
    t_start = time.time() + 0.2
    producers = [
        threading.Thread(
            target=produce, args=(r.pk, per_batch, batches, period, sent, call_times, t_start)
        )
        for r in runs
    ]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    return time.time() - t_start


class Load(NamedTuple):
    clients: list[Client]  # each caught up at the end
    call_times: list[tuple[float, float]]  # (start, seconds) of each ingest_points call
    elapsed: float  # seconds from the producers' start to the last batch
    live_received: int  # points the clients received before their catch-up


def run_load(a, runs, cookie, per_batch, batches, period) -> Load:
    """The load against a daphne of its own."""
    port = free_port()
    daphne = start_daphne(port)
    base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    clients = [Client(r.pk) for r in runs]
    sent: dict[tuple[int, int], float] = {}
    call_times: list[tuple[float, float]] = []
    try:
        listener, stop = start_listeners(base, ws_base, cookie, clients, sent)
        print(f"{a.runs} runs x {per_batch} points every {a.batch_ms:.0f} ms "
              f"({a.runs * per_batch / period:,.0f} points/s) for {a.seconds:.0f} s ...")  # fmt: skip
        elapsed = produce_all(runs, per_batch, batches, period, sent, call_times)
        time.sleep(2)  # let the last pushes arrive
        stop()
        listener.join(10)
        live_received = sum(len(c.steps) for c in clients)
        for c in clients:
            catch_up(base, cookie, c)
    finally:
        daphne.terminate()
        daphne.wait(10)
    return Load(clients, call_times, elapsed, live_received)


def report(a, load: Load, per_batch: int, batches: int) -> bool:
    """Print the latencies and the completeness check; whether the targets are met."""
    clients, call_times, elapsed, live_received = load
    total = batches * per_batch
    lat = [x * 1000 for c in clients for x in c.latencies]
    calls = [x * 1000 for _, x in call_times]
    push = [x * 1000 for c in clients for x in c.push]
    t_first = min(t for t, _ in call_times)
    early = [x * 1000 for t, x in call_times if t - t_first < 10]
    late = [
        x * 1000
        for t, x in call_times
        if t - t_first >= max(t - t_first for t, _ in call_times) - 10
    ]
    complete = all(c.steps == set(range(total)) for c in clients)
    dupes = sum(c.received_dupes for c in clients)
    gaps = sum(c.gaps for c in clients)
    print(f"sent: {a.runs * total:,} points in {a.runs * batches:,} batches over {elapsed:.1f} s "
          f"(achieved {a.runs * total / elapsed:,.0f} points/s)")  # fmt: skip
    print(f"websocket messages timed: {len(lat):,}; points received live: {live_received:,}")
    print("latency ingest call -> websocket receipt (ms): "
          f"p50 {pct(lat, 50):.1f}  p95 {pct(lat, 95):.1f}  p99 {pct(lat, 99):.1f}  "
          f"max {max(lat):.1f}")  # fmt: skip
    print(f"baseline ingest_points call (ms): p50 {pct(calls, 50):.1f}  p99 {pct(calls, 99):.1f}"
          f"  -> push overhead at p50: {pct(lat, 50) / pct(calls, 50):.2f}x the call itself")  # fmt: skip
    print(f"channel path only (sent_at inside the call -> receipt, ms): p50 {pct(push, 50):.1f}"
          f"  p99 {pct(push, 99):.1f}")  # fmt: skip
    print(f"ingest_points call p50 in the first 10 s: {pct(early, 50):.1f} ms, "
          f"in the last 10 s: {pct(late, 50):.1f} ms")  # fmt: skip
    print(f"gaps caught up during the run: {gaps}; duplicate points received: {dupes}")
    print(f"after catch-up every client has every point exactly once: {complete}")
    flat = pct(late, 50) <= 1.1 * pct(early, 50)
    ok = pct(lat, 50) <= 50 and pct(lat, 99) <= 500 and complete and flat
    print("PASS" if ok else "FAIL", "(targets: p50 <= 50 ms, p99 <= 500 ms, nothing lost, "
          "call p50 in the last 10 s within 10 % of the first 10 s)")  # fmt: skip
    return ok


def main() -> None:
    a = parse_args()
    period = a.batch_ms / 1000
    per_batch = max(1, round(a.rate * period))
    batches = int(a.seconds / period)

    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    team, user, queue, runs = create_runs(a.runs)
    cookie = session_cookie(user)
    load = run_load(a, runs, cookie, per_batch, batches, period)
    ok = report(a, load, per_batch, batches)
    Run.objects.filter(team=team).delete()
    queue.delete()
    user.delete()
    team.delete()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
