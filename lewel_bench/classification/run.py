"""Resumable run state, the epoch loop, and the stage set-up the three image evaluations share."""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import (
    Backbone,
    BackboneError,
    non_finite_keys,
    resolve_backbone,
    torch_load,
)
from ..config import load_config
from ..dist import barrier, init_distributed
from ..errors import NonFiniteError
from ..io import atomic_torch_save
from ..optim import schedule_from_config, set_lr
from ..records import now_iso
from ..stage import Stage, StageError, open_stage
from ..utils import get_rng_state, seed_everything, set_rng_state, setup_logging
from .loops import evaluate, train_one_epoch
from .models import wrap_ddp

log = logging.getLogger(__name__)


CHECKPOINT = "checkpoint.pth"


class RunState:
    """``<out>/checkpoint.pth``: epoch, trainable weights, optimiser, scaler, RNG, history (atomic writes).

    The state carries the run's ``run_id``; the folder itself is bound to the run by
    :class:`lewel_bench.stage.RunFolder`, so a state of another run is an error, never a silent restart.
    """

    def __init__(self, out_dir: str | Path, run_id: str) -> None:
        self.path = Path(out_dir) / CHECKPOINT
        self.run_id = run_id

    def load(self) -> dict | None:
        """The saved state of this run, or None when there is none (another run's state is refused)."""
        if not self.path.is_file():
            return None
        state = torch_load(self.path, "saved run state", StageError)
        if state.get("run_id") != self.run_id:
            raise StageError(f"{self.path} belongs to another run (run id {state.get('run_id')!r}, this run "
                             f"{self.run_id!r}): pass --fresh to discard it")
        log.info("resuming from %s (epoch %d done)", self.path, state["epoch"])
        return state

    def save(self, epoch: int, weights: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             scaler: Any = None, history: list | None = None) -> None:
        weights = {k: v.detach().cpu() for k, v in weights.items()}
        bad = non_finite_keys(weights)
        if bad:
            raise NonFiniteError(f"epoch {epoch}: the trained weights hold NaN or inf ({', '.join(bad[:3])}); "
                                 f"{self.path} keeps the last finite state")
        atomic_torch_save({"run_id": self.run_id, "epoch": epoch, "weights": weights,
                           "optimizer": optimizer.state_dict(),
                           "scaler": scaler.state_dict() if scaler is not None else None,
                           "rng": get_rng_state(), "history": history or []}, self.path)


def restore(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None) -> None:
    """Load weights (``strict=False`` is never needed: the keys are the trainable ones we saved)."""
    missing, unexpected = model.load_state_dict(state["weights"], strict=False)
    saved = set(state["weights"])
    if unexpected or any(k in saved for k in missing):
        raise StageError(f"resume: the saved state does not fit the model (unexpected {unexpected[:5]})")
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


def fit(stage: Stage, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
        val_loader: DataLoader, weights: Callable[[], Mapping[str, torch.Tensor]],
        lr_names: Sequence[str] = ("lr",)) -> list[dict]:
    """The epoch loop shared by linear probing and fine-tuning; resumes from ``<out>/checkpoint.pth``.

    ``weights()`` returns what is saved each epoch (the trainable tensors); ``lr_names`` names the
    optimizer's param-group learning rates in the per-epoch history. A non-finite training loss stops the
    run (:class:`~lewel_bench.errors.NonFiniteError`) with the last finite state kept.
    """
    cfg, dev = stage.cfg, stage.info.device
    amp = bool(cfg.get("amp", True)) and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state = RunState(stage.out, stage.identity.run_id)
    saved = state.load()
    start, history = 0, []
    if saved:
        restore(saved, model, optimizer, scaler)
        start, history = saved["epoch"], saved["history"]
    net = wrap_ddp(model, stage.info)
    epochs = int(cfg["epochs"])
    schedule = schedule_from_config(cfg["schedule"], epochs)  # per epoch
    for epoch in range(start, epochs):
        lrs = set_lr(optimizer, schedule, epoch)
        stats = train_one_epoch(net, train_loader, optimizer, dev, epoch, amp, scaler, cfg.get("log_every", 50))
        if not math.isfinite(stats["loss"]):
            raise NonFiniteError(f"{stage.name}: training loss is {stats['loss']} in epoch {epoch + 1} "
                                 f"(lr {'/'.join(f'{x:.4g}' for x in lrs)}); {state.path} keeps the last finite state")
        stats.update(epoch=epoch + 1, **dict(zip(lr_names, lrs)))
        ev = cfg.get("eval_every", 0)
        if ev and (epoch + 1) % ev == 0 and epoch + 1 < epochs:
            stats.update({f"val_{k}": v for k, v in evaluate(model, val_loader, dev, amp).items()})
        history.append(stats)
        stage.writer.scalars(stats, epoch + 1, "train")
        log.info("epoch %d/%d lr %s loss %.4f train top1 %.2f (%.1fs)", epoch + 1, epochs,
                 "/".join(f"{x:.4g}" for x in lrs), stats["loss"], stats["train_top1"], stats["time_s"])
        if stage.info.is_main and (epoch + 1 == epochs or (epoch + 1) % cfg.get("save_every", 1) == 0):
            state.save(epoch + 1, weights(), optimizer, scaler, history)
        barrier()
    return history


# --------------------------------------------------------------------------------------------------
# stage set-up shared by the three command lines
# --------------------------------------------------------------------------------------------------
IMAGENET_PARTS = ("train", "val")


def setup_stage(name: str, args: argparse.Namespace, config_dir: str | Path, code_version: int,
                extra_identity: Mapping[str, Any] | None = None,
                prepare: Callable[[dict, Path], Mapping[str, Any]] | None = None,
                choose_config: Callable[[Backbone], str] | None = None) -> Stage:
    """Logging, process group, config, backbone intake, data root, identity and output folder
    (:func:`lewel_bench.stage.open_stage`).

    A checkpoint that is missing, unreadable, or lacks / mis-shapes backbone tensors ends the run here
    with :class:`BackboneError`'s message (counts and first keys); nothing is evaluated. ``prepare(cfg, root)``
    (optional) completes the config and returns more identity (e.g. the subset file's digest).
    ``--config auto`` with ``choose_config(backbone)``: the config is the one chosen for the checkpoint (logged).
    """
    start = now_iso()
    info = init_distributed()
    setup_logging(rank=info.rank)
    auto = args.config == "auto" and choose_config is not None
    cfg = None if auto else load_config(args.config, config_dir, args.overrides)
    try:
        bb = resolve_backbone(args.ckpt, arch=cfg.get("arch") if cfg else None, seed=args.seed,
                              prefix=getattr(args, "ckpt_prefix", None), layout=getattr(args, "layout", None))
    except BackboneError as e:
        hint = ("" if str(args.ckpt).startswith("random:") or Path(args.ckpt).exists() else
                " (pretrain first, e.g. `make pretrain EXP=<exp>`, or pass another checkpoint with CKPT= / --ckpt)")
        raise BackboneError(f"checkpoint refused: {e}{hint}") from None
    if auto:
        args.config = choose_config(bb)
        log.info("%s: --config auto: %s for this %s checkpoint", name, args.config, bb.meta.get("method", "unknown"))
        cfg = load_config(args.config, config_dir, args.overrides)
    if bb.source_format == "random":
        log.warning("evaluating an explicitly requested RANDOM-INIT %s backbone (recorded as method 'random')", bb.arch)
    root = args.data or cfg.get("data", {}).get("root")
    if not root:
        raise StageError(f"{name}: no data root: pass --data ROOT (ImageNet layout with train/ and val/)")
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise StageError(f"{name}: {root} is not an ImageNet-layout root (expected {root}/train and {root}/val)")
    extra = dict(extra_identity or {})
    if prepare is not None:
        extra.update(prepare(cfg, root))
    st = open_stage(name, args, cfg, bb, info, root, IMAGENET_PARTS, code_version, start, extra,
                    state_files=(CHECKPOINT,))
    seed_everything(args.seed + info.rank)
    log.info("%s: config %s, backbone %s (%s, method %s), %d rank(s) on %s", name, cfg["_meta"]["config_path"],
             bb.path, bb.arch, bb.meta.get("method"), info.world_size, info.device)
    return st
