"""Several devices for one stage (``devices: N`` in the plan): N processes train it together
with DistributedDataParallel, over gloo on CPU and nccl on CUDA (one GPU per rank).

How a stage runs on N ranks (``run_ranks``, called by ``engine.run_stage``):

- The calling process is rank 0. It keeps the sink and the control, so the CLI's JsonlSink
  or a worker's DjangoSink is only ever called in the process that made it, and neither is
  pickled. Ranks 1..N-1 are new Python processes (``subprocess``, with torchrun's
  environment: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), not
  multiprocessing children: a Celery prefork pool process is daemonic and may not have
  those. Each builds the same stage from the same starting point (seed, model, mixture,
  checkpoint); rank 0 trains the tokenizer and sends it to the others.
- Every rank draws the same global batch from the Mixture and trains on its rows r, r+N,
  r+2N, ... (``batch_size`` splits evenly: plan validation). DDP averages the gradients, so
  every rank takes the same optimizer step.
- Losses (and a method's extras) are all-reduced when the engine drains them: ``train/loss``
  is the mean over the ranks' equal slices of the global batch, logged once per step.
- Only rank 0 evaluates, sends points and writes checkpoints; a checkpoint holds every
  rank's RNG states (``rng_ranks``) besides what a one-device checkpoint holds, and the
  other ranks wait at a barrier until it is written.
- The control is asked on rank 0 at every step and its answer broadcast (only when the
  stage has a control: the CLI without ``--report-to`` has none).
- Ranks 1..N-1 ignore SIGINT and SIGTERM (rank 0 decides when the stage stops) and exit when
  their parent is gone (SIGKILL of rank 0). A rank that fails ends the stage on every rank;
  rank 0 raises ``RankFailed`` with that rank's error.

On CPU an N-rank run repeats bit for bit, killed and resumed too (tested with 2 ranks). It is
not the 1-process curve: the model sees the same batches, but the loss of each step is the
mean of per-slice means, and sums of the ranks' gradients round differently.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainers.device import resolve_device
from trainers.events import StageCanceled, TrainingDiverged

if TYPE_CHECKING:
    from trainers.events import Control, MetricSink, StageResult
    from trainers.plan import Plan

CPU_DEVICES_ENV = "STAGEWISE_CPU_DEVICES"  # devices a CPU worker offers (default 1)
HOST = "127.0.0.1"  # the ranks of a stage are processes of one machine
TIMEOUT = timedelta(minutes=30)  # a collective waits this long (rank 0 may be evaluating)
FINISH_SECONDS = 60  # after the stage, how long rank 0 waits for the others to exit
ERROR_FILE_ENV = "STAGEWISE_RANK_ERROR_FILE"  # where rank r writes its error for rank 0
PARENT_ENV = "STAGEWISE_RANK_PARENT"  # pid of rank 0: the others exit when it is gone
RANK_MAIN = "from trainers.distributed import rank_main; rank_main()"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # importable by the ranks


class RankFailed(RuntimeError):
    """Another rank of the stage failed; the message is its error."""


def cpu_devices() -> int:
    """``$STAGEWISE_CPU_DEVICES``: how many ranks a CPU worker runs a stage with at most."""
    raw = os.environ.get(CPU_DEVICES_ENV, "").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{CPU_DEVICES_ENV}={raw!r}: give a whole number of devices >= 1")
    return int(raw)


def device_capacity() -> int:
    """The most devices a stage may ask of this process: the GPUs it sees when stages train
    on CUDA here, else ``$STAGEWISE_CPU_DEVICES``."""
    if resolve_device().type == "cuda":
        return torch.cuda.device_count()
    return cpu_devices()


class Solo:
    """One process trains the whole stage: every collective is the identity."""

    rank, world, main = 0, 1, True

    def device(self) -> torch.device:
        return resolve_device()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module a method trains through (DDP on several ranks)."""
        return model

    def local(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """This rank's rows of a global batch."""
        return arrays

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of per-rank values (same shape on every rank)."""
        return values

    def gather(self, obj) -> list:
        """Every rank's ``obj`` on the main rank, in rank order (None elsewhere)."""
        return [obj]

    def barrier(self) -> None:
        pass

    def from_main(self, make: Callable[[], Any]) -> Any:
        """``make()`` computed on the main rank, and a copy of it on the others."""
        return make()

    def own_rng(self, state: dict) -> dict:
        """This rank's RNG states in a checkpoint's state."""
        return state["rng"]

    def stop(self, control: Control | None) -> tuple[bool, bool]:
        """(stop now?, because the worker is going away?) as the control says."""
        if control is None or not control.should_stop():
            return False, False
        return True, bool(getattr(control, "preempted", bool)())  # optional; bool() is False


SOLO = Solo()


class Ranks(Solo):
    """Rank ``rank`` of ``world``. ``join()`` joins the default process group; on rank 0 it
    runs at the first collective, so rank 0 trains the tokenizer while the others start."""

    def __init__(
        self, rank: int, world: int, device: torch.device, has_control: bool, join: Callable
    ):
        self.rank, self.world, self.main = rank, world, rank == 0
        self._device, self.has_control = device, has_control
        self._join, self._cpu_group = join, None

    def connect(self) -> None:
        """Join the process group now (ranks 1..N-1 do at once, so that none can die
        between saying it is ready and joining)."""
        self._cpu()

    def _cpu(self):
        """The gloo group of the small collectives: RNG states, barriers, the control's
        answer (the default group itself unless that is nccl). Joins on first use."""
        if self._cpu_group is None:
            self._join()
            gloo = dist.get_backend() == "gloo"
            self._cpu_group = dist.group.WORLD if gloo else dist.new_group(backend="gloo")
        return self._cpu_group

    def device(self) -> torch.device:
        return self._device

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self._device.index] if self._device.type == "cuda" else None
        self._cpu()
        # No buffer sync per forward: buffers never change, and a method may run more
        # (no-grad) forward passes on one rank than on another (generation).
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def local(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return tuple(np.ascontiguousarray(a[self.rank :: self.world]) for a in arrays)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        self._cpu()
        dist.all_reduce(values)
        return values / self.world

    def gather(self, obj) -> list:
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0, group=self._cpu())
        return out

    def barrier(self) -> None:
        dist.barrier(group=self._cpu())

    def from_main(self, make: Callable[[], Any]) -> Any:
        box = [make() if self.main else None]
        dist.broadcast_object_list(box, src=0, group=self._cpu())
        return box[0]

    def own_rng(self, state: dict) -> dict:
        states = state.get("rng_ranks")
        if states is not None and len(states) == self.world:
            return states[self.rank]
        return state["rng"]  # written with another device count: rank 0's

    def stop(self, control: Control | None) -> tuple[bool, bool]:
        if not self.has_control:
            return False, False
        flags = torch.tensor(super().stop(control) if self.main else (False, False))
        dist.broadcast(flags, src=0, group=self._cpu())
        return bool(flags[0]), bool(flags[1])


@dataclass(frozen=True)
class _Job:
    """What every rank needs to build its share of the stage (pickled to ranks 1..N-1)."""

    plan: Plan
    stage_index: int
    out_dir: Path
    init_from: Path | None
    max_steps: int | None
    has_control: bool
    backend: str


@dataclass
class _Child:
    """Rank ``rank`` (1..N-1): a process of its own that writes its error to ``error_file``."""

    rank: int
    proc: subprocess.Popen
    error_file: Path

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()


def _backend(world: int) -> str:
    """nccl when stages train on CUDA here (one GPU per rank), else gloo on CPU."""
    if resolve_device().type != "cuda":
        return "gloo"
    if torch.cuda.device_count() < world:
        from trainers.engine import RunError

        raise RunError(
            f"the stage asks for {world} devices; this process sees "
            f"{torch.cuda.device_count()} GPU(s)"
        )
    return "nccl"


def _rank_device(job: _Job, rank: int) -> torch.device:
    if job.backend == "nccl":
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return torch.device("cpu")


def _ready_key(rank: int) -> str:
    return f"stagewise/ready/{rank}"


def _start(job: _Job, rank: int, world: int, port: int, tmp: Path) -> _Child:
    """Start rank ``rank`` as torchrun would (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT in its environment), the job on its stdin."""
    error_file = tmp / f"rank-{rank}.json"
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
           "MASTER_ADDR": HOST, "MASTER_PORT": str(port), ERROR_FILE_ENV: str(error_file),
           PARENT_ENV: str(os.getpid()), "PYTHONPATH": path}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", RANK_MAIN], stdin=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(pickle.dumps(job))
        proc.stdin.close()
    except BrokenPipeError:  # it died at once: _wait_for_ranks reports it
        pass
    return _Child(rank, proc, error_file)


def _ready_key(rank: int) -> str:
    return f"stagewise/ready/{rank}"


def _wait_for_ranks(store: dist.TCPStore, children: list[_Child]) -> None:
    """Rank 0: wait until ranks 1..N-1 reached the store, failing as soon as one died."""
    keys = [_ready_key(c.rank) for c in children]
    deadline = time.monotonic() + TIMEOUT.total_seconds()
    while not store.check(keys):
        dead = [c for c in children if c.exitcode is not None]
        if dead or time.monotonic() > deadline:
            raise _failure(dead)
        time.sleep(0.1)


def _ranks(job: _Job, rank: int, world: int, store: dist.TCPStore, wait=None) -> Ranks:
    """This process's Ranks; ``wait()`` runs before it joins the group (rank 0: until the
    others are ready)."""

    def join() -> None:
        if wait is not None:
            wait()
        dist.init_process_group(
            job.backend, store=store, rank=rank, world_size=world, timeout=TIMEOUT
        )

    return Ranks(rank, world, _rank_device(job, rank), job.has_control, join)


def _warm_up(plan: Plan) -> None:
    """Import what building the stage imports (the optimizer's machinery, the model's
    library: seconds each), on every rank at once before rank 0 trains the tokenizer."""
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
    if plan.model.arch == "gpt2":
        import transformers.models.gpt2.modeling_gpt2  # noqa: F401
    elif plan.model.arch == "llama":
        import transformers.models.llama.modeling_llama  # noqa: F401


def _other_failure(children: list[_Child], exc: RuntimeError) -> RankFailed | None:
    """The error of another rank when it made ``exc`` (gloo's "Connection reset by peer",
    a lost nccl peer) on rank 0, else None: rank 0's own error."""
    if isinstance(exc, (TrainingDiverged, RankFailed)):  # rank 0 found it (too)
        return None
    deadline = time.monotonic() + 3
    while not (dead := [c for c in children if c.exitcode not in (None, 0)]):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return _failure(dead)


def _failure(dead: list[_Child]) -> RankFailed:
    """The error a dead rank reported, or how it ended (killed, out of memory)."""
    for c in dead:
        try:
            report = json.loads(c.error_file.read_text())
        except (OSError, ValueError):
            continue
        exc = RankFailed(f"rank {c.rank}: {report['message']}")
        exc.add_note(f"rank {c.rank}'s traceback:\n{report['traceback']}")
        return exc
    codes = ", ".join(f"rank {c.rank} exit code {c.exitcode}" for c in dead) or "no answer"
    return RankFailed(f"another rank of the stage stopped ({codes})")


def run_ranks(
    plan: Plan,
    stage_index: int,
    out_dir: Path,
    sink: MetricSink,
    control: Control | None,
    init_from: Path | None,
    max_steps: int | None,
) -> StageResult:
    """Run the stage on ``devices`` ranks, this process being rank 0 (see the module doc)."""
    from trainers import engine

    world = plan.stages[stage_index].devices
    job = _Job(plan, stage_index, out_dir, init_from, max_steps, control is not None,
               _backend(world))  # fmt: skip
    store = dist.TCPStore(HOST, 0, world, True, timeout=TIMEOUT, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="stagewise-ranks-") as tmp:
        children: list[_Child] = []
        ok = False
        try:
            children += [_start(job, r, world, store.port, Path(tmp)) for r in range(1, world)]
            _warm_up(plan)  # at the same time as the others
            ranks = _ranks(job, 0, world, store, lambda: _wait_for_ranks(store, children))
            result = engine.run_rank(plan, stage_index, out_dir, sink, control, init_from,
                                     max_steps, ranks)  # fmt: skip
            ok = True
            return result
        except RuntimeError as exc:
            other = _other_failure(children, exc)
            if other is None:
                raise
            raise other from exc
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            _end(children, FINISH_SECONDS if ok else 0)


def _end(children: list[_Child], grace: float) -> None:
    """Let the other ranks exit for up to ``grace`` seconds, then kill what is left."""
    deadline = time.monotonic() + grace
    for c in children:
        try:
            c.proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()


def _follow_parent() -> None:
    """Exit this process as soon as the process that started it is gone (also if it was
    gone before this one started)."""
    parent = int(os.environ[PARENT_ENV])

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def _report(exc: BaseException) -> None:
    """Leave this rank's error where rank 0 looks for it (written whole, then renamed)."""
    path = Path(os.environ[ERROR_FILE_ENV])
    report = {"message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    path.with_suffix(".tmp").write_text(json.dumps(report))
    path.with_suffix(".tmp").replace(path)


def rank_main() -> None:
    """Ranks 1..N-1 (started by ``run_ranks``): join the group and train this rank's share
    of the stage. The job comes on stdin, the rest in the environment."""
    _follow_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from trainers import engine
    from trainers.sinks import BaseSink

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        job: _Job = pickle.load(sys.stdin.buffer)
        torch.set_num_threads(engine.torch_threads(job.plan))
        store = dist.TCPStore(HOST, int(os.environ["MASTER_PORT"]), world, False, timeout=TIMEOUT)
        _warm_up(job.plan)
        store.set(_ready_key(rank), "1")
        ranks = _ranks(job, rank, world, store)
        ranks.connect()
        engine.run_rank(job.plan, job.stage_index, job.out_dir, BaseSink(), None,
                        job.init_from, job.max_steps, ranks)  # fmt: skip
    except (StageCanceled, TrainingDiverged):
        pass  # rank 0 stopped the stage (or found the same loss) and reports it
    except BaseException as exc:
        _report(exc)
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
