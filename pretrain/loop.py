"""The pretraining loop (moco-v3 style): ONE :func:`train_step`, and :class:`Loop`, epochs of it with hooks around
them (detectron2 / mmengine style; the hooks themselves: :mod:`pretrain.hooks`; the set-up: :mod:`pretrain.train`).
The benchmarks (``tools/bench_pretrain.py``, ``tools/bench_e2e.py``) time this same :func:`train_step`.

A step's loss is averaged over processes after the step (NaN or inf stops the run: :class:`NonFiniteLoss`);
the same all-reduce carries the processes' stop requests (:mod:`lewel_bench.signals`), so that every process
stops after the same step. A stop writes the checkpoint of that iteration (a stop at an epoch end before its
kNN pass and images: the state from before them, marked ``epoch_end_pending``, which the resumed run does
first), runs the signal handler that was there before (submitit's requeues the job) and raises
:class:`~lewel_bench.signals.Stopped`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lewel_bench import dist as ldist
from lewel_bench.checkpoint import non_finite_keys
from lewel_bench.errors import NonFiniteError
from lewel_bench.io import atomic_torch_save
from lewel_bench.optim import Schedule, optimizer_for, schedule_from_config, set_lr
from lewel_bench.signals import StopRequest, signal_name
from lewel_bench.stage import RunIdentity
from lewel_bench.tblog import MetricWriter
from lewel_bench.utils import amp_autocast, amp_step, get_rng_state

from .augment import views_to_device
from .data import EpochBatchSampler, MultiViewDataset, loader_workers
from .methods import SSLMethod
from .state import CHECKPOINT, METRICS, check_finite_state, checkpoint_state

log = logging.getLogger(__name__)


class NonFiniteLoss(NonFiniteError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


# --------------------------------------------------------------------------------------------------
# the step
# --------------------------------------------------------------------------------------------------
@dataclass
class StepState:
    """What one training step needs. ``model``: what the forward goes through (the DDP wrapper; None: the method);
    ``total``: the run's iterations (the EMA momentum's schedule); ``schedule``: the lr per iteration (None: the
    optimiser's lr stays); ``batched``: the views arrive as crops + parameters (``aug.batched``)."""

    method: SSLMethod
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    total: int
    schedule: Schedule | None = None
    model: torch.nn.Module | None = None
    amp: bool = False
    channels_last: bool = False
    batched: bool = False
    clip_grad_norm: float | None = None


@dataclass
class StepOutput:
    """A step's loss (this process's; ``loss_value``: averaged over processes, set by the loop), the method's log
    terms, the EMA momentum, the images of this process and the compute threads it ran with."""

    iteration: int
    loss: torch.Tensor
    logs: dict
    momentum: float
    images: int
    threads: int
    loss_value: float = float("nan")


def build_step(method: SSLMethod, cfg: dict, device: torch.device, total: int, iters_per_epoch: int, amp: bool,
               channels_last: bool, batched: bool = False, schedule: bool = True) -> StepState:
    """The step of ``cfg`` as the loop runs it: its optimiser (``optim``), its lr schedule over ``total``
    iterations (``schedule``; ``schedule=False``: none), an AMP grad scaler (CUDA with ``amp``)."""
    return StepState(
        method=method, optimizer=optimizer_for(method, cfg["optim"]),
        scaler=torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda"), device=device, total=total,
        schedule=schedule_from_config(cfg["schedule"], total, iters_per_epoch, base_lr=cfg["optim"]["lr"])
        if schedule else None, amp=amp, channels_last=channels_last, batched=batched,
        clip_grad_norm=cfg["optim"].get("clip_grad_norm"))


def train_step(s: StepState, batch: Sequence, it: int) -> StepOutput:
    """Training step ``it`` (0-based): the views on the device (``aug.batched``: their photometric ops there;
    channels_last), the lr and EMA momentum of ``it``, forward (AMP on CUDA), backward, optimiser step (gradient
    clipping), the target's EMA update."""
    views = [views_to_device(v, s.device, s.batched) for v in batch]
    if s.channels_last:
        views = [x.contiguous(memory_format=torch.channels_last) for x in views]
    if s.schedule is not None:
        set_lr(s.optimizer, s.schedule, it)
    m = s.method.momentum_at(it, s.total)
    s.method.iteration = it
    with amp_autocast(s.device, s.amp):
        loss, logs = (s.model if s.model is not None else s.method)(views)
    amp_step(loss, s.optimizer, s.scaler, s.clip_grad_norm)
    s.method.update_target(m)
    return StepOutput(it, loss, logs, m, views[0].shape[0], torch.get_num_threads())


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------
class Hook:
    """A piece of the loop's work around the step; every method is a no-op unless a hook overrides it."""

    def before_train(self, loop: Loop) -> None:
        pass

    def before_epoch(self, loop: Loop) -> None:
        pass

    def before_step(self, loop: Loop) -> None:
        pass

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        pass

    def after_epoch(self, loop: Loop) -> None:
        pass

    def after_train(self, loop: Loop) -> None:
        pass


@dataclass
class Loop:
    """Epochs of :func:`train_step` from iteration ``it`` to ``total`` with ``hooks`` around them; the state the
    hooks read. ``epoch_end_cut``: a stop request cut the current epoch end short (its checkpoint then keeps
    ``boundary_rng``, the RNG states from before it)."""

    cfg: dict
    exp: str
    out_dir: Path
    info: ldist.DistInfo
    identity: RunIdentity
    step: StepState
    dataset: MultiViewDataset
    ipe: int
    it: int
    stop: StopRequest
    writer: MetricWriter
    hooks: list[Hook]
    epoch_end_pending: bool = False
    epoch: int = 0
    epoch_end_cut: bool = False
    boundary_rng: dict | None = None
    last_good: int = 0
    bar: tqdm = field(init=False)

    def __post_init__(self) -> None:
        self.total = self.ipe * self.cfg["epochs"]
        self.last_good = self.it
        self.ckpt_path, self.metrics_path = self.out_dir / CHECKPOINT, self.out_dir / METRICS
        self.bar = tqdm(total=self.total, initial=self.it, disable=not self.info.is_main, desc=self.exp,
                        dynamic_ncols=True, mininterval=float(self.cfg.get("tqdm_interval", 2.0)))

    @property
    def method(self) -> SSLMethod:
        return self.step.method

    def lr(self, it: int) -> float:
        """The config's lr at iteration ``it`` (what the logs show)."""
        return self.step.schedule.lr(self.cfg["optim"]["lr"], it)

    def run(self) -> None:
        """The epochs (a stop request ends them with :class:`~lewel_bench.signals.Stopped`)."""
        self._call("before_train")
        if self.epoch_end_pending:  # stopped before this epoch end: do it as the unbroken run did
            self._end_epoch()
        while self.it < self.total:
            self.epoch = self.it // self.ipe
            loader = self._loader()
            self.method.train()
            self._call("before_epoch")
            for batch in loader:
                self._call("before_step")
                out = train_step(self.step, batch, self.it)
                self.it += 1
                stop = self._reduce(out)
                self._call("after_step", out)
                if stop:
                    self._halt(epoch_end_pending=self.it % self.ipe == 0)
            self._end_epoch()

    def finish(self) -> None:
        """After the last epoch: the ``after_train`` hooks (backbone, speed record)."""
        self.bar.close()
        self._call("after_train")
        self.writer.close()

    def _call(self, event: str, *args: object) -> None:
        for h in self.hooks:
            getattr(h, event)(self, *args)

    def _loader(self) -> DataLoader:
        """This epoch's batches from iteration ``it`` on (this process's share of each global batch)."""
        world = self.info.world_size
        sampler = EpochBatchSampler(len(self.dataset), self.cfg["batch_size"] // world, int(self.cfg["seed"]),
                                    self.epoch, self.it % self.ipe, self.info.rank, world)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=loader_workers(self.cfg),
                          pin_memory=self.step.device.type == "cuda")

    def _reduce(self, out: StepOutput) -> bool:
        """The loss averaged over processes (``out.loss_value``; NaN or inf stops the run); returns whether any
        process was asked to stop (the same all-reduce carries it)."""
        x = out.loss.detach().float()
        if ldist.is_dist():
            t = torch.stack([x, x.new_tensor(float(self.stop.requested))])
            torch.distributed.all_reduce(t)
            out.loss_value, stop = (t[0] / ldist.get_world_size()).item(), bool(t[1].item() > 0)
        else:
            out.loss_value, stop = x.item(), self.stop.requested
        if not math.isfinite(out.loss_value):
            self.bar.close()
            raise NonFiniteLoss(f"{self.exp}: loss is {out.loss_value} at iteration {out.iteration} (epoch "
                                f"{self.epoch}, lr {self.lr(out.iteration):.4g}); stopped. Last good checkpoint: "
                                f"{self.ckpt_path} at iteration {self.last_good}")
        return stop

    def _end_epoch(self) -> None:
        """After an epoch's last step: the ``after_epoch`` hooks (kNN monitor, images, the epoch's checkpoint),
        then a stop if any process was asked."""
        self.boundary_rng, self.epoch_end_cut = get_rng_state(), False
        self._call("after_epoch")
        self.writer.flush()
        if self.stop.agree(self.step.device):
            self._halt()

    def save(self, epoch_end_pending: bool = False, rng: dict | None = None) -> None:
        """``checkpoint.pth`` of iteration ``it`` (main process), once every process's state is finite."""
        state = checkpoint_state(self.method, self.step.optimizer, self.step.scaler, self.cfg, self.it, self.ipe,
                                 self.total, self.exp, self.identity, epoch_end_pending, rng)
        bad = torch.tensor([float(bool(non_finite_keys({k: state[k] for k in ("model", "target", "queue")})))],
                           device=self.step.device)
        if ldist.is_dist():
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item():
            self.bar.close()
            check_finite_state(state, self.it, self.last_good, self.ckpt_path)  # names the tensor on its rank
            raise NonFiniteError(f"another process holds NaN or inf at iteration {self.it}; stopped without saving. "
                                 f"Last good checkpoint: {self.ckpt_path} at iteration {self.last_good}")
        if self.info.is_main:
            atomic_torch_save(state, self.ckpt_path)
        self.last_good = self.it
        ldist.barrier()

    def _halt(self, epoch_end_pending: bool = False) -> NoReturn:
        """Stop on a signal: the checkpoint of this iteration (unless it is written), the handler that was there
        before ours (submitit's requeues the job), then :class:`~lewel_bench.signals.Stopped`."""
        signum = self.stop.agreed_signal(self.step.device)
        if self.last_good != self.it:
            self.save(epoch_end_pending)
        self.bar.close()
        self.writer.close()
        self.stop.forward()
        try:
            ldist.barrier()  # every process has passed the handler (the main one may have exited: requeued)
        except RuntimeError:
            pass
        raise self.stop.stopped(f"{self.exp}: stopped by {signal_name(signum)} after iteration {self.it} of "
                                f"{self.total} (epoch {self.it / self.ipe:.2f} of {self.cfg['epochs']}); the state "
                                f"is saved in {self.ckpt_path}: the same command resumes it", signum)
