"""Training and evaluation loops of the torchvision backend (iteration-based, as detectron2's).

Schedule (detectron2's ``WarmupMultiStepLR``, as :class:`lewel_bench.optim.Schedule`): linear warm-up
from ``warmup_factor`` over ``warmup_iters``, then the learning rate times ``gamma`` at each of ``steps``.
SGD with momentum 0.9, weight decay on every parameter except the ``no_decay`` ones (default: normalisation
layers, detectron2's ``WEIGHT_DECAY_NORM 0``).
``ims_per_batch`` is the global batch (split over processes). The loop saves ``last.pth`` (model,
optimizer, iteration, RNG states) atomically every ``checkpoint_period`` iterations and at the end,
and resumes from it when run again with the same output folder.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lewel_bench.checkpoint import non_finite_keys, torch_load
from lewel_bench.errors import NonFiniteError
from lewel_bench.io import atomic_torch_save
from lewel_bench.optim import Schedule, build_optimizer, param_groups, set_lr
from lewel_bench.stage import StageError
from lewel_bench.utils import amp_step, get_rng_state, set_rng_state

from .datasets import DetectionDataset, collate
from .tv_models import set_test_size

log = logging.getLogger(__name__)

def infinite_batches(ds: DetectionDataset, batch: int, seed: int, rank: int, world: int, num_workers: int,
                     start_iter: int) -> Iterator[tuple[list, list]]:
    """Endless shuffled batches; the shuffle of epoch ``e`` depends on (seed, e) only, so resuming at
    ``start_iter`` continues the same sequence of images."""
    n = len(ds)
    per_epoch = max(1, n // (batch * world))
    epoch, skip = divmod(start_iter, per_epoch)
    while True:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        idx = order[rank::world][: per_epoch * batch]
        sub = torch.utils.data.Subset(ds, idx[skip * batch:])
        loader = torch.utils.data.DataLoader(sub, batch_size=batch, shuffle=False, num_workers=num_workers,
                                             collate_fn=collate, drop_last=True,
                                             persistent_workers=False)
        yield from loader
        epoch, skip = epoch + 1, 0


def train(model: nn.Module, ds: DetectionDataset, solver: Mapping[str, Any], out_dir: Path, device: torch.device,
          seed: int, rank: int = 0, world: int = 1, num_workers: int = 0, amp: bool = False) -> None:
    """Train ``model`` for ``solver.max_iter`` iterations, resuming from ``out_dir/last.pth``."""
    ims = int(solver["ims_per_batch"])
    if ims % world:
        raise ValueError(f"ims_per_batch {ims} is not divisible by the {world} processes")
    batch = ims // world
    core = model.module if hasattr(model, "module") else model
    opt = build_optimizer(param_groups(core, solver["weight_decay"], solver.get("no_decay", ["norm"])),
                          {"name": "sgd", "lr": solver["base_lr"], "momentum": solver.get("momentum", 0.9),
                           "weight_decay": solver["weight_decay"]})
    max_iter = int(solver["max_iter"])
    schedule = Schedule("step", max_iter, warmup=int(solver.get("warmup_iters", 100)),
                        warmup_start=float(solver.get("warmup_factor", 0.001)), milestones=tuple(solver["steps"]),
                        gamma=float(solver.get("gamma", 0.1)))
    start = 0
    ckpt = out_dir / "last.pth"
    if ckpt.is_file():
        state = torch_load(ckpt, "detection training state", StageError)
        core.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["iter"])
        set_rng_state(state["rng"])
        log.info("resumed from %s at iteration %d / %d", ckpt, start, max_iter)
    if start >= max_iter:
        return
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    model.train()
    set_test_size(core, training=True)
    batches = infinite_batches(ds, batch, seed, rank, world, num_workers, start)
    t0, period = time.time(), int(solver.get("checkpoint_period", 1000))
    log_every = int(solver.get("log_period", 20))
    for it in range(start, max_iter):
        set_lr(opt, schedule, it)
        images, targets = next(batches)
        images = [x.to(device, non_blocking=True) for x in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items() if k != "index"} for t in targets]
        with torch.autocast(device.type, enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise NonFiniteError(f"detection loss is {loss.item()} at iteration {it} "
                                 f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}); {ckpt} keeps the "
                                 f"last finite state")
        amp_step(loss, opt, scaler)
        done = it + 1
        if rank == 0 and (done % log_every == 0 or done == max_iter or it == start):
            el = time.time() - t0
            log.info("iter %d/%d loss %.3f (%s) lr %.5f  %.2fs/it", done, max_iter, loss.item(),
                     " ".join(f"{k.removeprefix('loss_')}={v.item():.3f}" for k, v in losses.items()),
                     opt.param_groups[0]["lr"], el / (done - start))
        if rank == 0 and (done % period == 0 or done == max_iter):
            sd = core.state_dict()
            bad = non_finite_keys(sd)
            if bad:
                raise NonFiniteError(f"detection weights hold NaN or inf at iteration {done} (first: {bad[0]}); "
                                     f"{ckpt} keeps the last finite state")
            atomic_torch_save({"model": sd, "optimizer": opt.state_dict(), "iter": done, "rng": get_rng_state()}, ckpt)


@torch.no_grad()
def predict(model: nn.Module, ds: DetectionDataset, device: torch.device, rank: int = 0, world: int = 1,
            batch: int = 1, amp: bool = False, convert: Callable[[int, dict], Any] | None = None) -> dict[int, Any]:
    """Predictions (original-image coordinates, 0-based class labels) for this rank's share of ``ds``.

    ``convert(index, pred)`` turns each image's prediction into what is kept (e.g. COCO results with
    RLE masks, so full-size mask arrays are never accumulated).
    """
    core = model.module if hasattr(model, "module") else model
    core.eval()
    set_test_size(core, training=False)
    idx = list(range(rank, len(ds), world))
    out: dict[int, dict[str, np.ndarray]] = {}
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):  # type: ignore
            return x
    for s in tqdm(range(0, len(idx), batch), desc="inference", disable=rank != 0, mininterval=30):
        items = [ds[i] for i in idx[s:s + batch]]
        with torch.autocast(device.type, enabled=amp):
            preds = core([x.to(device) for x, _ in items])
        for (_, t), p in zip(items, preds):
            d = {"boxes": p["boxes"].float().cpu().numpy(), "scores": p["scores"].float().cpu().numpy(),
                 "labels": (p["labels"].cpu().numpy() - 1)}
            if "masks" in p:
                d["masks"] = p["masks"].float().cpu().numpy()
            i = int(t["index"])
            out[i] = convert(i, d) if convert else d
    return out


@torch.no_grad()
def precise_bn(model: nn.Module, ds: DetectionDataset, iters: int, batch: int, device: torch.device, seed: int,
               rank: int = 0, world: int = 1, amp: bool = False) -> None:
    """detectron2's ``PRECISE_BN`` (run after training): recompute every BatchNorm's running mean/var as the
    true average over ``iters`` training batches (momentum ``None`` = cumulative average)."""
    if iters <= 0:
        return
    core = model.module if hasattr(model, "module") else model
    bns = [m for m in core.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    core.train()
    set_test_size(core, training=True)
    batches = infinite_batches(ds, batch, seed + 7919, rank, world, 0, 0)
    for _ in range(iters):
        images, targets = next(batches)
        with torch.autocast(device.type, enabled=amp):
            model([x.to(device) for x in images],
                  [{k: v.to(device) for k, v in t.items() if k != "index"} for t in targets])
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    log.info("precise BN: running statistics of %d BatchNorm layers recomputed over %d batches", len(bns), iters)
