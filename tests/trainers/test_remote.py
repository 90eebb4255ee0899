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
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.do_POST()

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
        (("--run-id", "3"), "tok", "error: --run-id continues an earlier run: it needs --resume"),
    ],
)
def test_cli_report_to_needs_a_token_and_run_id_needs_resume(
    plan_file, tmp_path, capsys, monkeypatch, extra, token, message
):
    monkeypatch.setenv("STAGEWISE_TOKEN", token)
    rc = _cli(plan_file, tmp_path / "out", "http://127.0.0.1:9", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(message)


# -- --resume --report-to: continue the run recorded in DIR/stagewise.json


def _run_body(state="running", stages=("running", "pending", "pending")) -> dict:
    ends = [12, 22, 30]  # lm_plan()'s
    return {"id": 7, "external": True, "state": state,
            "stages": [{"stage_index": i, "state": st, "end_step": end}
                       for i, (st, end) in enumerate(zip(stages, ends, strict=True))]}  # fmt: skip


def test_cli_resume_needs_the_recorded_run_of_the_same_server(
    plan_file, tmp_path, capsys, monkeypatch
):
    from trainers.remote import save_run_ref

    monkeypatch.setenv("STAGEWISE_TOKEN", "tok")
    out = tmp_path / "out"
    rc = _cli(plan_file, out, "http://127.0.0.1:9", "--resume")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"error: --resume --report-to: no Stagewise run recorded in "
                   f"{out / 'stagewise.json'} (pass --run-id N, or run without --resume)"]  # fmt: skip
    out.mkdir()
    save_run_ref(out, "http://elsewhere:8000/", 7)
    rc = _cli(plan_file, out, "http://127.0.0.1:9", "--resume")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"error: {out / 'stagewise.json'} records run 7 on http://elsewhere:8000, not "
                   "on http://127.0.0.1:9 (pass --run-id N to continue a run there)"]  # fmt: skip
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("state", ["canceled", "failed", "succeeded"])
def test_cli_resume_of_an_ended_run_is_exit_1_without_training(
    plan_file, tmp_path, capsys, monkeypatch, serve, state
):
    server = serve(lambda path, body, n: (200, _run_body(state, ["succeeded"] * 3)))
    monkeypatch.setenv("STAGEWISE_TOKEN", "tok")
    rc = _cli(plan_file, tmp_path / "out", server.url, "--resume", "--run-id", "7")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err == [f"error: run 7 is already {state} in Stagewise; not training (a new run "
                   "needs a new --out)"]  # fmt: skip
    assert [p for p, *_ in server.log] == ["/api/runs/7/"]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_cli_resume_reports_a_stage_that_finished_here_after_its_last_report(
    plan_file, tmp_path, capsys, monkeypatch, serve
):
    """Killed after stage 0's last checkpoint but before its points and "succeeded" reached
    the server: the resumed CLI sends stage 0's local points, reports it succeeded, then
    trains the rest."""
    from tests.trainers.helpers import lm_plan
    from trainers.engine import run_stage
    from trainers.plan import validate_plan
    from trainers.remote import save_run_ref
    from trainers.sinks import JsonlSink

    out = tmp_path / "out"
    run_stage(validate_plan(lm_plan()), 0, out, JsonlSink(out / "metrics.jsonl"))
    stage0 = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    server = serve(lambda path, body, n: (200, _run_body() if body is None else {}))
    save_run_ref(out, server.url, 7)
    monkeypatch.setenv("STAGEWISE_TOKEN", "tok")
    rc = _cli(plan_file, out, server.url, "--resume")
    assert rc == 0, capsys.readouterr().err
    reports = [(p.split("/")[-2], b["state"]) for p, b in server.ok("stages")]
    assert reports == [("0", "running"), ("0", "succeeded"), ("1", "running"),
                       ("1", "succeeded"), ("2", "running"), ("2", "succeeded")]  # fmt: skip
    sent = [
        (b["stage"], pt["key"], pt["step"]) for _, b in server.ok("metrics") for pt in b["points"]
    ]
    assert len(sent) == len(set(sent))
    assert {s for s in sent if s[0] == 0} == {(r["stage"], r["key"], r["step"]) for r in stage0}
    assert server.log[0][0] == "/api/runs/7/"
    assert "Stagewise run 7 (resumed)" in capsys.readouterr().out
