"""Typed, validated description of a staged training pipeline.

A plan is plain JSON. `validate_plan(dict)` turns it into a `Plan` or raises `PlanError`
listing every problem with the dotted field path (``stages.1.data.0.weight``) and the
reason, so a bad plan is rejected before any model or data is built.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

BUILTIN_SOURCES = (
    "builtin:prose",
    "builtin:code",
    "builtin:docstrings",
    "builtin:digits",
    "builtin:arithmetic",
    "builtin:docstring_prefs",
)
# Reward functions of rl stages, by name (trainers/methods/rewards.py implements them)
REWARDS = ("exact_match", "format")
LM_OBJECTIVES = ("causal_lm", "sft", "dpo", "rl")
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
# References a Stagewise server resolves (runs/services/data_access.py): a team's registered
# dataset version, and a checkpoint of one of its runs. The library only checks their syntax;
# it never reads them (the server hands the engine a plan with local paths in their place).
DATASET_PREFIX = "dataset:"
RUN_PREFIX = "run:"
_DATASET_REF = re.compile(r"dataset:(?P<name>[^\x00]{1,100}?)(?:@(?P<version>[1-9][0-9]{0,17}))?")
_RUN_REF = re.compile(r"run:(?P<run>[1-9][0-9]{0,17})@(?P<step>[0-9]{1,17})")
SERVER_REF_HERE = "is resolved by a Stagewise server; on this machine give a local path"


def parse_dataset_ref(source: str) -> tuple[str, int | None] | None:
    """``dataset:<name>`` -> (name, None); ``dataset:<name>@<version>`` -> (name, version);
    anything else -> None. A name that itself ends in ``@<digits>`` needs its version."""
    m = _DATASET_REF.fullmatch(source)
    if m is None:
        return None
    v = m.group("version")
    return m.group("name"), int(v) if v else None


def parse_run_ref(path: str) -> tuple[int, int] | None:
    """``run:<run_id>@<step>`` (the model saved in that checkpoint) -> (run_id, step)."""
    m = _RUN_REF.fullmatch(path)
    return (int(m.group("run")), int(m.group("step"))) if m else None


def _check_model_dir(value: str, what: str, check_files: bool) -> None:
    """A model directory: a local path, or a ``run:`` reference (syntax only here)."""
    if value.startswith(RUN_PREFIX):
        if parse_run_ref(value) is None:
            raise ValueError(f"{what} must be run:<run_id>@<step> or a directory path")
        if check_files:
            raise ValueError(f"{value} {SERVER_REF_HERE}")
    elif check_files and not os.path.isdir(value):
        raise ValueError(f"model directory not found: {value}")


SIZES: dict[str, dict[str, int]] = {
    # name: layers, width, heads. "tiny" trains at ~30 ms/step on one CPU thread.
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2},
    "small": {"n_layer": 4, "n_embd": 128, "n_head": 4},
    "base": {"n_layer": 6, "n_embd": 256, "n_head": 8},
}

# Hard bounds of the schema: a global step, and anything multiplied with it, stays an exact
# float64 integer (< 2**53), so no arithmetic on steps overflows anywhere (Postgres bigint,
# numpy, JSON numbers in browsers). Sizes are bounded so that one plan cannot ask a worker
# for an absurd allocation. Budgets are bounded again, tighter and configurable, by PlanLimits.
MAX_STEP = 2**53 - 1
Width = Annotated[int, Field(gt=0, le=65_536)]
MAX_DEVICES = 64  # processes of one DDP stage (trainers/distributed.py)
Steps = Annotated[int, Field(gt=0, le=MAX_STEP)]


@dataclass(frozen=True)
class PlanLimits:
    """Budget and size limits a plan must respect (the server passes its settings; the
    defaults suit one machine with a GPU). Checked by `validate_plan`, reported per field."""

    max_stages: int = 64
    max_stage_steps: int = 10_000_000
    max_total_steps: int = 100_000_000
    max_batch_size: int = 65_536
    max_seq_len: int = 131_072
    max_eval_sets: int = 64
    max_sources: int = 64  # data and replay entries of one stage
    max_plan_bytes: int = 1_000_000  # the plan as compact JSON

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


DEFAULT_LIMITS = PlanLimits()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Model):
    """Which network to train. LM objectives need gpt2/llama, classification needs mlp."""

    arch: Literal["gpt2", "llama", "mlp"] = "gpt2"
    size: Literal["tiny", "small", "base"] | None = None
    n_layer: Annotated[int, Field(gt=0, le=256)] | None = None
    n_embd: Annotated[int, Field(gt=0, le=16_384)] | None = None
    n_head: Annotated[int, Field(gt=0, le=256)] | None = None
    path: str | None = Field(
        None,
        max_length=1000,
        description="HF model directory (from_pretrained); on a server: run:<run_id>@<step> "
        "(a checkpoint of one of the team's runs) or a folder granted to the team",
    )
    hidden: list[Width] = Field(
        default_factory=lambda: [64], max_length=16, description="mlp hidden widths"
    )
    vocab_size: int = Field(512, ge=260, le=32768, description="BPE vocab trained for the run")
    max_positions: Annotated[int, Field(gt=0, le=131_072)] = 256
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ModelSpec:
        if self.path is not None and self.arch == "mlp":
            raise ValueError("path is only supported for gpt2/llama models")
        # check_files=False: the plan's files are not read on this machine (a server checks
        # access itself; an external run's client reads them)
        check_files = (info.context or {}).get("check_files", True)
        if self.path is not None:
            _check_model_dir(self.path, "model.path", check_files)
        if self.n_embd and self.n_head and self.n_embd % self.n_head:
            raise ValueError("n_embd must be divisible by n_head")
        return self

    def dims(self) -> dict[str, int]:
        """Layers/width/heads: explicit values override the named size (default tiny)."""
        d = dict(SIZES[self.size or "tiny"])
        for k in ("n_layer", "n_embd", "n_head"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if d["n_embd"] % d["n_head"]:
            raise ValueError("n_embd must be divisible by n_head")
        return d


class SourceSpec(_Model):
    """One dataset: `builtin:<name>`, `file:/abs/path.(txt|jsonl|parquet)`, or (on a server)
    `dataset:<name>[@<version>]`, a version of one of the team's uploaded datasets."""

    source: str = Field(max_length=1000)
    text_field: str = Field("text", max_length=200)
    prompt_field: str | None = Field(None, max_length=200)
    response_field: str | None = Field(None, max_length=200)
    chosen_field: str | None = Field(
        None, max_length=200, description="preference pairs: with prompt_field and rejected_field"
    )
    rejected_field: str | None = Field(None, max_length=200)
    digits: list[Annotated[int, Field(ge=1, le=6)]] | None = Field(
        None,
        min_length=1,
        max_length=6,
        description="arithmetic: digit counts of the operands (difficulty); default [1, 2]",
    )
    classes: list[Annotated[int, Field(ge=0, le=9)]] | None = Field(
        None, description="digits: keep only these classes (class-incremental tasks)"
    )
    permute_seed: int | None = Field(None, description="digits: fixed pixel permutation")

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        s = self.source
        if s.startswith("builtin:"):
            if s not in BUILTIN_SOURCES:
                raise ValueError(f"unknown dataset {s!r}; known: {', '.join(BUILTIN_SOURCES)}")
        elif s.startswith("file:"):
            path = s[len("file:") :]
            if not os.path.isabs(path):
                raise ValueError(f"file source must be an absolute path: {path!r}")
            if not path.endswith(FILE_SUFFIXES):
                raise ValueError(f"file source must end with one of {', '.join(FILE_SUFFIXES)}")
        elif s.startswith(DATASET_PREFIX):
            if parse_dataset_ref(s) is None:
                raise ValueError(
                    "a dataset reference is dataset:<name> or dataset:<name>@<version>"
                )
        else:
            raise ValueError(
                f"unknown dataset {s!r}: use builtin:<name>, dataset:<name>[@<version>] "
                "or file:/abs/path"
            )
        prefs = self.chosen_field is not None or self.rejected_field is not None
        if prefs:
            if self.chosen_field is None or self.rejected_field is None or not self.prompt_field:
                raise ValueError("chosen_field and rejected_field need each other and prompt_field")
            if self.response_field is not None:
                raise ValueError(
                    "a preference source has chosen/rejected fields, not response_field"
                )
        elif (self.prompt_field is None) != (self.response_field is None):
            raise ValueError("prompt_field and response_field must be given together")
        if self.digits is not None and s != "builtin:arithmetic":
            raise ValueError("digits only applies to builtin:arithmetic")
        is_digits = s == "builtin:digits"
        if not is_digits and (self.classes is not None or self.permute_seed is not None):
            raise ValueError("classes/permute_seed only apply to builtin:digits")
        if self.classes is not None and len(self.classes) == 0:
            raise ValueError("classes must not be empty")
        return self

    @property
    def source_kind(self) -> Literal["text", "pairs", "preference", "images"]:
        """images (digits); preference (prompt, chosen, rejected); pairs (prompt, response:
        SFT pairs, and an rl stage's prompts with their answers); else text."""
        if self.source == "builtin:digits":
            return "images"
        if self.source == "builtin:docstring_prefs" or self.chosen_field is not None:
            return "preference"
        if self.source in ("builtin:docstrings", "builtin:arithmetic") or self.prompt_field:
            return "pairs"
        return "text"

    @property
    def file_path(self) -> str | None:
        return self.source[len("file:") :] if self.source.startswith("file:") else None

    @property
    def dataset_ref(self) -> tuple[str, int | None] | None:
        """(name, version or None) of a ``dataset:`` source, else None."""
        return parse_dataset_ref(self.source) if self.source.startswith(DATASET_PREFIX) else None

    def key(self) -> str:
        """Stable identity of the examples this spec selects (cache key, stream name)."""
        parts = [self.source, self.text_field, self.prompt_field, self.response_field]
        parts += [self.classes, self.permute_seed]
        if self.source_kind == "preference":
            parts += [self.chosen_field, self.rejected_field]
        if self.digits is not None:
            parts.append(self.digits)
        return "|".join(str(p) for p in parts)


class SubsetSpec(_Model):
    """Train on part of a source (continual pre-training remedies): a ``count`` of documents
    or a ``fraction`` of them (or, with the entry's ``epochs``, as many as the stage's budget
    passes over that many times), chosen ``by`` a stable hash of each document, the top by a
    numeric quality ``field`` of a file source, or the lowest loss under ``ref_model``
    (trainers/data/subset.py). A subset is of the training split; replaying the entry in a
    later stage replays the same subset."""

    count: Annotated[int, Field(gt=0, le=MAX_STEP)] | None = None
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    by: Literal["hash", "field", "ref_loss"] = "hash"
    field: str | None = Field(None, max_length=200, description="by field: higher is better")
    ref_model: str | None = Field(
        None,
        max_length=1000,
        description="by ref_loss: HF model directory (as model.path) with the run's tokenizer",
    )

    # The rules between fields (and with the entry's source and epochs) are checked by
    # _subset_errors, so each error names its field (stages.1.data.0.subset.field).

    @field_validator("ref_model")
    @classmethod
    def _ref_model_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_model_dir(value, "ref_model", (info.context or {}).get("check_files", True))
        return value


class DataSpec(SourceSpec):
    name: str | None = Field(
        None, max_length=200, description="name used by replay (defaults to source)"
    )
    weight: float = Field(1.0, ge=0.0)
    subset: SubsetSpec | None = None
    epochs: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None,
        description="passes over the subset in this stage: its size is the rows the stage "
        "draws from this entry divided by epochs",
    )

    @property
    def ref(self) -> str:
        return self.name or self.source


class ReplaySpec(_Model):
    source: str = Field(
        max_length=1000, description="name or source of a data entry of an earlier stage"
    )
    ratio: float = Field(ge=0.0, le=1.0, description="fraction of each batch")


class OptimizerSpec(_Model):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate of the stage")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.95,
    )
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    reset: bool = Field(False, description="start this stage with fresh AdamW moments")


class ScheduleSpec(_Model):
    """LR shape of one stage; the peak is `optimizer.lr`. See trainers/schedules.py."""

    kind: Literal["constant", "linear", "cosine", "wsd", "infinite"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0, le=MAX_STEP)] = 0
    warmup_from: Literal["zero", "previous"] = Field(
        "zero", description="'previous' re-warms from the previous stage's last LR"
    )
    min_lr: float = Field(0.0, ge=0.0)
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd: share of steps decaying")
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"
    plateau_lr: float | None = Field(None, gt=0.0, description="infinite: constant plateau LR")
    cooldown_steps: Annotated[int, Field(ge=0, le=MAX_STEP)] = Field(
        0, description="infinite: cosine from peak to plateau"
    )
    anneal_steps: Annotated[int, Field(ge=0, le=MAX_STEP)] = Field(
        0, description="infinite: final anneal plateau -> min_lr"
    )


class DenseEvalSpec(_Model):
    interval: Steps
    steps: Steps = Field(description="dense evaluation during the first N steps of the stage")


class CurriculumSpec(_Model):
    by: Literal["length", "ref_loss"]
    ref_model: str | None = Field(
        None,
        max_length=1000,
        description="ref_loss: HF model directory (on a server as for model.path)",
    )

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> CurriculumSpec:
        if self.by == "ref_loss" and not self.ref_model:
            raise ValueError("curriculum by ref_loss needs ref_model")
        if self.ref_model:
            check_files = (info.context or {}).get("check_files", True)
            _check_model_dir(self.ref_model, "ref_model", check_files)
        return self


class EvalSetSpec(SourceSpec):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    split: Literal["heldout", "train"] = "heldout"
    kind: Literal["lm", "classification", "preference", "exact_match"] = Field(
        "lm",
        description="lm: loss/ppl; classification: loss/acc; preference: acc/margin on "
        "(prompt, chosen, rejected); exact_match: acc of greedy answers to prompts",
    )
    max_new_tokens: Annotated[int, Field(gt=0, le=256)] = Field(
        8, description="exact_match: tokens generated per prompt"
    )
    max_batches: Annotated[int, Field(gt=0, le=10_000)] = Field(
        4, description="evaluation cost budget, in batches"
    )
    batch_size: Width = 32
    seq_len: Annotated[int, Field(gt=0, le=131_072)] = 64


Name = Annotated[str, Field(min_length=1, max_length=100)]


class DPOSpec(_Model):
    """Direct Preference Optimization; the reference is the stage's starting weights."""

    beta: float = Field(0.1, gt=0.0, le=100.0)


class RLSpec(_Model):
    """GRPO-style RL with a verifiable reward: ``group_size`` completions sampled per
    prompt, group-relative advantages, a clipped ratio and a KL penalty to the stage's
    starting weights. The stage's ``batch_size`` counts prompts."""

    reward: Literal[REWARDS] = "exact_match"  # type: ignore[valid-type]
    group_size: Annotated[int, Field(ge=2, le=64)] = 8
    kl_coef: float = Field(0.05, ge=0.0, le=100.0)
    clip_eps: float = Field(0.2, gt=0.0, le=10.0)
    max_new_tokens: Annotated[int, Field(gt=0, le=256)] = 8
    temperature: float = Field(1.0, gt=0.0, le=10.0)


class GrowSpec(_Model):
    """Change the model before the stage starts. ``stack``: the layer stack repeated
    ``factor`` times (G_stack); ``identity``: after every block, ``factor - 1`` copies whose
    output projections are zero, so the grown model computes the same function (LLaMA Pro)."""

    method: Literal["stack", "identity"]
    factor: Annotated[int, Field(ge=2, le=8)] = 2


class MergeSpec(_Model):
    """One checkpoint of a merge: ``run`` + ``step`` (a checkpoint of one of the team's runs,
    on a server) or ``path`` (a checkpoint or model directory on this machine)."""

    run: Annotated[int, Field(gt=0, le=MAX_STEP)] | None = None
    step: Annotated[int, Field(ge=0, le=MAX_STEP)] | None = None
    path: str | None = Field(None, max_length=1000)
    weight: float = Field(gt=0.0, le=1e6, description="weights are normalised to sum to 1")

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> MergeSpec:
        check_files = (info.context or {}).get("check_files", True)
        if self.path is not None:
            if self.run is not None or self.step is not None:
                raise ValueError("give path, or run and step, not both")
            _check_model_dir(self.path, "path", check_files)
        elif self.run is None or self.step is None:
            raise ValueError("give run and step (a checkpoint of a run), or path")
        elif check_files:
            raise ValueError(f"run {self.run} step {self.step} {SERVER_REF_HERE}")
        return self

    @property
    def ref(self) -> str:
        """``run:<id>@<step>`` or the path (what a server resolves, what is recorded)."""
        return self.path if self.path is not None else f"{RUN_PREFIX}{self.run}@{self.step}"


class StageSpec(_Model):
    name: Name
    objective: Literal["causal_lm", "sft", "classification", "dpo", "rl"]
    data: list[DataSpec] = Field(min_length=1)
    replay: list[ReplaySpec] = Field(default_factory=list)
    steps: Steps | None = Field(None, description="budget in optimizer steps")
    tokens: Steps | None = Field(None, description="budget in tokens (LM objectives)")
    batch_size: Width = 16
    seq_len: Annotated[int, Field(gt=0, le=131_072)] = 64
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    eval_sets: list[str] = Field(default_factory=list)
    eval_interval: Steps = 50
    dense_eval: DenseEvalSpec | None = None
    checkpoint_interval: Steps | None = Field(
        None, description="steps between checkpoints (unset: only at the stage's end)"
    )
    curriculum: CurriculumSpec | None = None
    task: str | None = Field(
        None, max_length=100, description="eval set that is this stage's own task"
    )
    dpo: DPOSpec | None = Field(None, description="dpo settings (default: DPOSpec())")
    rl: RLSpec | None = Field(None, description="rl settings (default: RLSpec())")
    grow: GrowSpec | None = None
    init_merge: list[MergeSpec] | None = Field(
        None,
        min_length=2,
        max_length=16,
        description="start from the weighted average of these checkpoints' models",
    )
    devices: Annotated[int, Field(ge=1, le=MAX_DEVICES)] = Field(
        1, description="processes that train the stage together (DDP; batch_size splits evenly)"
    )

    @property
    def num_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        assert self.tokens is not None
        return math.ceil(self.tokens / (self.batch_size * self.seq_len))


class Plan(_Model):
    name: Name
    seed: int = Field(0, ge=0, le=2**63 - 1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    eval_sets: list[EvalSetSpec] = Field(default_factory=list)
    stages: list[StageSpec] = Field(min_length=1)
    keep_last: Annotated[int, Field(gt=0, le=1000)] = Field(
        2, description="checkpoints kept besides stage ends"
    )
    log_interval: Steps = Field(25, description="steps between metric flushes to the sink")
    torch_threads: Annotated[int, Field(gt=0, le=1024)] | None = Field(
        None, description="default: $STAGEWISE_TORCH_THREADS or 1"
    )

    def stage_bounds(self) -> list[tuple[int, int]]:
        """(start, end) global steps of each stage: stage i runs steps start+1 .. end."""
        bounds, start = [], 0
        for st in self.stages:
            bounds.append((start, start + st.num_steps))
            start += st.num_steps
        return bounds

    def eval_set(self, name: str) -> EvalSetSpec:
        return next(e for e in self.eval_sets if e.name == name)

    def resolve_replay(self, stage_index: int) -> list[tuple[DataSpec, float, int]]:
        """(data entry, ratio, index of the stage it comes from) for each replay item."""
        out = []
        for rp in self.stages[stage_index].replay:
            for j in range(stage_index - 1, -1, -1):
                hit = [d for d in self.stages[j].data if rp.source in (d.ref, d.source)]
                if hit:
                    out.append((hit[0], rp.ratio, j))
                    break
        return out


class PlanError(ValueError):
    """A plan failed validation. `.errors` is a list of {"path", "message"}."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{e['path']}: {e['message']}" for e in errors))


def _error(path: str, message: str) -> dict[str, str]:
    return {"path": path, "message": message}


def _limit_errors(plan: Plan, limits: PlanLimits) -> list[dict[str, str]]:
    """Budgets and sizes over ``limits`` (a plan within them cannot exhaust a worker)."""
    errs: list[dict[str, str]] = []

    def over(path: str, value: int, top: int, what: str = "") -> None:
        if value > top:
            errs.append(_error(path, f"{what or 'must be'} at most {top:,}"))

    over("stages", len(plan.stages), limits.max_stages, "a plan may have")
    over("eval_sets", len(plan.eval_sets), limits.max_eval_sets, "a plan may have")
    total = 0
    for i, st in enumerate(plan.stages):
        p = f"stages.{i}"
        over(f"{p}.batch_size", st.batch_size, limits.max_batch_size)
        over(f"{p}.seq_len", st.seq_len, limits.max_seq_len)
        over(f"{p}.data", len(st.data), limits.max_sources, "a stage may have")
        over(f"{p}.replay", len(st.replay), limits.max_sources, "a stage may have")
        if (st.steps is None) == (st.tokens is None):
            continue  # reported by the semantic rules
        n = st.num_steps
        total += n
        unit = "steps" if st.steps is not None else "tokens"
        if n > limits.max_stage_steps:
            why = "" if unit == "steps" else f" ({n:,} steps at this batch and sequence length)"
            budget = f"the stage budget is at most {limits.max_stage_steps:,} steps"
            errs.append(_error(f"{p}.{unit}", budget + why))
    if total > limits.max_total_steps:
        at_most = f"at most {limits.max_total_steps:,}"
        errs.append(_error("stages", f"the stages add up to {total:,} steps; {at_most}"))
    for j, es in enumerate(plan.eval_sets):
        over(f"eval_sets.{j}.batch_size", es.batch_size, limits.max_batch_size)
        over(f"eval_sets.{j}.seq_len", es.seq_len, limits.max_seq_len)
    return errs


def _duplicate_names(names: list[str], path: str, what: str) -> Iterator[dict[str, str]]:
    for i, n in enumerate(names):
        if names.index(n) != i:
            yield _error(f"{path}.{i}.name", f"duplicate {what} name {n!r}")


def _eval_set_errors(plan: Plan, lm_model: bool) -> Iterator[dict[str, str]]:
    """Each eval set's kind fits its data and the model; its sequences fit the model."""
    for i, es in enumerate(plan.eval_sets):
        p = f"eval_sets.{i}"
        if es.kind == "classification" and es.source_kind != "images":
            yield _error(f"{p}.kind", "classification eval needs builtin:digits")
        if es.kind == "lm" and es.source_kind == "images":
            yield _error(f"{p}.kind", "builtin:digits is a classification set, not lm")
        if es.kind == "lm" and not lm_model:
            yield _error(
                f"{p}.kind", f"lm eval set needs a gpt2/llama model, not {plan.model.arch}"
            )
        if es.kind == "classification" and lm_model:
            yield _error(f"{p}.kind", "classification eval set needs model.arch 'mlp'")
        if es.kind == "preference" and es.source_kind != "preference":
            yield _error(f"{p}.kind", "preference eval needs a preference source (chosen/rejected)")
        if es.kind == "exact_match" and es.source_kind != "pairs":
            yield _error(f"{p}.kind", "exact_match eval needs a prompt/answer source")
        if es.kind in ("preference", "exact_match") and not lm_model:
            yield _error(f"{p}.kind", f"{es.kind} eval needs a gpt2/llama model")
        if es.kind == "lm" and es.source_kind == "preference":
            yield _error(f"{p}.kind", "a preference source is measured by kind 'preference'")
        if es.seq_len > plan.model.max_positions:
            yield _error(
                f"{p}.seq_len", f"exceeds model.max_positions ({plan.model.max_positions})"
            )
        elif es.kind == "exact_match" and es.seq_len + es.max_new_tokens > plan.model.max_positions:
            yield _error(
                f"{p}.max_new_tokens",
                f"seq_len + max_new_tokens exceeds model.max_positions ({plan.model.max_positions})",
            )


def _stage_training_errors(plan: Plan, i: int, lm_model: bool) -> Iterator[dict[str, str]]:
    """Stage i's budget, objective and data fit each other and the model."""
    st, p = plan.stages[i], f"stages.{i}"
    if (st.steps is None) == (st.tokens is None):
        yield _error(p, "give exactly one budget: steps or tokens")
    if st.tokens is not None and st.objective == "classification":
        yield _error(f"{p}.tokens", "a token budget needs an LM objective; use steps")
    if st.objective == "classification" and lm_model:
        yield _error(f"{p}.objective", "classification needs model.arch 'mlp'")
    if st.objective in LM_OBJECTIVES and not lm_model:
        yield _error(f"{p}.objective", f"{st.objective} needs model.arch gpt2 or llama")
    yield from _post_training_errors(plan, i)
    if st.grow is not None and lm_model is False:
        yield _error(f"{p}.grow", "growth applies to gpt2/llama models")
    if st.grow is not None and i == 0 and plan.model.path is None and st.init_merge is None:
        yield _error(f"{p}.grow", "the first stage starts from scratch: grow a later stage")
    if st.seq_len > plan.model.max_positions:
        yield _error(f"{p}.seq_len", f"exceeds model.max_positions ({plan.model.max_positions})")
    if st.batch_size % st.devices:
        yield _error(
            f"{p}.devices",
            f"batch_size {st.batch_size} does not split evenly over {st.devices} devices",
        )
    if not sum(d.weight for d in st.data) > 0:
        yield _error(f"{p}.data", "weights must sum to a positive number")
    for j, d in enumerate(st.data):
        if st.objective == "classification" and d.source_kind != "images":
            yield _error(f"{p}.data.{j}.source", "classification needs builtin:digits data")
        if st.objective != "classification" and d.source_kind == "images":
            yield _error(f"{p}.data.{j}.source", f"{st.objective} cannot train on builtin:digits")
    if st.objective == "sft" and not any(d.source_kind == "pairs" for d in st.data):
        yield _error(f"{p}.data", "sft needs at least one prompt/response source")
    for j, d in enumerate(st.data):
        if d.source_kind == "preference" and st.objective != "dpo":
            yield _error(
                f"{p}.data.{j}.source", f"preference pairs train a dpo stage, not {st.objective}"
            )
    for d, _, _ in plan.resolve_replay(i):
        if d.source_kind == "preference":
            j = next(j for j, rp in enumerate(st.replay) if rp.source in (d.ref, d.source))
            yield _error(f"{p}.replay.{j}.source", "preference pairs cannot be replayed")


_NEEDS = {
    "dpo": ("preference", "preference pairs (prompt, chosen, rejected)"),
    "rl": ("pairs", "prompts with answers (prompt_field/response_field)"),
}


def _post_training_errors(plan: Plan, i: int) -> Iterator[dict[str, str]]:
    """dpo and rl stages: their data, settings and a trained starting point."""
    st, p = plan.stages[i], f"stages.{i}"
    for name in ("dpo", "rl"):
        if getattr(st, name) is not None and st.objective != name:
            yield _error(f"{p}.{name}", f"{name} settings need objective {name!r}")
    if st.objective not in _NEEDS:
        return
    kind, what = _NEEDS[st.objective]
    for j, d in enumerate(st.data):
        if d.source_kind != kind:
            yield _error(f"{p}.data.{j}.source", f"a {st.objective} stage trains on {what}")
    if st.replay:
        yield _error(f"{p}.replay", f"replay is not supported in a {st.objective} stage")
    if st.objective == "rl" and st.tokens is not None:
        yield _error(
            f"{p}.tokens", "an rl stage's budget is in steps (prompts per step: batch_size)"
        )
    if i == 0 and plan.model.path is None and st.init_merge is None:
        yield _error(
            f"{p}.objective",
            f"a {st.objective} stage starts from trained weights (its frozen reference): "
            "put it after another stage, or set model.path",
        )
    if st.objective == "rl":
        n = st.seq_len + (st.rl or RLSpec()).max_new_tokens
        if n > plan.model.max_positions:
            yield _error(
                f"{p}.rl.max_new_tokens",
                f"seq_len + max_new_tokens ({n}) exceeds model.max_positions "
                f"({plan.model.max_positions})",
            )


def _stage_reference_errors(
    plan: Plan, i: int, earlier_sources: list[set[str]]
) -> Iterator[dict[str, str]]:
    """Stage i's replay names data of an earlier stage (``earlier_sources``: the names and
    sources of each earlier stage's data), its eval sets and task are defined, and its dense
    evaluation is consistent."""
    st, p = plan.stages[i], f"stages.{i}"
    eval_names = [e.name for e in plan.eval_sets]
    total_r = 0.0
    for j, rp in enumerate(st.replay):
        total_r += rp.ratio
        if not any(rp.source in s for s in earlier_sources):
            yield _error(f"{p}.replay.{j}.source", f"{rp.source!r} is not data of an earlier stage")
    if total_r >= 1.0:
        yield _error(f"{p}.replay", f"replay ratios sum to {total_r:g}; must be below 1")
    for j, name in enumerate(st.eval_sets):
        if name not in eval_names:
            yield _error(f"{p}.eval_sets.{j}", f"eval set {name!r} is not defined in eval_sets")
    if st.task is not None and st.task not in eval_names:
        yield _error(f"{p}.task", f"eval set {st.task!r} is not defined in eval_sets")
    if st.dense_eval and st.dense_eval.interval > st.dense_eval.steps:
        yield _error(f"{p}.dense_eval.interval", "must not exceed dense_eval.steps")


def _subset_errors(plan: Plan, i: int) -> Iterator[dict[str, str]]:
    """Stage i's data entries with a subset or epochs: sized exactly one way (count,
    fraction, or the entry's epochs), on a source that has documents to choose."""
    for j, d in enumerate(plan.stages[i].data):
        p, s = f"stages.{i}.data.{j}", d.subset
        if s is None and d.epochs is None:
            continue
        if d.source_kind == "images":
            yield _error(
                f"{p}.{'subset' if s is not None else 'epochs'}",
                "subset/epochs apply to text and pair sources, not builtin:digits",
            )
            continue
        if s is None:
            continue  # epochs alone: a subset by hash, sized by the stage's budget
        if s.count is not None and s.fraction is not None:
            yield _error(f"{p}.subset.fraction", "give count or fraction, not both")
        sized = s.count is not None or s.fraction is not None
        if sized and d.epochs is not None:
            yield _error(
                f"{p}.epochs", "give epochs or a subset count/fraction, not both (epochs sizes it)"
            )
        if not sized and d.epochs is None:
            yield _error(f"{p}.subset", "a subset needs count, fraction, or the entry's epochs")
        yield from _subset_rule_errors(f"{p}.subset", s, d)


def _subset_rule_errors(p: str, s: SubsetSpec, d: DataSpec) -> Iterator[dict[str, str]]:
    """A subset's ``by`` has what it needs: a quality field of a file, or a reference model."""
    if s.by == "field" and not s.field:
        yield _error(f"{p}.field", "subset by field needs field (numeric, higher is better)")
    if s.by != "field" and s.field:
        yield _error(f"{p}.field", "field only applies to subset by field")
    fields_file = d.dataset_ref is not None or (d.file_path or "").endswith((".jsonl", ".parquet"))
    if s.by == "field" and not fields_file:
        yield _error(f"{p}.by", "subset by field needs a .jsonl/.parquet file or dataset: source")
    if s.by == "ref_loss" and not s.ref_model:
        yield _error(f"{p}.ref_model", "subset by ref_loss needs ref_model")
    if s.by != "ref_loss" and s.ref_model:
        yield _error(f"{p}.ref_model", "ref_model only applies to subset by ref_loss")


def _file_errors(plan: Plan) -> Iterator[dict[str, str]]:
    """Sources this machine reads: ``file:`` paths exist, no server references."""
    specs: list[tuple[str, SourceSpec]] = [
        (f"eval_sets.{i}.source", e) for i, e in enumerate(plan.eval_sets)
    ]
    for i, st in enumerate(plan.stages):
        specs += [(f"stages.{i}.data.{j}.source", d) for j, d in enumerate(st.data)]
    for path, spec in specs:
        fp = spec.file_path
        if fp is not None and not os.path.isfile(fp):
            yield _error(path, f"file not found: {fp}")
        if spec.dataset_ref is not None:
            yield _error(path, f"{spec.source} {SERVER_REF_HERE} (file:/abs/path)")


def _semantic_errors(plan: Plan, check_files: bool) -> list[dict[str, str]]:
    """Cross-field rules pydantic cannot express per field."""
    lm_model = plan.model.arch in ("gpt2", "llama")
    errs = [*_duplicate_names([st.name for st in plan.stages], "stages", "stage")]
    errs += _duplicate_names([e.name for e in plan.eval_sets], "eval_sets", "eval set")
    errs += _eval_set_errors(plan, lm_model)
    sources_so_far: list[set[str]] = []
    for i, st in enumerate(plan.stages):
        errs += _stage_training_errors(plan, i, lm_model)
        errs += _subset_errors(plan, i)
        errs += _stage_reference_errors(plan, i, sources_so_far)
        sources_so_far.append({d.ref for d in st.data} | {d.source for d in st.data})
    if check_files:
        errs += _file_errors(plan)
    return errs


def _loc(loc: tuple[Any, ...]) -> str:
    # Drop pydantic's union/validator tags so paths read like stages.1.data.0.weight.
    return ".".join(str(x) for x in loc if not (isinstance(x, str) and x.startswith("function-")))


def validate_plan(
    data: dict[str, Any], *, check_files: bool = True, limits: PlanLimits = DEFAULT_LIMITS
) -> Plan:
    """Parse and check a plan; raise PlanError with every problem found. ``check_files=True``
    (the CLI, a worker's final check) means this machine reads the plan's files: ``file:``
    sources, ``model.path`` and ``curriculum.ref_model`` must exist here, and server
    references (``dataset:``, ``run:``) are refused. ``check_files=False`` checks their syntax
    only: a server checks what a team may read itself (runs/services/data_access.py), an
    external run's files are on its client's machine. ``limits`` bounds budgets and sizes
    (the server passes its settings)."""
    if not isinstance(data, dict):
        raise PlanError([_error("(root)", "plan must be a JSON object")])
    try:
        size = len(json.dumps(data, separators=(",", ":"), allow_nan=False))
    except (RecursionError, ValueError, TypeError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise PlanError([_error("(root)", f"not a storable JSON plan: {why}")]) from None
    if size > limits.max_plan_bytes:
        at_most = f"at most {limits.max_plan_bytes:,}"
        raise PlanError([_error("(root)", f"the plan is {size:,} bytes of JSON; {at_most}")])
    try:
        plan = Plan.model_validate(data, context={"check_files": check_files})
    except ValidationError as e:
        errors = []
        for x in e.errors():
            msg = x["msg"].removeprefix("Value error, ")
            errors.append(_error(_loc(x["loc"]) or "(root)", msg))
        raise PlanError(errors) from None
    errors = _limit_errors(plan, limits) + _semantic_errors(plan, check_files)
    if errors:
        raise PlanError(errors)
    return plan


def plan_schema() -> dict[str, Any]:
    return Plan.model_json_schema()
