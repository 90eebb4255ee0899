"""Log a Hugging Face ``transformers.Trainer`` to Stagewise: ``StagewiseCallback``.

    from trainers.integrations.hf import StagewiseCallback

    evals = {"prose": prose_eval, "code": code_eval}          # eval/prose/loss, eval/code/loss
    first = StagewiseCallback(stage="prose-pt", name="prose then code", finish=False)
    Trainer(model, args, train_dataset=prose, eval_dataset=evals, callbacks=[first]).train()
    second = StagewiseCallback(stage="code-cpt", run=first.run, finish=True)  # steps go on
    Trainer(model, args, train_dataset=code, eval_dataset=evals, callbacks=[second]).train()

**The run.** On train begin the callback creates it with ``trainers.client.init(**init_kwargs,
config=...)`` (URL and token from $STAGEWISE_URL / $STAGEWISE_TOKEN unless passed), the config
being ``TrainingArguments.to_dict()`` made JSON-safe and updated with any ``config=`` passed;
or it logs to ``run=``, a ``trainers.client.Run`` (e.g. an earlier callback's ``.run``).
``callback.run`` is the run either way. ``run_id=`` (passed on to ``init``) continues a run.

**Stages.** With ``stage=``, a stage of that name starts where this training starts, unless
the run's current stage already has that name (a resumed training goes on in it).

**Steps.** A point is logged at ``step_offset + state.global_step``, so every ``train()`` call
of a run shares one step axis. Unless ``step_offset`` is passed:

* a training from step 0 (a new Trainer, or ``train()`` again) starts after the run's last
  logged step: stage 2's new Trainer counts from 0, its points go on after stage 1's (a run
  continued with ``run_id=`` in a new process goes on after its latest stored step).
* a training resumed from a checkpoint (``resume_from_checkpoint``) takes the offset saved
  with that checkpoint: the callback writes ``stagewise.json`` (run id, offset) into each
  ``<output_dir>/checkpoint-<step>/`` it sees saved (``checkpoint_run_id()`` reads the id back
  for ``run_id=``). Without that file the offset is 0. The re-trained steps are sent again,
  and the server keeps one value per (run, key, step): they replace, never duplicate.

**Keys** (only numbers, finite ones, are logged):

* ``loss`` → ``train/loss``, ``grad_norm`` → ``train/grad_norm``, ``learning_rate`` → ``lr``,
  ``epoch`` → ``train/epoch``, ``state.num_input_tokens_seen`` (when > 0, i.e. with
  ``include_num_input_tokens_seen``) → ``train/tokens``; epoch and tokens count from 0 in
  every new ``train()``, as the Trainer counts them;
* evaluation metrics → ``eval/<set>/<metric>``. An evaluation's metrics are named
  ``<prefix>_<metric>`` and always include ``<prefix>_runtime``; that key gives the prefix,
  and the set is the prefix less its leading ``eval_``: one eval dataset (prefix ``eval``)
  gives ``eval/eval/loss``, ``eval_dataset={"prose": a, "code": b}`` gives
  ``eval/prose/loss`` and ``eval/code/loss``, ``evaluate(metric_key_prefix="test")`` gives
  ``eval/test/loss``. An ``eval_...`` key logged outside an evaluation uses the prefixes
  seen so far, else set ``eval``. Timings (``runtime``, ``*_per_second``,
  ``model_preparation_time``) are left out: they say nothing about the model;
* the end-of-``train()`` summary (``train_runtime``, ``train_loss``, a mean over the call,
  ``train_*_per_second``, ``total_flos``) is not a curve and is not logged, except its
  ``epoch``, which marks the last trained step as the run's last step;
* any other number a trainer logs (TRL's ``rewards/chosen``, ``kl``...) → ``train/<key>``.

**The end.** ``finish=None`` (default) finishes the run on train end only if this callback
opened it (``init``, ``run_id=`` included), not a ``run=`` handed in; ``finish=True`` or
``False`` says it outright. For stages over several ``train()`` calls, open the run with
``finish=False`` and hand ``run=`` on; the last callback finishes it with ``finish=True`` (or
call ``run.finish()``). A training that raises never reaches train end (the Trainer has no
hook for errors): the run stays running; call ``run.finish("failed")`` yourself.

**Cancel.** When Stagewise refuses points because the run was canceled (``run.canceled``),
the callback sets ``control.should_training_stop``.

Only the main process (``state.is_world_process_zero``) creates the run and logs.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from trainers import client

log = logging.getLogger(__name__)

TRAIN_KEYS = {
    "loss": "train/loss",
    "grad_norm": "train/grad_norm",
    "learning_rate": "lr",
    "epoch": "train/epoch",
}
TOKENS_KEY = "train/tokens"
NOT_CURVES = ("total_flos", "num_input_tokens_seen")  # and every train_* key: the summary
RUNTIME = "_runtime"  # every evaluation's metrics have <prefix>_runtime
TIMINGS = ("runtime", "samples_per_second", "steps_per_second", "tokens_per_second",
           "model_preparation_time")  # fmt: skip
DEFAULT_EVAL_SET = "eval"
CHECKPOINT_FILE = "stagewise.json"  # in each checkpoint-<step>/ directory


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def eval_prefixes(logs: dict[str, Any]) -> set[str]:
    """The metric-key prefixes of the evaluations in ``logs`` (``eval``, ``eval_prose``...)."""
    return {k[: -len(RUNTIME)] for k in logs if k.endswith(RUNTIME)} - {"train", ""}


def stagewise_key(key: str, prefixes: set[str]) -> str | None:
    """The Stagewise key of a Trainer log key (see the module doc); None: not logged."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if key.startswith(prefix + "_"):
            name = prefix[len("eval_") :] if prefix.startswith("eval_") else prefix
            return _eval_key(name, key[len(prefix) + 1 :])
    if key.startswith("eval_"):
        return _eval_key(DEFAULT_EVAL_SET, key[len("eval_") :])
    if key in TRAIN_KEYS:
        return TRAIN_KEYS[key]
    if key in NOT_CURVES or key.startswith("train_"):
        return None
    return f"train/{key}"


def _eval_key(name: str, metric: str) -> str | None:
    return None if metric in TIMINGS else f"eval/{name}/{metric}"


def stagewise_metrics(logs: dict[str, Any], prefixes: set[str] = frozenset()) -> dict[str, float]:
    """One Trainer ``logs`` dict as Stagewise metrics, non-numbers left out. ``prefixes``:
    evaluation prefixes seen before (for eval keys logged outside an evaluation)."""
    known = set(prefixes) | eval_prefixes(logs)
    out = {}
    for key, value in logs.items():
        number, name = _number(value), stagewise_key(key, known)
        if number is not None and name is not None:
            out[name] = number
    return out


def json_safe(value: Any) -> Any:
    """``value`` as JSON the server accepts: finite numbers, strings for everything else."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def training_config(args) -> dict[str, Any]:
    """``TrainingArguments.to_dict()`` (hub tokens already masked) as JSON-safe values."""
    return json_safe(args.to_dict())


def checkpoint_run_id(checkpoint_dir: str | Path) -> int | None:
    """The Stagewise run a checkpoint saved under this callback belongs to, if it says."""
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    try:
        return json.loads(path.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


class StagewiseCallback(TrainerCallback):
    """Log a ``transformers.Trainer`` to a Stagewise run; see the module doc."""

    def __init__(
        self,
        stage: str | None = None,
        run: client.Run | None = None,
        *,
        finish: bool | None = None,
        step_offset: int | None = None,
        **init_kwargs: Any,
    ):
        if run is not None and init_kwargs:
            raise TypeError(
                "pass run= or arguments for trainers.client.init(), not both "
                f"(got {', '.join(sorted(init_kwargs))})"
            )
        if stage is not None and (not isinstance(stage, str) or not stage.strip()):
            raise ValueError("stage= needs a name")
        self.stage = stage.strip() if stage else None
        self.run = run
        self.finish = run is None if finish is None else finish
        self.step_offset = step_offset
        self.init_kwargs = init_kwargs
        self.offset = 0  # what this training's global steps are shifted by
        self._prefixes: set[str] = set()

    # -- the Trainer's hooks
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.run is None:
            kw = dict(self.init_kwargs)
            config = {**training_config(args), **(kw.pop("config", None) or {})}
            if args.run_name and "name" not in kw:
                kw["name"] = args.run_name
            self.run = client.init(config=config, **kw)
        self.offset = self._offset(args, state)
        if self.stage and _current_stage(self.run) != self.stage:
            self.run.stage(self.stage, step=self.offset)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs:
            return
        self._prefixes |= eval_prefixes(logs)
        metrics = stagewise_metrics(logs, self._prefixes)
        if state.num_input_tokens_seen:
            metrics[TOKENS_KEY] = float(state.num_input_tokens_seen)
        if metrics:
            self.run.log(metrics, step=self.offset + state.global_step)
        self._stop_if_canceled(control)

    def on_step_end(self, args, state, control, **kwargs):
        self._stop_if_canceled(control)

    def on_save(self, args, state, control, **kwargs):
        """Record the run and the offset with the checkpoint just written."""
        if self.run is None:
            return
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if ckpt.is_dir():
            ref = {"run_id": self.run.id, "run_url": self.run.url, "step_offset": self.offset}
            (ckpt / CHECKPOINT_FILE).write_text(json.dumps(ref) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        # The Trainer's summary log (on_log, just before) put the last step on the run.
        if self.run is not None and self.finish and not self.run.finished:
            self.run.finish("succeeded")

    # -- internals
    def _offset(self, args, state) -> int:
        if self.step_offset is not None:
            return int(self.step_offset)
        if state.global_step == 0:
            return _last_step(self.run)
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        try:
            return int(json.loads((ckpt / CHECKPOINT_FILE).read_text())["step_offset"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Stagewise: no %s in %s; the resumed steps are logged as the Trainer "
                        "counts them (pass step_offset= to shift them)", CHECKPOINT_FILE, ckpt)  # fmt: skip
            return 0

    def _stop_if_canceled(self, control) -> None:
        if self.run is not None and self.run.canceled and not control.should_training_stop:
            log.warning("Stagewise run %s was canceled; stopping the training", self.run.id)
            control.should_training_stop = True


# The client keeps these two privately; read here until it exposes them.
def _last_step(run: client.Run) -> int:
    """The run's last logged step (for a run continued by ``run_id``: its current stage's
    start, all the client knows)."""
    return run.last_step


def _current_stage(run: client.Run) -> str | None:
    return run.stages[-1][0] if run.stages else None
