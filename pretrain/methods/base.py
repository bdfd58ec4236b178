"""Shared base of the pretraining methods: encoder (backbone + head), target network, EMA, ShuffleBN."""
from __future__ import annotations

import copy

import torch
from torch import nn

from lewel_bench import dist as ldist
from lewel_bench.models import backbone_features, build_backbone, feature_dim
from lewel_bench.registry import Registry

from ..ema import cosine_momentum, ema_update

METHODS: Registry = Registry("method")


class Encoder(nn.Module):
    """A torchvision ResNet trunk and a head; ``pooled`` heads see GAP(F), others the map F (B, D, H, W)."""

    def __init__(self, arch: str, head: nn.Module, pooled: bool) -> None:
        super().__init__()
        self.backbone = build_backbone(arch)
        self.head = head
        self.pooled = pooled

    def forward(self, x: torch.Tensor):
        f = backbone_features(self.backbone, x)
        return self.head(f.mean((2, 3)) if self.pooled else f)


class SSLMethod(nn.Module):
    """Online encoder ``online`` (+ predictors), momentum ``target``; subclasses define ``forward``.

    ``forward(x1, x2)`` returns ``(loss, logs)``. Checkpoints hold ``model`` (everything but the target;
    backbone under ``online.backbone.``), ``target`` and the method's buffers (queue).
    """

    backbone_prefix = "online.backbone."

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.cfg = cfg
        self.arch = cfg["arch"]
        self.D = feature_dim(self.arch)
        mc = cfg["model"]
        self.ema_mode = mc.get("target", "params")
        self.m0 = float(mc["momentum"])
        self.momentum_schedule = mc.get("momentum_schedule", "cosine")
        self.iteration = 0  # set by the loop each step (ShuffleBN permutation seed)
        self.seed = int(cfg.get("seed", 0))
        self.bn_splits = int(mc.get("shuffle_bn_splits", 1))

    # --- target network -------------------------------------------------------------------------
    def make_target(self, online: nn.Module) -> nn.Module:
        target = copy.deepcopy(online)
        for p in target.parameters():
            p.requires_grad_(False)
        return target

    def momentum_at(self, it: int, total: int) -> float:
        """Momentum of iteration ``it``: cosine from m0 to 1 (BYOL / LEWEL_B) or constant (MoCo)."""
        return cosine_momentum(self.m0, it, total) if self.momentum_schedule == "cosine" else self.m0

    @torch.no_grad()
    def update_target(self, m: float) -> None:
        ema_update(self.target, self.online, m, self.ema_mode)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ema_mode == "eman":
            self.target.eval()  # EMAN: the target normalises with its EMA'd BN statistics
        return self

    @property
    def backbone(self) -> nn.Module:
        return self.online.backbone

    # --- ShuffleBN (MoCo): the key encoder sees a permutation of the global batch -----------------
    def _permutation(self, n: int, device: torch.device) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.iteration)
        return torch.randperm(n, generator=g).to(device)  # the same on every rank

    def online_split(self, x: torch.Tensor):
        """Online forward; in one process with ``model.shuffle_bn_splits`` = n > 1, BatchNorm sees n
        chunks of the batch separately, like the n GPUs whose per-GPU BN ShuffleBN relies on."""
        if ldist.is_dist() or self.bn_splits <= 1:
            return self.online(x)
        return _cat_outputs([self.online(c) for c in x.chunk(self.bn_splits)])

    @torch.no_grad()
    def target_shuffled(self, x: torch.Tensor):
        """Target forward with ShuffleBN: under DDP the key batch is shuffled across processes (MoCo);
        in one process with ``model.shuffle_bn_splits`` = n > 1 it is shuffled and its BN computed over
        n chunks (the single-GPU emulation, as MoCo's CIFAR demo's SplitBatchNorm); else plain."""
        if not ldist.is_dist():
            if self.bn_splits <= 1:
                return self.target(x)
            perm = self._permutation(x.shape[0], x.device)
            out = _cat_outputs([self.target(c) for c in x[perm].chunk(self.bn_splits)])
            inv = torch.argsort(perm)
            return tuple(o[inv] for o in out) if isinstance(out, tuple) else out[inv]
        world, rank = ldist.get_world_size(), ldist.get_rank()
        x_all = ldist.all_gather_nograd(x)
        perm = self._permutation(x_all.shape[0], x.device)
        inv = torch.argsort(perm)
        out = self.target(x_all[perm.view(world, -1)[rank]])
        outs = out if isinstance(out, tuple) else (out,)
        res = tuple(ldist.all_gather_nograd(o)[inv].view(world, -1, *o.shape[1:])[rank] for o in outs)
        return res if isinstance(out, tuple) else res[0]


def _cat_outputs(outs: list):
    """Concatenate per-chunk outputs (tensors or tuples of tensors) along the batch dimension."""
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


class QueueMixin:
    """FIFO queue of key embeddings (MoCo): ``queue`` (K, c) buffer and write pointer ``queue_ptr``."""

    def init_queue(self, size: int, dim: int) -> None:
        self.register_buffer("queue", nn.functional.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (already gathered from every rank) over the oldest entries, wrapping around."""
        K = self.queue.shape[0]
        n = keys.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % K
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % K)
