"""A stage with ``devices: 2`` trains on two gloo processes: one point per step, checkpoints by
rank 0, and after a SIGKILL of `python -m trainers run` (its rank 0) the other rank exits and
`--resume` gives exactly the points of an uninterrupted 2-process run."""

import json
import time
from pathlib import Path

import pytest

from tests.trainers.helpers import EVALS, cli, kill_run_at, lm_plan, metric_rows
from trainers.checkpoints import list_checkpoints, load_checkpoint
from trainers.distributed import CPU_DEVICES_ENV, cpu_devices
from trainers.engine import run_stage
from trainers.events import StagePreempted
from trainers.plan import PlanError, validate_plan
from trainers.sinks import MemorySink

STEPS, KILL_AT = 60, 25  # checkpoints every 10 steps: the kill lands between two of them
MARK = "STAGEWISE_TEST_DDP_RUN"  # in the environment of the run's processes, to find them


def _plan(devices: int = 2) -> dict:
    plan = lm_plan(steps=(STEPS, 1, 1), eval_sets=[EVALS[0]])
    plan["stages"] = plan["stages"][:1]
    plan["stages"][0].update(devices=devices, batch_size=8, eval_sets=["prose"], eval_interval=20)
    plan["stages"][0]["checkpoint_interval"] = 10
    return plan


def _marked_pids(mark: str) -> list[int]:
    """Rank processes (ranks 1..N-1, started by trainers.distributed) whose environment
    holds MARK=mark: the ranks of the run, while alive."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or b"rank_main" not in (d / "cmdline").read_bytes():
                continue
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.append(int(d.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def _wait_gone(mark: str, seconds: float = 20) -> list[int]:
    deadline = time.time() + seconds
    while (left := _marked_pids(mark)) and time.time() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> tuple[Path, list]:
    """An uninterrupted 2-rank CLI run: (plan file, its points)."""
    tmp = tmp_path_factory.mktemp("ddp-ref")
    f = tmp / "plan.json"
    f.write_text(json.dumps(_plan()))
    r = cli("run", str(f), "--out", str(tmp / "out"), "--no-progress")
    assert r.returncode == 0, r.stderr
    end = load_checkpoint(Path(list_checkpoints(tmp / "out")[-1].path))
    assert end.info.step == STEPS and end.info.stage_end
    assert len(end.state["rng_ranks"]) == 2  # every rank's RNG states
    return f, metric_rows(tmp / "out")  # asserts each (key, step) once


@pytest.mark.slow
def test_two_rank_stage_trains_and_logs_each_step_once(ref):
    _, want = ref
    losses = [v for k, _, v in want if k == "train/loss"]
    assert [s for k, s, _ in want if k == "train/loss"] == list(range(1, STEPS + 1))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.2, losses
    assert [s for k, s, _ in want if k == "eval/prose/loss"] == [0, 20, 40, 60]


@pytest.mark.slow
def test_sigkill_of_rank_0_then_resume_gives_the_same_points(ref, tmp_path, monkeypatch):
    f, want = ref
    monkeypatch.setenv(MARK, str(tmp_path))
    killed = tmp_path / "killed"
    kill_run_at(f, killed, KILL_AT)  # SIGKILL of rank 0 only: rank 1 must follow it
    assert _wait_gone(str(tmp_path)) == [], "a rank outlived the killed run"
    steps = [c.step for c in list_checkpoints(killed)]
    assert steps and max(steps) < STEPS, f"no checkpoint, or the run ended first: {steps}"

    r = cli("run", str(f), "--out", str(killed), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert metric_rows(killed) == want  # bit-identical values, each (key, step) once


class _PreemptAt:
    """A worker's control that says "shutting down" at the ``step``-th poll."""

    def __init__(self, step: int):
        self.calls, self.step = 0, step

    def should_stop(self) -> bool:
        self.calls += 1
        return self.calls >= self.step

    def preempted(self) -> bool:
        return True


@pytest.mark.slow
def test_preemption_seen_by_rank_0_stops_every_rank_at_that_step(ref, tmp_path, monkeypatch):
    """In this process (rank 0, as in a worker): the control's answer reaches rank 1."""
    _, want = ref
    monkeypatch.setenv(MARK, str(tmp_path))
    monkeypatch.setenv("STAGEWISE_TORCH_THREADS", "1")
    sink = MemorySink()
    with pytest.raises(StagePreempted) as info:
        run_stage(validate_plan(_plan()), 0, tmp_path, sink, control=_PreemptAt(33))
    assert info.value.step == 33
    assert 33 in [c.step for c in list_checkpoints(tmp_path)]  # written at that step
    got = sorted((p.key, p.step, p.value) for p in sink.all_points)
    assert got == [r for r in want if r[1] <= 33]
    assert _wait_gone(str(tmp_path)) == []


def test_devices_one_is_the_default_and_validated():
    plan = _plan(devices=1)
    del plan["stages"][0]["devices"]
    assert validate_plan(plan).stages[0].devices == 1
    for devices, words in [(0, "greater than or equal to 1"), (65, "less than or equal to 64"),
                           (3, "batch_size 8 does not split evenly over 3 devices")]:  # fmt: skip
        with pytest.raises(PlanError) as e:
            validate_plan(_plan(devices=devices))
        assert e.value.errors[0]["path"] == "stages.0.devices", e.value.errors
        assert words in e.value.errors[0]["message"]


def test_cpu_devices_reads_the_environment(monkeypatch):
    monkeypatch.delenv(CPU_DEVICES_ENV, raising=False)
    assert cpu_devices() == 1
    monkeypatch.setenv(CPU_DEVICES_ENV, "2")
    assert cpu_devices() == 2
    monkeypatch.setenv(CPU_DEVICES_ENV, "two")
    with pytest.raises(ValueError, match=CPU_DEVICES_ENV):
        cpu_devices()
