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


def run_block(name: str, stack, **env: str) -> subprocess.CompletedProcess:
    lang, code = readme_blocks()[name]
    script = Path(stack["tmp"]) / f"readme-{name}.{'sh' if lang == 'bash' else 'py'}"
    script.write_text(code + "\n")
    cmd = ["bash", str(script)] if lang == "bash" else [sys.executable, str(script)]
    # python3 in the shell blocks: this interpreter's, first on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env = {**os.environ, "PATH": path, "STAGEWISE_URL": stack["server"].url, **env}
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
