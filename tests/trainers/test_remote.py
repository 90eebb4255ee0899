"""The Stagewise client (trainers.remote and `run --report-to`) against a small real HTTP
server on 127.0.0.1 whose answers each test scripts (503s, a 409 cancel, refusals), so the
retry, cancel and error paths run without Django. tests/runs/test_external_runs.py runs the
same client against the real server."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trainers.events import Point, StageCanceled
from trainers.remote import (
    ApiError,
    RunCanceled,
    ServerUnreachable,
    StagewiseError,
    StagewiseSink,
    create_external_run,
)

OK = (200, {})


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"null")
        status, answer = self.server.answer(self.path, body, self.headers.get("Authorization"))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    """Records every request as (path, body, auth, status) and answers with ``script(path,
    body, n)`` (n = how many requests came before)."""

    daemon_threads = True

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.log: list[tuple[str, dict, str, int]] = []
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def answer(self, path, body, auth):
        with self.lock:
            status, answer = self.script(path, body, len(self.log))
            self.log.append((path, body, auth, status))
        return status, answer

    def ok(self, kind: str) -> list[tuple[str, dict]]:
        return [(p, b) for p, b, _, s in self.log if s == 200 and f"/{kind}/" in p]


@pytest.fixture
def serve():
    servers = []

    def start(script) -> Server:
        servers.append(Server(script))
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _points(stage: int, steps: range) -> list[Point]:
    return [Point("train/loss", s, 1.0 / (s + 1), 1e9 + s, stage) for s in steps]


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sink_retries_503s_and_delivers_every_point_once_under_its_stage(serve):
    # The first four requests fail with 503 (a server restarting), then everything works.
    server = serve(lambda path, body, n: (503, {"detail": "starting"}) if n < 4 else OK)
    sink = StagewiseSink(server.url, "tok", 7, flush_seconds=0.05)
    sent = [*_points(0, range(0, 15)), *_points(0, range(15, 30))]
    sink.stage_started(0, 0)
    sink.points(sent[:15])
    sink.points(sent[15:])
    sink.stage_finished(0, 30)
    later = _points(1, range(31, 50))
    sink.stage_started(1, 30)
    sink.points(later)
    sink.stage_finished(1, 50)
    sink.run_finished()

    assert sink.requests_failed >= 4
    assert all(auth == "Token tok" for _, _, auth, _ in server.log)
    reports = [(p.split("/")[-2], b["state"]) for p, b in server.ok("stages")]
    assert reports == [("0", "running"), ("0", "succeeded"), ("1", "running"), ("1", "succeeded")]
    got = []
    for path, body in server.ok("metrics"):
        assert path == "/api/runs/7/metrics/"
        got += [(body["stage"], p["key"], p["step"], p["value"], p["time"]) for p in body["points"]]
    expected = [(p.stage, p.key, p.step, p.value, p.time) for p in sent + later]
    assert sorted(got) == sorted(expected)  # each point once, under its own stage
    # every point of a stage is stored before the stage is reported succeeded
    order = [(p, b) for p, b, _, s in server.log if s == 200]
    done0 = order.index(("/api/runs/7/stages/0/", {"state": "succeeded", "error": "",
                                                   "traceback": ""}))  # fmt: skip
    assert all(b["stage"] == 1 for p, b in order[done0:] if "metrics" in p)


def test_points_are_sent_in_the_background_at_the_point_threshold(serve):
    server = serve(lambda path, body, n: OK)
    sink = StagewiseSink(server.url, "tok", 1, flush_seconds=30, flush_points=10)
    sink.stage_started(0, 0)
    sink.points(_points(0, range(0, 10)))  # no flush call: the full buffer wakes the sender
    _wait(lambda: sum(len(b["points"]) for _, b in server.ok("metrics")) == 10, timeout=5)
    sink.close()


def test_a_canceled_run_raises_run_canceled_from_the_next_hook(serve):
    def script(path, body, n):
        return (409, {"detail": "run canceled"}) if "metrics" in path else OK

    server = serve(script)
    sink = StagewiseSink(server.url, "tok", 3, flush_seconds=0.05)
    sink.stage_started(0, 0)
    sink.points(_points(0, range(1, 5)))
    _wait(sink.should_stop)  # the engine's control sees it at its next step
    with pytest.raises(RunCanceled) as exc:
        sink.points(_points(0, range(5, 9)))
    assert isinstance(exc.value, StageCanceled)  # the engine stops as on any cancel
    assert "run 3 was canceled in Stagewise" in str(exc.value)
    with pytest.raises(RunCanceled):
        sink.stage_finished(0, 10)
    assert [b["state"] for _, b in server.ok("stages")] == ["running"]


def test_refused_metrics_raise_a_clear_error_and_the_failure_is_reported(serve):
    def script(path, body, n):
        if "metrics" in path:
            return 400, {
                "detail": "invalid input",
                "errors": {"stage": ["run 3 has stages 0 to 1"]},
            }
        return OK

    server = serve(script)
    sink = StagewiseSink(server.url, "tok", 3, flush_seconds=0.05)
    sink.stage_started(0, 0)
    sink.points(_points(0, range(1, 5)))
    with pytest.raises(StagewiseError, match="stage: run 3 has stages 0 to 1"):
        sink.stage_finished(0, 5)
    sink.error("StagewiseError: refused", "Traceback ...")  # what the engine does next
    reports = [b for _, b in server.ok("stages")]
    assert reports[-1] == {"state": "failed", "error": "StagewiseError: refused",
                           "traceback": "Traceback ..."}  # fmt: skip


def test_an_unreachable_server_is_retried_for_a_while_then_named(serve):
    url = f"http://127.0.0.1:{_free_port()}"
    sink = StagewiseSink(url, "tok", 1, retry_for=1.0)
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachable, match="cannot reach Stagewise at"):
        sink.stage_started(0, 0)
    assert 0.5 < time.monotonic() - t0 < 5
    assert sink.requests_failed >= 2


def test_create_external_run_posts_the_plan_and_names_field_errors(serve):
    answers = iter([(201, {"id": 12, "state": "running"}),
                    (400, {"detail": "invalid input",
                           "errors": {"stages.0.steps": ["must be > 0"]}})])  # fmt: skip
    server = serve(lambda path, body, n: next(answers))
    run = create_external_run(server.url, "tok", {"name": "p"}, name="mine", team="ml")
    assert run == {"id": 12, "state": "running"}
    assert server.log[0][:2] == (
        "/api/runs/",
        {"external": True, "plan": {"name": "p"}, "name": "mine", "team": "ml"},
    )
    with pytest.raises(ApiError) as exc:
        create_external_run(server.url, "tok", {"name": "p"})
    assert exc.value.status == 400
    assert exc.value.reasons() == ["stages.0.steps: must be > 0"]


# -- the CLI's --report-to errors: one line (field errors: one per field), exit 2, no training


@pytest.fixture
def plan_file(tmp_path):
    from tests.trainers.helpers import lm_plan

    p = tmp_path / "plan.json"
    p.write_text(json.dumps(lm_plan()))
    return p


def _cli(plan_file, out, url, *extra):
    from trainers.cli import main

    return main(["run", str(plan_file), "--out", str(out), "--no-progress", "--report-to", url,
                 *extra])  # fmt: skip


def test_cli_unreachable_server_is_one_line_and_exit_2(plan_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STAGEWISE_TOKEN", "tok")
    rc = _cli(plan_file, tmp_path / "out", f"http://127.0.0.1:{_free_port()}")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: cannot reach Stagewise at http://127.0.0.1")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_cli_refused_token_is_exit_2(plan_file, tmp_path, capsys, monkeypatch, serve):
    server = serve(lambda path, body, n: (403, {"detail": "Invalid token."}))
    monkeypatch.setenv("STAGEWISE_TOKEN", "wrong")
    rc = _cli(plan_file, tmp_path / "out", server.url)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"error: {server.url} refused the request (HTTP 403): Invalid token."]


def test_cli_prints_the_servers_field_errors(plan_file, tmp_path, capsys, monkeypatch, serve):
    errors = {"stages.0.data.0.source": ["unknown dataset"], "team": ["not a member"]}
    server = serve(lambda path, body, n: (400, {"detail": "invalid input", "errors": errors}))
    monkeypatch.setenv("STAGEWISE_TOKEN", "tok")
    rc = _cli(plan_file, tmp_path / "out", server.url, "--team", "ml")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"error: {server.url} refused the plan:", "stages.0.data.0.source: unknown "
                   "dataset", "team: not a member"]  # fmt: skip
    assert server.log[0][1]["team"] == "ml"


@pytest.mark.parametrize(
    ("extra", "token", "message"),
    [
        ((), "", "error: --report-to needs an API token in $STAGEWISE_TOKEN"),
        (("--resume",), "tok", "error: --report-to cannot continue an earlier run yet"),
    ],
)
def test_cli_report_to_needs_a_token_and_no_resume(
    plan_file, tmp_path, capsys, monkeypatch, extra, token, message
):
    monkeypatch.setenv("STAGEWISE_TOKEN", token)
    rc = _cli(plan_file, tmp_path / "out", "http://127.0.0.1:9", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(message)
