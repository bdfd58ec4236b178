"""Image-classification evaluation shared by ``eval_linear``, ``eval_semisup`` and ``eval_knn``.

One copy of every piece the three stages share:

* models: :class:`LinearProbe` (frozen backbone in eval mode + a linear classifier, Sec. 4.1) and
  :func:`build_finetune_model` (the whole torchvision ResNet trained, Sec. 4.2), both built from a
  validated :class:`lewel_bench.checkpoint.Backbone`;
* transforms: RandomResizedCrop + flip (train) and resize + center crop (val), sizes from the config;
* data loaders that shard over ranks (train: ``DistributedSampler``; eval: every sample exactly once);
* the train / eval loops (top-1 / top-5 from correct counts all-reduced over ranks), feature extraction
  for kNN over ranks (per shard by :func:`lewel_bench.knn.extract_features`), the optimiser registry
  (SGD; LARS = :class:`pretrain.optim.LARS`) and the per-epoch lr schedules (step, cosine);
* resumable run state: an atomic ``checkpoint.pth`` in the run's output folder;
* the stage set-up of the three (config, checkpoint intake, ImageNet root), on the contract of
  :mod:`lewel_bench.stage` (identity, output folder, record).
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision import transforms as T

from .checkpoint import Backbone, BackboneError, backbone_into, non_finite_keys, resolve_backbone, torch_load
from .config import load_config
from .dist import DistInfo, barrier, get_rank, get_world_size, init_distributed, is_dist
from .errors import NonFiniteError
from .io import atomic_torch_save
from .knn import extract_features
from .models import build_torchvision_resnet
from .records import now_iso
from .registry import Registry
from .stage import Stage, StageError, open_stage
from .utils import amp_autocast, amp_step, default_num_workers, get_rng_state, seed_everything, set_rng_state, setup_logging

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------------
def train_transform(crop_size: int = 224, scale: Sequence[float] = (0.08, 1.0)) -> T.Compose:
    """RandomResizedCrop + horizontal flip + ImageNet normalisation (the standard linear / fine-tune train view)."""
    return T.Compose([T.RandomResizedCrop(crop_size, scale=tuple(scale)), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def val_transform(crop_size: int = 224, resize_size: int = 256) -> T.Compose:
    """Resize (short side) + center crop + normalisation (256 / 224 on ImageNet)."""
    return T.Compose([T.Resize(resize_size), T.CenterCrop(crop_size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def transforms_from_config(data_cfg: Mapping[str, Any]) -> tuple[T.Compose, T.Compose]:
    """``(train, val)`` transforms from ``data.crop_size``, ``data.resize_size``, ``data.scale``."""
    crop, resize = int(data_cfg["crop_size"]), int(data_cfg["resize_size"])
    return train_transform(crop, data_cfg.get("scale", (0.08, 1.0))), val_transform(crop, resize)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r gets indices r, r + W, r + 2W, ... (every sample once, no padding).

    ``DistributedSampler`` pads the last batch with repeated samples, which would bias the accuracy;
    this one does not, and the correct counts are summed over ranks.
    """

    def __init__(self, n: int, rank: int | None = None, world_size: int | None = None) -> None:
        self.n = n
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The config's batch size is the global one (as in the paper); each rank takes its share."""
    if global_batch % world_size:
        log.warning("batch size %d is not divisible by %d ranks; using %d per rank",
                    global_batch, world_size, global_batch // world_size)
    return max(1, global_batch // world_size)


def make_loader(dataset: Dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int | None = None,
                drop_last: bool = False) -> DataLoader:
    """A loader for this rank: shuffled ``DistributedSampler`` (call ``set_epoch``) or a :class:`ShardSampler`."""
    world, rank = get_world_size(), get_rank()
    bs = per_rank_batch(batch_size, world)
    if train and math.ceil(len(dataset) / world) % bs == 1:
        drop_last = True  # a last training batch of one image would break BatchNorm in train mode
    sampler: Sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
                        if train else ShardSampler(len(dataset), rank, world))
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(dataset, batch_size=bs, sampler=sampler,
                      num_workers=workers, pin_memory=torch.cuda.is_available(), drop_last=drop_last and train,
                      persistent_workers=workers > 0)


def num_classes_of(dataset: Dataset) -> int:
    """Number of classes of an ImageFolder-like dataset (``classes`` attribute) or from its targets."""
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(f"{type(dataset).__name__} has neither 'classes' nor 'targets'; cannot count classes")
    return int(max(targets)) + 1


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
def _init_fc(fc: nn.Linear) -> None:
    """Classifier init of MoCo / SimSiam linear evaluation: N(0, 0.01) weights, zero bias."""
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)


class LinearProbe(nn.Module):
    """Frozen backbone f_theta (always in eval mode, no gradient) + a trainable linear classifier (Sec. 4.1).

    ``norm="bn"`` puts a parameter-free BatchNorm1d (``affine=False``, as in MAE's linear probe) before
    the classifier: still a linear classifier at test time (a fixed affine map folded into ``fc``), but
    insensitive to the feature scale. Its running statistics are a cumulative average
    (``momentum=None``), exact for a frozen backbone even after few iterations. The paper recipes use ``norm="none"``; the mini config uses
    ``bn`` because briefly pretrained mini backbones give features with norms around 100, on which
    SGD at lr 0.4 diverges.
    """

    def __init__(self, bb: Backbone, num_classes: int, norm: str = "none") -> None:
        super().__init__()
        if norm not in ("none", "bn"):
            raise ValueError(f"linear probe norm {norm!r}: expected 'none' or 'bn'")
        net = build_torchvision_resnet(bb.arch, num_classes)
        backbone_into(net, bb)
        self.fc = net.fc
        _init_fc(self.fc)
        self.norm = nn.BatchNorm1d(self.fc.in_features, affine=False, momentum=None) if norm == "bn" else nn.Identity()
        net.fc = nn.Identity()
        self.backbone = net
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "LinearProbe":
        """Only the head follows ``mode``; BN statistics of the frozen backbone never change."""
        self.training = mode
        self.norm.train(mode)
        self.fc.train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.backbone(x)
        return self.fc(self.norm(feats.float()))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The head: ``fc.*`` and, with ``norm="bn"``, the running statistics ``norm.*``."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}


class ProbeHead(nn.Module):
    """The trainable part of a :class:`LinearProbe` (``norm`` + ``fc``, shared with it) on precomputed features.

    Trained on cached frozen features it computes what the probe computes on the images they came from;
    its state dict has the keys of ``LinearProbe.trainable_state_dict``.
    """

    def __init__(self, probe: LinearProbe) -> None:
        super().__init__()
        self.norm, self.fc = probe.norm, probe.fc

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(feats.float()))


def build_finetune_model(bb: Backbone, num_classes: int, norm: str = "none") -> nn.Module:
    """The whole torchvision ResNet, initialised from ``bb`` with a fresh classifier (Sec. 4.2).

    ``norm="bn"``: the classifier is ``fc = Sequential(BatchNorm1d(affine=False), Linear)`` (see
    :class:`LinearProbe`; mini configs only). Classifier parameters are those under ``fc.``.
    """
    if norm not in ("none", "bn"):
        raise ValueError(f"fine-tuning head norm {norm!r}: expected 'none' or 'bn'")
    net = build_torchvision_resnet(bb.arch, num_classes)
    backbone_into(net, bb)
    _init_fc(net.fc)
    if norm == "bn":
        net.fc = nn.Sequential(nn.BatchNorm1d(net.fc.in_features, affine=False, momentum=None), net.fc)
    return net


def build_feature_extractor(bb: Backbone) -> nn.Module:
    """The backbone alone in eval mode (``fc = Identity``): pooled features for kNN."""
    net = build_torchvision_resnet(bb.arch, 1000)
    backbone_into(net, bb)
    net.fc = nn.Identity()
    return net.eval().requires_grad_(False)


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel when more than one rank (only parameters that require grad are synced)."""
    if not info.distributed:
        return model
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


# --------------------------------------------------------------------------------------------------
# optimisers and schedules
# --------------------------------------------------------------------------------------------------
OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                           weight_decay=cfg.get("weight_decay", 0.0), nesterov=cfg.get("nesterov", False))


@OPTIMIZERS.register("lars")
def _lars(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    from pretrain.optim import LARS  # the one LARS copy (pretraining owns it); groups may set lars_exclude

    return LARS(groups, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9), weight_decay=cfg.get("weight_decay", 0.0),
                trust_coefficient=cfg.get("trust_coefficient", 0.001))


def build_optimizer(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``cfg`` = the config's ``optim`` block (``name``, ``lr``, ``momentum``, ``weight_decay``, ...).

    Each group may carry its own ``lr``; it is remembered as ``base_lr`` for the schedule.
    """
    opt = OPTIMIZERS.get(cfg["name"])(groups, cfg)
    for g in opt.param_groups:
        g.setdefault("base_lr", g["lr"])
    return opt


def lr_factor(epoch: int, sched: Mapping[str, Any], epochs: int) -> float:
    """Per-epoch lr multiplier: ``step`` (x ``gamma`` at each milestone) or ``cosine`` (0.5 (1 + cos(pi e / E)))."""
    kind = sched["name"]
    if kind == "step":
        return float(sched.get("gamma", 0.1)) ** sum(epoch >= m for m in sched["milestones"])
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if kind == "constant":
        return 1.0
    raise ValueError(f"unknown lr schedule {kind!r} (expected step, cosine or constant)")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> list[float]:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
    return [g["lr"] for g in optimizer.param_groups]


# --------------------------------------------------------------------------------------------------
# metrics, loops
# --------------------------------------------------------------------------------------------------
def topk_correct(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the k highest logits, for each k (k capped at #classes)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(target[:, None])
    return torch.stack([hit[:, : min(k, maxk)].any(dim=1).sum() for k in topk]).to(torch.float64)


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent (single process)."""
    c = topk_correct(logits, target, topk)
    return [float(x) * 100.0 / max(len(target), 1) for x in c]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if is_dist():
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                    epoch: int, amp: bool = False, scaler: "torch.amp.GradScaler | None" = None,
                    log_every: int = 50) -> dict[str, float]:
    """One epoch of cross-entropy training; ``model.train()`` (a :class:`LinearProbe` keeps its backbone in eval)."""
    model.train()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    channels_last = device.type == "cuda"
    tot_loss, tot_n, correct = torch.zeros((), dtype=torch.float64), 0, torch.zeros(2, dtype=torch.float64)
    t0 = time.time()
    for it, (images, target) in enumerate(loader):
        images, target = _to_device(images, device, channels_last), target.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), target)
        amp_step(loss, optimizer, scaler)
        n = target.shape[0]
        tot_loss += loss.detach().double().cpu() * n
        tot_n += n
        correct += topk_correct(logits.detach(), target).cpu()
        if log_every and (it + 1) % log_every == 0:
            log.info("epoch %d it %d/%d loss %.4f (%.1fs)", epoch, it + 1, len(loader), loss.item(), time.time() - t0)
    stats = all_reduce_sum(torch.cat([tot_loss.view(1), torch.tensor([float(tot_n)], dtype=torch.float64), correct])
                           .to(device)).cpu()
    n = max(stats[1].item(), 1.0)
    return {"loss": stats[0].item() / n, "train_top1": 100.0 * stats[2].item() / n,
            "train_top5": 100.0 * stats[3].item() / n, "time_s": time.time() - t0}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False) -> dict[str, float]:
    """Top-1 / top-5 in percent over the whole (sharded) set: correct counts summed over ranks."""
    model.eval()
    t0 = time.time()
    channels_last = device.type == "cuda"
    counts = torch.zeros(3, dtype=torch.float64)  # top1, top5, n
    for images, target in loader:
        images, target = _to_device(images, device, channels_last), target.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            logits = model(images)
        counts[:2] += topk_correct(logits.float(), target).cpu()
        counts[2] += target.shape[0]
    counts = all_reduce_sum(counts.to(device)).cpu()
    n = counts[2].item()
    if n == 0:
        raise ValueError("evaluation set is empty")
    log.info("evaluated %d images in %.1fs", int(n), time.time() - t0)
    return {"top1": 100.0 * counts[0].item() / n, "top5": 100.0 * counts[1].item() / n, "n": int(n)}


def gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors of different lengths (dim 0) from every rank."""
    if not is_dist():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    pad = torch.zeros((m - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    out = [torch.empty((m, *x.shape[1:]), dtype=x.dtype, device=x.device) for _ in sizes]
    dist.all_gather(out, torch.cat([x, pad]).contiguous())
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


def extract_features_all_ranks(model: nn.Module, loader: DataLoader, device: torch.device,
                               normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (L2-normalised unless ``normalize=False``) and labels of the whole (sharded) set,
    gathered over ranks.

    Each rank runs :func:`lewel_bench.knn.extract_features` on its shard; the shards are concatenated.
    """
    model.eval()
    f, y = extract_features(model, loader, device, channels_last=device.type == "cuda", normalize=normalize)
    return gather_variable(f.to(device)), gather_variable(y.to(device))


# --------------------------------------------------------------------------------------------------
# resumable run state
# --------------------------------------------------------------------------------------------------
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
    for epoch in range(start, epochs):
        lrs = set_lr(optimizer, lr_factor(epoch, cfg["schedule"], epochs))
        stats = train_one_epoch(net, train_loader, optimizer, dev, epoch, amp, scaler, cfg.get("log_every", 50))
        if not math.isfinite(stats["loss"]):
            raise NonFiniteError(f"{stage.name}: training loss is {stats['loss']} in epoch {epoch + 1} "
                                 f"(lr {'/'.join(f'{x:.4g}' for x in lrs)}); {state.path} keeps the last finite state")
        stats.update(epoch=epoch + 1, **dict(zip(lr_names, lrs)))
        ev = cfg.get("eval_every", 0)
        if ev and (epoch + 1) % ev == 0 and epoch + 1 < epochs:
            stats.update({f"val_{k}": v for k, v in evaluate(model, val_loader, dev, amp).items()})
        history.append(stats)
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
        bb = resolve_backbone(args.ckpt, arch=cfg.get("arch") if cfg else None, seed=args.seed)
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


def build_imagenet(root: str | Path, split: str, transform: Any, subset_file: str | Path | None = None) -> Dataset:
    """The ImageNet-layout reader of :mod:`lewel_bench.data` (one class list for every split)."""
    from .data import ImageNetFolder

    return ImageNetFolder(root, split, transform=transform, subset_file=subset_file)
