"""The Hugging Face integration (``trainers.integrations.hf.StagewiseCallback``) against a
live daphne: a tiny GPT-2 (from a config, a locally trained BPE) trained by the HF ``Trainer``
in two ``train()`` calls, prose then code, with the server stopped for a while in stage 2;
and a training that crashes and resumes from its checkpoint into the same run."""

from __future__ import annotations

import threading
import time

import pytest

from runs.models import MetricPoint, Run
from tests.hf_tiny import tiny_args, tiny_data, tiny_gpt2

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STEPS = 30  # per stage
SEQ_LEN = 64
OUTAGE_AT, OUTAGE_SECONDS = 8, 10  # stage 2's Trainer step at which the server goes away
CURVES = ("train/loss", "train/grad_norm", "train/epoch", "train/tokens", "lr",
          "eval/prose/loss", "eval/code/loss")  # fmt: skip


@pytest.fixture(scope="module")
def data():
    """(vocab size, eos id, train sets, eval sets): builtin prose and code, a 512-token BPE."""
    return tiny_data(SEQ_LEN)


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def logged(monkeypatch) -> dict:
    """(key, step) -> value of every point any client Run was asked to log, the last value
    of a step logged again."""
    from trainers import client

    seen: dict = {}
    log = client.Run.log

    def recording(self, metrics, step=None):
        seen.update({(k, step): float(v) for k, v in metrics.items()})
        return log(self, metrics, step)

    monkeypatch.setattr(client.Run, "log", recording)
    return seen


def _model(vocab: int, eos: int):
    return tiny_gpt2(vocab, eos, SEQ_LEN)


def _args(out, **over):
    return tiny_args(out, STEPS, **over)


def _stored(run_id: int) -> list[tuple[str, int, float]]:
    rows = MetricPoint.objects.filter(series__run_id=run_id)
    return sorted(rows.values_list("series__key", "step", "value"))


def _stages(run_id: int) -> list[tuple]:
    run = Run.objects.get(pk=run_id)
    return [(sr.name, sr.start_step, sr.end_step, sr.state)
            for sr in run.stage_runs.order_by("stage_index")]  # fmt: skip


def _outage(server):
    """A callback that, at stage 2's step OUTAGE_AT, stops the server and starts it again
    OUTAGE_SECONDS later in a thread, while the training goes on logging."""
    from transformers import TrainerCallback

    class Outage(TrainerCallback):
        thread: threading.Thread | None = None
        down = False
        logs_while_down = 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == OUTAGE_AT:
                server.stop()
                self.down = True
                self.thread = threading.Thread(target=self._restart, daemon=True)
                self.thread.start()

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs_while_down += self.down

        def _restart(self):
            time.sleep(OUTAGE_SECONDS)
            self.down = False
            server.start()

    return Outage()


def test_two_train_calls_log_one_run_with_its_boundary_through_an_outage(
    server, token, data, logged, one_thread, tmp_path
):
    from transformers import Trainer

    from trainers.integrations.hf import StagewiseCallback
    from trainers.remote import api_request

    vocab, eos, train, evals = data
    model = _model(vocab, eos)
    first = StagewiseCallback(stage="prose-pt", finish=False, url=server.url, token=token,
                              name="hf prose then code", spool_dir=tmp_path / "spool")  # fmt: skip
    Trainer(model=model, args=_args(tmp_path / "pt"), train_dataset=train["prose"],
            eval_dataset=evals, callbacks=[first]).train()  # fmt: skip
    run = first.run
    assert run.mode == "online" and not run.finished

    second = StagewiseCallback(stage="code-cpt", run=run, finish=True)
    outage = _outage(server)
    Trainer(model=model, args=_args(tmp_path / "cpt"), train_dataset=train["code"],
            eval_dataset=evals, callbacks=[second, outage]).train()  # fmt: skip
    outage.thread.join(60)
    assert outage.logs_while_down >= 5  # the training went on while the server was away
    assert run.finished == "succeeded" and not run.canceled

    end = 2 * STEPS
    assert _stages(run.id) == [("prose-pt", 0, STEPS, "succeeded"),
                               ("code-cpt", STEPS, end, "succeeded")]  # fmt: skip
    stored = _stored(run.id)
    assert len({(k, s) for k, s, _ in stored}) == len(stored)  # no duplicates
    assert stored == sorted((k, s, v) for (k, s), v in logged.items())  # every point, once
    steps: dict[str, list[int]] = {}
    for key, step, _ in stored:
        steps.setdefault(key, []).append(step)
    for key in CURVES:
        assert any(s <= STEPS for s in steps[key]) and any(s > STEPS for s in steps[key]), key
    assert steps["eval/prose/loss"] == steps["eval/code/loss"] == [10, 20, 30, 40, 50, 60]
    assert {s for s in steps["train/loss"] if s > STEPS} >= {STEPS + 9, STEPS + 12, end}
    assert max(steps["train/epoch"]) == end  # the last trained step
    shown = Run.objects.get(pk=run.id)
    assert shown.free_form and shown.config["max_steps"] == STEPS
    assert shown.config["output_dir"] == str(tmp_path / "pt")

    analysis = api_request(server.url, token, "GET", f"/api/ui/runs/{run.id}/analysis/")
    assert analysis["boundaries"][0] == STEPS
    (boundary,) = analysis["gap_boundaries"]
    assert boundary["boundary_step"] == STEPS and boundary["stage_after"] == "code-cpt"
    assert boundary["old_tasks"] == ["prose"]  # code-cpt's own task is code
    assert analysis["eval_points"] == 2 * 6  # eval losses only: timings are not logged
    continual = api_request(server.url, token, "GET", f"/api/runs/{run.id}/analysis/")
    assert continual["boundaries"] == [STEPS, end]


def test_a_training_resumed_from_its_checkpoint_continues_the_run(
    server, token, data, logged, one_thread, tmp_path
):
    from transformers import Trainer, TrainerCallback

    from trainers.integrations.hf import StagewiseCallback, checkpoint_run_id

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 16:  # after step 15 was logged, past checkpoint-10
                raise RuntimeError("killed")

    vocab, eos, train, evals = data
    out = tmp_path / "out"
    args = _args(out, max_steps=20, logging_steps=5, save_strategy="steps", save_steps=10)
    first = StagewiseCallback(stage="prose-pt", url=server.url, token=token,
                              spool_dir=tmp_path / "spool")  # fmt: skip
    trainer = Trainer(model=_model(vocab, eos), args=args, train_dataset=train["prose"],
                      eval_dataset=evals, callbacks=[first, Crash()])  # fmt: skip
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()
    first.run._sender.flush(30)  # what the dead process had sent
    before = dict(logged)
    assert ("train/loss", 15) in before and ("train/loss", 20) not in before

    run_id = checkpoint_run_id(out / "checkpoint-10")
    assert run_id == first.run.id
    again = StagewiseCallback(stage="prose-pt", url=server.url, token=token, run_id=run_id,
                              spool_dir=tmp_path / "spool2")  # fmt: skip
    Trainer(model=_model(vocab, eos), args=args, train_dataset=train["prose"],
            eval_dataset=evals, callbacks=[again]).train(resume_from_checkpoint=True)  # fmt: skip
    assert again.run.id == run_id and again.run.finished == "succeeded"

    assert _stages(run_id) == [("prose-pt", 0, 20, "succeeded")]
    stored = _stored(run_id)
    assert len({(k, s) for k, s, _ in stored}) == len(stored)
    assert stored == sorted((k, s, v) for (k, s), v in logged.items())  # step 15 replaced
    assert sorted(s for k, s, _ in stored if k == "train/loss") == [5, 10, 15, 20]
    assert sorted(s for k, s, _ in stored if k == "eval/prose/loss") == [10, 20]
