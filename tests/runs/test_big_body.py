"""Limits as a client meets them, over HTTP, against a real daphne server (tests/servers.py):
a 100 MB body is refused fast without the server holding it in memory, and a token over its
rate gets 429 with Retry-After, the rate set through the environment the server reads and
counted across server processes.

tests/runs/test_bad_input.py checks the body limit in-process (the test client and Django's
ASGI handler) and tests/runs/test_tokens.py the throttle with a settings override; these run
what a deployment runs: the environment variables, daphne's own buffering, several processes."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from dataclasses import dataclass

import psutil
import pytest

from tests import factories as f
from tests.servers import Daphne

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024


@pytest.fixture
def member():
    team = f.TeamFactory()
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team, role="member")
    f.QueueFactory(name=f"body-{uuid.uuid4().hex[:8]}")
    return user, team


@pytest.fixture
def servers(tmp_path):
    started: list[Daphne] = []

    def start(**env: str) -> Daphne:
        server = Daphne(tmp_path / f"s{len(started)}", start=False)
        server.log_path.parent.mkdir(exist_ok=True)
        server.env.update(env)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def _request(server: Daphne, method: str, path: str, key: str, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


class PeakRss:
    """The highest RSS of a process, sampled every few milliseconds while in the block."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self):
        self.before = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


@dataclass
class BigPost:
    status: int
    content_type: str | None
    body: bytes
    seconds: float  # from the first byte sent to the whole answer read
    rss_growth_mb: float  # daphne's peak RSS during the request over its RSS before


def _post_100_mb(server: Daphne, key: str) -> BigPost:
    # Warm up: the first request of a process loads what it needs (a database connection,
    # DRF's settings, the serializers); a steady server has all that already.
    for _ in range(3):
        assert _request(server, "GET", "/api/runs/", key)[0] == 200, server.logs()
    size, chunk = 100 * MB, b"x" * MB
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    with PeakRss(server.proc.pid) as rss:
        t0 = time.monotonic()
        conn.putrequest("POST", "/api/runs/")
        conn.putheader("Authorization", f"Bearer {key}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        try:
            for _ in range(size // len(chunk)):
                conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading it all: the answer is still there
        resp = conn.getresponse()
        body = resp.read()
        seconds = time.monotonic() - t0
    conn.close()
    return BigPost(resp.status, resp.getheader("Content-Type"), body, seconds,
                   (rss.peak - rss.before) / MB)  # fmt: skip


def test_a_100_mb_body_is_a_413_with_a_json_reason_in_under_a_second(member, servers):
    user, team = member
    key = f.api_token_for(user, team)
    server = servers()
    got = _post_100_mb(server, key)
    assert got.status == 413, (got.status, got.body[:300], server.logs())
    assert got.content_type == "application/json"
    detail = json.loads(got.body)["detail"]
    assert "larger than" in detail and "MB" in detail, detail
    assert got.seconds < 1.0, f"the 413 took {got.seconds:.2f} s"
    # and the server goes on answering
    assert _request(server, "GET", "/api/runs/", key)[0] == 200


def test_refusing_a_100_mb_body_grows_the_server_by_less_than_20_mb(member, servers):
    user, team = member
    server = servers()
    got = _post_100_mb(server, f.api_token_for(user, team))
    assert got.status == 413
    assert got.rss_growth_mb < 20, (
        f"daphne's RSS grew by {got.rss_growth_mb:.0f} MB while refusing a 100 MB body"
    )


def test_over_the_env_rate_a_token_gets_429_with_retry_after_counted_across_processes(
    member, servers
):
    """STAGEWISE_THROTTLE_USER as a deployment sets it, read by two web processes: the counts
    live in Redis, so a token cannot get twice its rate by spreading requests over them."""
    user, team = member
    key = f.api_token_for(user, team)
    other_key = f.api_token_for(user, team)
    rate = {"STAGEWISE_THROTTLE_USER": "4/min"}
    first, second = servers(**rate), servers(**rate)
    codes = [_request(s, "GET", "/api/queues/", key)[0] for s in (first, second, first, second)]
    assert codes == [200] * 4, codes
    for server in (first, second):
        status, headers, body = _request(server, "GET", "/api/queues/", key)
        assert status == 429, (status, body[:300])
        assert 1 <= int(headers["Retry-After"]) <= 60, headers
        assert "throttled" in json.loads(body)["detail"].lower()
    # The count is the token's: another token of the same user still passes.
    assert _request(first, "GET", "/api/queues/", other_key)[0] == 200
