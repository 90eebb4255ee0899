"""Run one stage of a plan (or all of them) with continual evaluation and checkpoints.

Steps are global across stages: stage i runs steps start_i + 1 .. end_i where end_i is the
cumulative budget; step 0 is the untrained model. A stage always begins from a checkpoint
(its own latest one, the previous stage's end, or `init_from`) or from scratch, so
`run_plan` (a loop over `run_stage`) and per-stage workers produce the same numbers.
"""

from __future__ import annotations

import copy
import math
import os
import time
import traceback as tb
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainers import growth, merge, objectives
from trainers.checkpoints import (
    Loaded,
    list_checkpoints,
    load_checkpoint,
    prune,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from trainers.data.build import eval_batches, plan_tokenizer, stage_mixture, to_tensors
from trainers.data.tokenizer import eos_id, load_tokenizer
from trainers.distributed import SOLO, Solo, run_ranks
from trainers.events import (
    CheckpointInfo,
    Control,
    MetricSink,
    Point,
    RunResult,
    StageCanceled,
    StagePreempted,
    StageResult,
    TrainingDiverged,
)
from trainers.methods import MethodContext, evaluate, make_method
from trainers.plan import Plan
from trainers.schedules import stage_lr_table

THREADS_ENV = "STAGEWISE_TORCH_THREADS"


class RunError(RuntimeError):
    """The run cannot start as asked (e.g. an occupied output directory)."""


def torch_threads(plan: Plan) -> int:
    """Fixed thread count: CPU results are bit-identical only with the same count."""
    return plan.torch_threads or int(os.environ.get(THREADS_ENV, "1"))


def _optimizer(model: nn.Module, plan: Plan, stage_index: int) -> torch.optim.AdamW:
    o = plan.stages[stage_index].optimizer
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no decay on biases/norms
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)


def _set_hparams(opt: torch.optim.Optimizer, plan: Plan, stage_index: int) -> None:
    """After loading a previous stage's optimizer state, apply this stage's settings."""
    o = plan.stages[stage_index].optimizer
    for g, wd in zip(opt.param_groups, (o.weight_decay, 0.0), strict=True):
        g.update(betas=o.betas, eps=o.eps, weight_decay=wd)


class _Ref:
    """Lazily loaded reference model for the ref_loss curriculum."""

    def __call__(self, cur, arrays):
        model = objectives.load_pretrained(Path(cur.ref_model)).eval()
        return objectives.row_losses(model, arrays[0], arrays[1])


def _start_point(plan: Plan, stage_index: int, out_dir: Path, init_from: Path | None):
    """(checkpoint to continue from or None, resumed inside this stage?)."""
    start, end = plan.stage_bounds()[stage_index]
    ckpts = list_checkpoints(out_dir)
    inside = [c for c in ckpts if c.stage_index == stage_index and start < c.step <= end]
    if inside:
        return load_checkpoint(Path(inside[-1].path)), True
    return _origin(plan, stage_index, out_dir, init_from), False


def _origin(plan: Plan, stage_index: int, out_dir: Path, init_from: Path | None):
    """The checkpoint the stage begins from (not a resume), or None: from scratch, or
    (init_merge) from the merge of its checkpoints."""
    if plan.stages[stage_index].init_merge:
        return None
    ckpts = list_checkpoints(out_dir)
    if stage_index > 0:
        prev = [c for c in ckpts if c.stage_index == stage_index - 1 and c.stage_end]
        if prev:
            return load_checkpoint(Path(prev[-1].path))
    if init_from is not None:
        return load_checkpoint(Path(init_from))
    if stage_index > 0:
        raise RunError(
            f"stage {stage_index} needs the stage-end checkpoint of stage {stage_index - 1} "
            f"in {out_dir} or init_from"
        )
    return None


def _merge_entries(plan: Plan, stage_index: int) -> list[tuple[Path, float]]:
    out = []
    for j, m in enumerate(plan.stages[stage_index].init_merge or []):
        if m.path is None:
            raise RunError(
                f"stages.{stage_index}.init_merge.{j}: run {m.run} step {m.step} is resolved "
                "by a Stagewise server; on this machine give a checkpoint path"
            )
        out.append((Path(m.path), m.weight))
    return out


def _param_order(model: nn.Module) -> list[str]:
    """Parameter names in the optimizer's order (see _optimizer: decayed, then the rest)."""
    named = list(model.named_parameters())
    return [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]


def _tokenizer(plan: Plan, src: Loaded | None, stage_index: int):
    """The stage's tokenizer (None for mlp): the one of the checkpoint it starts from (or of
    the checkpoints it merges), else the model directory's, else one trained for the plan."""
    if plan.model.arch == "mlp":
        return None
    if src is not None and (src.path / "tokenizer.json").is_file():
        return load_tokenizer(src.path / "tokenizer.json")
    if plan.stages[stage_index].init_merge:
        found = merge.tokenizer_path(_merge_entries(plan, stage_index))
        if found is not None:
            return load_tokenizer(found)
    if plan.model.path and (Path(plan.model.path) / "tokenizer.json").is_file():
        return load_tokenizer(Path(plan.model.path) / "tokenizer.json")
    return plan_tokenizer(plan)


class _Stage:
    """State of one run_stage call; `run` is the training loop."""

    def __init__(self, plan: Plan, i: int, out_dir: Path, sink: MetricSink, control, src,
                 resumed, origin, ranks: Solo = SOLO):  # fmt: skip
        self.plan, self.i, self.out_dir, self.sink, self.control = plan, i, out_dir, sink, control
        self.ranks = ranks  # this process's share of the stage (trainers/distributed.py)
        self.st = plan.stages[i]
        self.start, self.end = plan.stage_bounds()[i]
        self.lm = self.st.objective != "classification"
        src: Loaded | None
        if resumed:
            set_rng_state(ranks.own_rng(src.state))
        else:
            seed_everything(plan.seed * 1_000_003 + i)
        self.tok = ranks.from_main(lambda: _tokenizer(plan, src, i))  # trained once
        self.tok_json = self.tok.to_str() if self.tok is not None else None
        if self.tok_json is not None and ranks.main:
            (out_dir / "tokenizer.json").write_text(self.tok_json)
        self._origin = origin  # () -> the checkpoint the stage began from (see _origin)
        remap = None
        if resumed:
            self.model = objectives.load_saved_model(plan.model, src.path / "model")
        else:
            self.model, remap = self._initial_model()
        self.device = ranks.device()
        self._reference: nn.Module | None = None
        if not resumed and self.st.objective in ("dpo", "rl"):
            self._reference = self._frozen(copy.deepcopy(self.model))
        self.model.to(self.device).train()  # before the optimizer: its state follows params
        self.opt = _optimizer(self.model, plan, i)
        keep_opt = resumed or (
            src is not None and not self.st.optimizer.reset and not self.st.init_merge
        )
        if keep_opt and "optimizer" in src.state:
            state = src.state["optimizer"] if remap is None else remap(src.state["optimizer"])
            self.opt.load_state_dict(state)
            _set_hparams(self.opt, plan, i)
        self.method = make_method(
            MethodContext(
                plan, self.st, ranks.wrap(self.model), self.tok, self.device, self.reference
            )
        )
        self.mixture = stage_mixture(plan, i, self.tok, _Ref())
        if resumed:
            self.mixture.load_state(src.state["streams"])
        self.evals = {
            n: [
                tuple(t.to(self.device) for t in b)
                for b in eval_batches(plan.eval_set(n), self.tok)
            ]
            for n in self.st.eval_sets
        }
        self.lrs = stage_lr_table(plan, i)
        self.extras: list[dict[str, torch.Tensor]] = []
        self.step = src.info.step if resumed else self.start
        self.resumed_from = src.info.step if resumed else None
        self.last: dict[str, float] = dict(src.state.get("evals", {})) if resumed else {}
        self.buffer: list[Point] = []
        self.losses: list[torch.Tensor] = []
        self.loss_meta: list[tuple[int, float, float]] = []  # (step, lr, time)
        self.last_ckpt: CheckpointInfo | None = None

    # -- the starting model ---------------------------------------------------------
    def _initial_model(self):
        """(the model the stage begins with, optimizer-state remap or None): built or
        loaded from the origin, or merged from init_merge, then grown by ``grow``. The same
        every time, without drawing random numbers unless built from scratch."""
        plan, st = self.plan, self.st
        origin = None if st.init_merge else self._origin()
        if st.init_merge:
            model = merge.merge_models(plan.model, _merge_entries(plan, self.i))
        elif origin is None:
            vocab = self.tok.get_vocab_size() if self.tok else 0
            eos = eos_id(self.tok) if self.tok else 0
            model = objectives.build_model(plan.model, vocab, eos)
        else:
            model = objectives.load_saved_model(plan.model, origin.path / "model")
        if st.grow is None:
            return model, None
        old = _param_order(model)
        grown = growth.grow_model(model, st.grow)
        new = _param_order(grown.model)

        def remap(state: dict) -> dict:
            return growth.remap_optimizer_state(state, old, new, grown.source_of)

        return grown.model, remap

    @staticmethod
    def _frozen(model: nn.Module) -> nn.Module:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def reference(self) -> nn.Module:
        """The stage's starting weights, frozen, on the device (dpo and rl)."""
        if self._reference is None:  # resumed: rebuild what the stage began with
            self._reference = self._frozen(self._initial_model()[0])
        return self._reference.to(self.device)

    # -- metrics ----------------------------------------------------------------------
    def _drain_losses(self) -> None:
        """Turn the pending loss tensors into points: one sync for many steps. A NaN or
        infinite loss stops the stage (TrainingDiverged) after sending the points before it."""
        if not self.losses:
            return
        values = self.ranks.mean(torch.stack(self.losses)).tolist()
        flat = [t for ex in self.extras for t in ex.values()]
        extra_values = iter(self.ranks.mean(torch.stack(flat).float()).tolist() if flat else [])
        bad = next((k for k, v in enumerate(values) if not math.isfinite(v)), None)
        good = values if bad is None else values[:bad]
        for k, (v, (s, lr, t)) in enumerate(zip(good, self.loss_meta, strict=False)):
            self.buffer.append(Point("train/loss", s, v, t, self.i))
            self.buffer.append(Point("lr", s, lr, t, self.i))
            for name in self.extras[k]:
                self.buffer.append(Point(f"train/{name}", s, next(extra_values), t, self.i))
        self.extras = []
        if good:
            self.last["train/loss"] = good[-1]
        meta = self.loss_meta
        self.losses, self.loss_meta = [], []
        if bad is not None:
            self._diverged(meta[bad][0], "train/loss", values[bad])

    def _diverged(self, step: int, metric: str, value: float) -> None:
        """Send the points so far and stop: the weights are broken from here on."""
        self._send()
        # the newest checkpoint before it: this stage's, the one it resumed from, or the
        # previous stage's end (written at this stage's start step)
        last = self.last_ckpt.step if self.last_ckpt is not None else self.resumed_from
        if last is None and self.i > 0:
            last = self.start
        raise TrainingDiverged(self.st.name, step, metric, value, last)

    def _send(self) -> None:
        if self.buffer:
            self.sink.points(self.buffer)
            self.buffer = []

    def flush(self) -> None:
        self._drain_losses()
        self._send()

    def evaluate(self, names: list[str], step: int) -> None:
        if not self.ranks.main:  # the main rank evaluates for all
            return
        self.model.eval()
        now = time.time()
        for name in names:
            res = evaluate(self.model, self.evals[name], self.plan.eval_set(name), self.tok)
            for k, v in res.items():
                key = f"eval/{name}/{k}"
                if not math.isfinite(v) and k != "ppl":  # exp() of a large loss may overflow
                    self._diverged(step, key, v)
                self.buffer.append(Point(key, step, v, now, self.i))
                self.last[key] = v
        self.model.train()

    def _eval_due(self, step: int) -> bool:
        t = step - self.start
        d = self.st.dense_eval
        dense = d is not None and t <= d.steps and t % d.interval == 0
        return step == self.end or t % self.st.eval_interval == 0 or dense

    def checkpoint(self, step: int) -> None:
        """The main rank writes it, with every rank's RNG states; the others wait for it."""
        rngs = self.ranks.gather(rng_state())  # [state of rank 0, 1, ...] on the main rank
        if self.ranks.main:
            self._write_checkpoint(step, rngs)
        self.ranks.barrier()

    def _write_checkpoint(self, step: int, rngs: list[dict]) -> None:
        state = {
            "optimizer": self.opt.state_dict(),
            "streams": self.mixture.state(),
            "rng": rngs[0],
            "evals": {k: v for k, v in self.last.items()},
            "lr": float(self.lrs[step - self.start]),
        }
        if len(rngs) > 1:
            state["rng_ranks"] = rngs
        info = save_checkpoint(
            self.out_dir,
            step=step,
            stage_index=self.i,
            stage_end=step == self.end,
            write_model=lambda p: objectives.save_model(self.model, p),
            tokenizer_json=self.tok_json,
            state=state,
            plan_name=self.plan.name,
        )
        prune(self.out_dir, self.plan.keep_last)
        self.last_ckpt = info
        self.sink.checkpoint_saved(info)

    # -- loop -------------------------------------------------------------------------
    def run(self, max_steps: int | None) -> StageResult:
        first = self.step + 1
        self.sink.stage_started(self.i, first if self.resumed_from is not None else self.start)
        if self.resumed_from is None:
            n_params = sum(p.numel() for p in self.model.parameters())
            self.buffer.append(Point("model/params", self.start, n_params, time.time(), self.i))
            self.evaluate(self._new_eval_sets(), self.start)
            self.flush()
        stop = self.end if max_steps is None else min(self.end, self.step + max_steps)
        params = [p for p in self.model.parameters()]
        for step in range(first, stop + 1):
            self._train_step(step, params)
            self._after_step(step, stop)
        self.flush()
        completed = self.step == self.end
        if completed:
            self.sink.stage_finished(self.i, self.end)
        return StageResult(
            stage_index=self.i,
            start_step=self.start,
            end_step=self.step,
            completed=completed,
            resumed_from=self.resumed_from,
            steps_run=self.step - first + 1,
            final_train_loss=self.last.get("train/loss"),
            evals={k: v for k, v in self.last.items() if k.startswith("eval/")},
            checkpoint=self.last_ckpt,
        )

    def _new_eval_sets(self) -> list[str]:
        """The eval sets measured at the stage's start step: all of them at step 0 (the
        untrained baseline), else those the previous stage did not evaluate."""
        if self.i == 0:
            return list(self.st.eval_sets)
        before = set(self.plan.stages[self.i - 1].eval_sets)
        return [n for n in self.st.eval_sets if n not in before]

    def _train_step(self, step: int, params: list[nn.Parameter]) -> None:
        """One optimizer step; its loss stays a tensor until the next drain (no sync)."""
        lr = float(self.lrs[step - self.start])
        for g in self.opt.param_groups:
            g["lr"] = lr
        batch = tuple(
            t.to(self.device, non_blocking=True)
            for t in to_tensors(self.ranks.local(self.mixture.batch(step)))
        )
        loss, extras = self.method.loss(batch)
        loss.backward()
        clip = self.st.optimizer.grad_clip
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(loss.detach())
        self.extras.append({k: v.detach() for k, v in extras.items()})
        self.loss_meta.append((step, lr, time.time()))
        self.step = step

    def _after_step(self, step: int, stop: int) -> None:
        """Evaluate, send the metrics and checkpoint when due; stop when asked to."""
        st = self.st
        due_eval = self._eval_due(step)
        due_ckpt = step == stop or (
            st.checkpoint_interval is not None and (step - self.start) % st.checkpoint_interval == 0
        )
        if due_eval:
            self._drain_losses()
            self.evaluate(st.eval_sets, step)
        if due_eval or due_ckpt or step % self.plan.log_interval == 0:
            self.flush()
        if due_ckpt:  # after the flush: every point <= a checkpoint step is emitted
            self.checkpoint(step)
        stop, preempted = self.ranks.stop(self.control)
        if stop:
            self.flush()
            if preempted:
                if not due_ckpt:
                    self.checkpoint(step)
                raise StagePreempted(self.i, step)
            raise StageCanceled(self.i, step)


def _finished(plan: Plan, stage_index: int, out_dir: Path) -> StageResult | None:
    """The result of a stage whose stage-end checkpoint is in out_dir already, else None."""
    start, end = plan.stage_bounds()[stage_index]
    done = [c for c in list_checkpoints(out_dir) if c.stage_index == stage_index and c.stage_end]
    if not done or done[-1].step != end:
        return None
    evals = load_checkpoint(Path(done[-1].path)).state.get("evals", {})
    return StageResult(
        stage_index=stage_index,
        start_step=start,
        end_step=end,
        completed=True,
        resumed_from=end,
        steps_run=0,
        final_train_loss=evals.get("train/loss"),
        evals={k: v for k, v in evals.items() if k.startswith("eval/")},
        checkpoint=done[-1],
    )


def run_stage(
    plan: Plan,
    stage_index: int,
    out_dir: Path,
    sink: MetricSink,
    *,
    control: Control | None = None,
    init_from: Path | None = None,
    max_steps: int | None = None,
) -> StageResult:
    """Run (or continue) one stage; see the module docstring for where it starts from.

    max_steps bounds the optimizer steps of this call (a time slice): the call then
    checkpoints and returns with completed=False; calling again continues.
    A stage already finished in out_dir returns at once without sink calls.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not 0 <= stage_index < len(plan.stages):
        raise IndexError(f"plan has {len(plan.stages)} stages; no stage {stage_index}")
    torch.set_num_threads(torch_threads(plan))
    done = _finished(plan, stage_index, out_dir)
    if done is not None:
        return done
    try:
        if plan.stages[stage_index].devices > 1:  # this process is rank 0 of several
            return run_ranks(plan, stage_index, out_dir, sink, control, init_from, max_steps)
        return run_rank(plan, stage_index, out_dir, sink, control, init_from, max_steps)
    except StageCanceled:
        raise
    except Exception as e:
        sink.error(f"{type(e).__name__}: {e}", tb.format_exc())
        raise


def run_rank(
    plan: Plan,
    stage_index: int,
    out_dir: Path,
    sink: MetricSink,
    control: Control | None,
    init_from: Path | None,
    max_steps: int | None,
    ranks: Solo = SOLO,
) -> StageResult:
    """run_stage's work in this process: the whole stage, or the share ``ranks`` gives it."""
    src, resumed = _start_point(plan, stage_index, out_dir, init_from)

    # A resumed stage needs its origin only to rebuild a dpo/rl reference: looked up then, so a
    # fork from a mid-stage checkpoint (its run dir holds no earlier stage end) still resumes.
    def origin():
        return _origin(plan, stage_index, out_dir, init_from) if resumed else src

    stage = _Stage(plan, stage_index, out_dir, sink, control, src, resumed, origin, ranks)
    return stage.run(max_steps)


def run_plan(
    plan: Plan,
    out_dir: Path,
    sink: MetricSink,
    *,
    resume: bool = False,
    control: Control | None = None,
) -> RunResult:
    """All stages in order. Without resume, out_dir must not hold checkpoints already."""
    out_dir = Path(out_dir)
    if not resume and list_checkpoints(out_dir):
        raise RunError(f"{out_dir} already holds checkpoints: resume, or use a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plan.json").write_text(plan.model_dump_json(indent=2))
    sink.run_started(plan)
    results = [run_stage(plan, i, out_dir, sink, control=control) for i in range(len(plan.stages))]
    sink.run_finished()
    return RunResult(results, str(out_dir))


def lr_preview(plan: Plan) -> np.ndarray:
    """LR at every global step 0..total (for plots before launching)."""
    from trainers.schedules import lr_at

    return lr_at(plan, np.arange(plan.stage_bounds()[-1][1] + 1))
