"""Shared base of the pretraining methods: encoder (backbone stages + head), target network, EMA, ShuffleBN,
queues, and the transfer bundle.

A method is one file: a class registered in :data:`METHODS` whose ``forward(views)`` takes the batch's
views (a list of tensors, in the order of the config's ``aug.views``) and returns ``(loss, logs)``. It
builds its ``online`` network from :class:`Encoder` (a torchvision trunk, the backbone stages it reads,
and a head), its ``target`` with :meth:`SSLMethod.make_target`, and any number of :class:`FIFOQueue`
modules. Checkpoints hold every parameter and buffer by the module tree (:func:`pretrain.state.checkpoint_state`).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lewel_bench import dist as ldist
from lewel_bench.config import ConfigError
from lewel_bench.models import backbone_features, build_backbone, feature_dim
from lewel_bench.registry import Registry

from ..ema import cosine_momentum, ema_update

METHODS: Registry = Registry("method")


class Encoder(nn.Module):
    """A torchvision ResNet trunk and a head on the backbone stages it reads.

    ``stages``: the feature maps the head takes (``res2``..``res5``, :func:`lewel_bench.models.backbone_features`);
    ``pooled``: the head sees their global average pool instead of the maps. The head is called with the one
    tensor when it reads one stage, else with ``{stage: tensor}``.
    """

    def __init__(self, arch: str, head: nn.Module, pooled: bool, stages: Sequence[str] = ("res5",)) -> None:
        super().__init__()
        self.backbone = build_backbone(arch)
        self.head = head
        self.pooled, self.stages = pooled, tuple(stages)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = backbone_features(self.backbone, x, self.stages)
        return {k: v.mean((2, 3)) for k, v in f.items()} if self.pooled else f

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        return self.head(f[self.stages[0]] if len(self.stages) == 1 else f)


class FIFOQueue(nn.Module):
    """FIFO queues of key embeddings (MoCo), one buffer per name, all written at ONE shared pointer: column j
    of every queue holds the keys of the same image (CGH keeps global and hypercolumn keys aligned).

    ``FIFOQueue(K, c)`` is MoCo's single queue, read as ``queue.keys`` (K, c) and written with
    ``queue.push(keys=k)``; ``FIFOQueue(K, {"glob": 512, "hyper": 512})`` holds two.
    """

    def __init__(self, size: int, dims: int | Mapping[str, int]) -> None:
        super().__init__()
        self.names = ("keys",) if isinstance(dims, int) else tuple(dims)
        for name in self.names:
            d = dims if isinstance(dims, int) else dims[name]
            self.register_buffer(name, nn.functional.normalize(torch.randn(size, d), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.size = size

    @torch.no_grad()
    def push(self, **keys: torch.Tensor) -> None:
        """Write the keys of every queue (already gathered from every rank, the same number each) over the
        oldest entries, wrapping around; the pointer moves once."""
        if set(keys) != set(self.names):
            raise ValueError(f"FIFOQueue.push: expected keys for {self.names}, got {sorted(keys)}")
        n = {v.shape[0] for v in keys.values()}
        if len(n) != 1:
            raise ValueError(f"FIFOQueue.push: every queue gets the same number of keys, got {n}")
        n = n.pop()
        idx = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        for name, v in keys.items():
            getattr(self, name)[idx] = v.to(getattr(self, name).dtype)
        self.ptr.copy_((self.ptr + n) % self.size)


class SSLMethod(nn.Module):
    """Online encoder ``online`` (+ predictors), momentum ``target``; subclasses define ``forward(views)``.

    ``n_views``: how many views the method takes (checked against the config before training; None: any).
    ``iteration`` / ``iters_per_epoch``: set by the loop (each step / before training), for a method's own
    per-iteration schedules (CGH's loss weights).
    ``transfer_parts()``: pretrained modules besides the trunk that detectors (or a probe) may load (the transfer
    bundle, default none): ``{part: {<key in this method's state dict>: <part key>}}`` with the part keys of
    :mod:`lewel_bench.transfer` (detectron2's names inside the part, e.g. ``fpn_lateral3.weight``).
    """

    backbone_prefix = "online.backbone."
    n_views: int | None = 2

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
        self.iters_per_epoch = 0  # set by the loop before training (a method's own per-iteration schedules)
        self.seed = int(cfg.get("seed", 0))
        self.bn_splits = int(mc.get("shuffle_bn_splits", 1))

    def check_views(self, n: int) -> None:
        """Refuse a config whose ``aug.views`` do not give this method its views."""
        if self.n_views is not None and n != self.n_views:
            raise ConfigError(f"method {self.cfg['method']!r} takes {self.n_views} views; aug.views gives {n}")

    def transfer_parts(self) -> dict[str, dict[str, str]]:
        return {}

    #: whether :meth:`alignment_maps` gives maps (LEWEL); the loop then logs them as TensorBoard images
    has_alignment_maps: bool = False

    def alignment_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The online network's alignment maps W of images ``x`` (B, 3, S, S): (B, d, h, w), each map summing
        to 1 over its h * w positions (Sec. 3.2). Methods without maps have none."""
        raise NotImplementedError(f"method {self.cfg['method']!r} has no alignment maps")

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

    def online_split(self, x: torch.Tensor, net: nn.Module | None = None):
        """Online forward; in one process with ``model.shuffle_bn_splits`` = n > 1, BatchNorm sees n
        chunks of the batch separately, like the n GPUs whose per-GPU BN ShuffleBN relies on."""
        net = self.online if net is None else net
        if ldist.is_dist() or self.bn_splits <= 1:
            return net(x)
        return _cat_outputs([net(c) for c in x.chunk(self.bn_splits)])

    @torch.no_grad()
    def target_shuffled(self, x: torch.Tensor, net: nn.Module | None = None):
        """Target forward with ShuffleBN: under DDP the key batch is shuffled across processes (MoCo);
        in one process with ``model.shuffle_bn_splits`` = n > 1 it is shuffled and its BN computed over
        n chunks (the single-GPU emulation, as MoCo's CIFAR demo's SplitBatchNorm); else plain."""
        net = self.target if net is None else net
        if not ldist.is_dist():
            if self.bn_splits <= 1:
                return net(x)
            perm = self._permutation(x.shape[0], x.device)
            out = _cat_outputs([net(c) for c in x[perm].chunk(self.bn_splits)])
            inv = torch.argsort(perm)
            return _index(out, inv)
        world, rank = ldist.get_world_size(), ldist.get_rank()
        x_all = ldist.all_gather_nograd(x)
        perm = self._permutation(x_all.shape[0], x.device)
        inv = torch.argsort(perm)
        out = net(x_all[perm.view(world, -1)[rank]])
        return _map(out, lambda o: ldist.all_gather_nograd(o)[inv].view(world, -1, *o.shape[1:])[rank])


def _map(out, fn):
    """``fn`` on a tensor, on each tensor of a tuple, or on each value of a dict (an encoder's outputs;
    a None entry stays None)."""
    if isinstance(out, tuple):
        return tuple(None if o is None else fn(o) for o in out)
    if isinstance(out, dict):
        return {k: fn(v) for k, v in out.items()}
    return fn(out)


def _index(out, idx: torch.Tensor):
    return _map(out, lambda o: o[idx])


def _cat_outputs(outs: list):
    """Concatenate per-chunk outputs (tensors, tuples or dicts of tensors) along the batch dimension."""
    if isinstance(outs[0], tuple):
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs))
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return torch.cat(outs)
