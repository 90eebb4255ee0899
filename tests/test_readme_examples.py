"""The README's "Use the API from a script" examples, run as written against a live daphne
server (tests/servers.py) on the test database: the shell blocks through bash (with the
system's curl), the Python block through this interpreter. Only the environment the blocks
themselves read is set: STAGEWISE_URL, STAGEWISE_TOKEN, and for the token block
STAGEWISE_USER and STAGEWISE_PASSWORD.

A block is the fenced code right after an ``<!-- readme-test: NAME -->`` comment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests import factories as f
from tests.workers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

README = ROOT / "README.md"
PASSWORD = "pw-for-tests-1"  # tests/factories.py UserFactory
BLOCK = re.compile(r"<!-- readme-test: (?P<name>[\w-]+) -->\s*\n```(?P<lang>\w+)\n(?P<code>.*?)\n```",
                   re.S)  # fmt: skip


def readme_blocks() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every marked block."""
    blocks: dict[str, tuple[str, str]] = {}
    for m in BLOCK.finditer(README.read_text()):
        assert m["name"] not in blocks, f"two README blocks named {m['name']!r}"
        blocks[m["name"]] = (m["lang"], m["code"])
    return blocks


def test_the_readme_marks_its_script_examples():
    blocks = readme_blocks()
    assert {k: v[0] for k, v in blocks.items()} == {
        "token": "bash",
        "curl": "bash",
        "python": "python",
        "client": "python",
        "offline": "bash",
        "hf": "python",
        "import": "bash",
    }
    assert shutil.which("curl"), "the shell examples need curl (Debian: apt-get install curl)"


@pytest.fixture
def stack(tmp_path):
    from tests.servers import Daphne

    team = f.TeamFactory()
    user = f.UserFactory()
    user.save()  # the factory sets the password without saving it
    f.MembershipFactory(user=user, team=team, role="member")
    from runs.models import Queue

    queue, _ = Queue.objects.get_or_create(name="default")  # what `up` makes on a first start
    server = Daphne(tmp_path)
    yield {"team": team, "user": user, "queue": queue, "server": server, "tmp": tmp_path}
    server.stop()


def run_block(name: str, stack, prelude: str = "", **env: str) -> subprocess.CompletedProcess:
    """Run the block; ``prelude`` (Python) first, in the same directory: what a block calls
    "your own" (prepended to a Python block, a script of its own before a shell block)."""
    lang, code = readme_blocks()[name]
    if prelude and lang == "python":
        code = prelude + "\n" + code
    elif prelude:
        (Path(stack["tmp"]) / "prelude.py").write_text(prelude + "\n")
        code = f"python3 prelude.py\n{code}"
    script = Path(stack["tmp"]) / f"readme-{name}.{'sh' if lang == 'bash' else 'py'}"
    script.write_text(code + "\n")
    cmd = ["bash", str(script)] if lang == "bash" else [sys.executable, str(script)]
    # python3 in the shell blocks: this interpreter's, first on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # trainers importable from anywhere, as `pip install .` on a training machine makes it
    full_env = {**os.environ, "PATH": path, "STAGEWISE_URL": stack["server"].url,
                "PYTHONPATH": str(ROOT), **env}  # fmt: skip
    done = subprocess.run(cmd, cwd=stack["tmp"], env=full_env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, (
        f"README block {name!r} exited {done.returncode}\nstdout:\n{done.stdout}\n"
        f"stderr:\n{done.stderr}\nserver:\n{stack['server'].logs()}"
    )
    return done


def test_the_token_example_signs_in_and_makes_a_token_that_works(stack):
    from runs.models import ApiToken
    from runs.models.tokens import hash_key

    user = stack["user"]
    done = run_block("token", stack, STAGEWISE_USER=user.username, STAGEWISE_PASSWORD=PASSWORD)
    key = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sw_[\w-]{20,}", key), done.stdout + done.stderr
    token = ApiToken.objects.get(key_hash=hash_key(key))
    assert (token.user, token.team, token.name) == (user, stack["team"], "my script")
    expected = timezone.now() + timedelta(days=30)
    assert abs(token.expires_at - expected) < timedelta(minutes=5)
    # the key it printed is the one the other examples use
    done = run_block("curl", stack, STAGEWISE_TOKEN=key)
    assert "/runs/" in done.stdout


def test_the_curl_example_submits_a_run_and_reads_its_series(stack):
    import json

    from runs.models import Run

    user, team = stack["user"], stack["team"]
    done = run_block("curl", stack, STAGEWISE_TOKEN=f.api_token_for(user, team))
    first, _, series = done.stdout.partition("\n")
    m = re.fullmatch(r"run (\d+): (\S+)", first)
    assert m, done.stdout
    run = Run.objects.get(pk=int(m[1]))
    assert m[2] == f"{stack['server'].url}/runs/{run.pk}/"
    assert (run.team, run.queue, run.name, run.created_by) == (team, stack["queue"],
                                                               "from a script", user)  # fmt: skip
    assert run.state in ("queued", "running") and not run.external  # sent to the queue
    assert [s.name for s in run.stage_runs.order_by("stage_index")] == ["prose", "code"]
    body = json.loads(series)
    assert body["run"] == run.pk and set(body["series"]) == {"train/loss", "lr"}
    assert body["series"]["train/loss"]["steps"] == []  # no worker here: nothing trained yet


def test_the_python_example_reports_points_and_reads_them_back(stack):
    from runs.models import MetricPoint, Run

    user, team = stack["user"], stack["team"]
    done = run_block("python", stack, STAGEWISE_TOKEN=f.api_token_for(user, team))
    m = re.fullmatch(r"run (\d+): 100 points, last loss (\d+\.\d{3})\n", done.stdout)
    assert m, done.stdout
    run = Run.objects.get(pk=int(m[1]))
    assert (run.team, run.queue, run.external, run.state) == (team, stack["queue"], True,
                                                              "succeeded")  # fmt: skip
    stored = dict(
        MetricPoint.objects.filter(series__run=run, series__key="train/loss").values_list(
            "step", "value"
        )
    )
    assert sorted(stored) == list(range(1, 101))
    assert stored[100] == pytest.approx(4.0 / 100**0.25)
    assert m[2] == f"{4.0 / 100**0.25:.3f}"


def _points(run) -> dict[str, dict[int, float]]:
    from runs.models import MetricPoint

    out: dict[str, dict[int, float]] = {}
    for key, step, value in MetricPoint.objects.filter(series__run=run).values_list(
        "series__key", "step", "value"
    ):
        out.setdefault(key, {})[step] = value
    return out


def test_the_client_example_logs_a_free_form_run_with_two_stages(stack):
    from runs.models import Run

    user, team = stack["user"], stack["team"]
    done = run_block("client", stack, STAGEWISE_TOKEN=f.api_token_for(user, team))
    m = re.search(r"run (\d+): (\S+)\n$", done.stdout)
    assert m, done.stdout
    run = Run.objects.get(pk=int(m[1]))
    assert m[2] == f"{stack['server'].url}/runs/{run.pk}/"
    assert (run.team, run.free_form, run.state, run.config) == (
        team, True, "succeeded", {"lr": 3e-4, "batch": 16})  # fmt: skip
    stages = [(s.name, s.start_step, s.end_step) for s in run.stage_runs.order_by("stage_index")]
    assert stages == [("prose-pt", 0, 200), ("code-cpt", 200, 400)]
    points = _points(run)
    assert sorted(points["train/loss"]) == list(range(1, 401))
    assert points["train/loss"][100] == pytest.approx(4.0 / 100**0.25)
    assert sorted(points["eval/code/loss"]) == [50, 100, 150, 200, 250, 300, 350, 400]
    # the stages' names name their tasks: stage 0 learns prose, stage 1 code
    from runs.selectors.analysis import analysis_get, run_analysis

    assert analysis_get(run=run)["eval_sets"] == ["prose", "code"]
    (boundary,) = run_analysis(run)["gap_boundaries"]
    assert (boundary["boundary_step"], boundary["old_tasks"]) == (200, ["prose"])


def test_the_offline_example_syncs_once(stack):
    from runs.models import Run

    user, team = stack["user"], stack["team"]
    done = run_block("offline", stack, STAGEWISE_TOKEN=f.api_token_for(user, team))
    assert "stored 100 points" in done.stdout and "already synced" in done.stdout, done.stdout
    run = Run.objects.get(name="offline run")
    assert run.state == "succeeded" and run.free_form
    assert _points(run)["train/loss"] == {s: pytest.approx(1.0 / s) for s in range(1, 101)}


HF_PRELUDE = """from tests.hf_tiny import readme_objects
model, args, prose, code, prose_eval, code_eval = readme_objects()
"""


@pytest.mark.slow
def test_the_hugging_face_example_logs_two_stages_into_one_run(stack):
    from runs.models import Run

    user, team = stack["user"], stack["team"]
    done = run_block("hf", stack, HF_PRELUDE, STAGEWISE_TOKEN=f.api_token_for(user, team))
    m = re.search(r"run (\d+): (\S+)\n$", done.stdout)
    assert m, done.stdout
    run = Run.objects.get(pk=int(m[1]))
    assert (run.name, run.state, run.config["max_steps"]) == (
        "gpt2 prose then code",
        "succeeded",
        20,
    )
    stages = [(s.name, s.start_step, s.end_step) for s in run.stage_runs.order_by("stage_index")]
    assert stages == [("prose-pt", 0, 20), ("code-cpt", 20, 40)]
    points = _points(run)
    assert {"train/loss", "lr", "eval/prose/loss", "eval/code/loss"} <= set(points)
    assert sorted(points["eval/code/loss"]) == [10, 20, 30, 40]


IMPORT_PRELUDE = """import csv
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.tensorboard import SummaryWriter

w = SummaryWriter("tb-logs/run-a")
for step in range(100):
    w.add_scalar("train/loss", 4.0 / (step + 1) ** 0.25, step)
w.close()
with open("points.csv", "w", newline="") as fh:
    out = csv.writer(fh)
    out.writerow(["run", "key", "step", "value"])
    out.writerows([["exp1", "train/loss", s, 1.0 / (s + 1)] for s in range(100)])
history = {"_step": list(range(100)), "loss": [2.0 - s / 100 for s in range(100)],
           "_runtime": [s * 0.5 for s in range(100)]}  # W&B run.history(), as Parquet
pq.write_table(pa.table(history), "history.parquet")
"""


def test_the_import_examples_make_one_run_each(stack):
    from runs.models import Run

    user, team = stack["user"], stack["team"]
    done = run_block("import", stack, IMPORT_PRELUDE, STAGEWISE_TOKEN=f.api_token_for(user, team))
    runs = list(Run.objects.filter(team=team).order_by("pk"))
    assert len(runs) == 3, done.stdout + done.stderr
    tb, table, wide = runs
    assert sorted(_points(tb)["train/loss"]) == list(range(100))
    assert [(s.name, s.start_step) for s in tb.stage_runs.order_by("stage_index")] == [
        ("prose-pt", 0), ("code-cpt", 50)]  # fmt: skip
    assert _points(table)["train/loss"][9] == pytest.approx(0.1)
    assert (wide.name, set(_points(wide))) == ("wandb-run", {"loss"})
    assert all(r.state == "succeeded" for r in runs)
