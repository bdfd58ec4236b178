"""Training steps of public implementations, timed beside the suite's own by ``tools.bench_pretrain --external``.

Neither is a requirement of the suite and nothing of theirs is copied into it: each step is built from the
installed package or from a checkout the user names, with the same backbone, batch, views and precision as
the suite's step it is compared with.

- ``lightly_byol``, ``lightly_mocov2``: BYOL and MoCo v2 assembled from lightly's modules the way its
  examples do (``pip install lightly``; its heads, losses and ``update_momentum``), torchvision's ResNet as
  the backbone, SGD (momentum 0.9) as the optimiser.
- ``official_lewel_b``: the official LEWEL code's ``LEWELB_EMAN`` (``git clone`` the authors' repository and
  pass ``--official-root`` or set ``LEWEL_OFFICIAL_ROOT``), configured as its ImageNet script
  (d 256, hidden 4096, 4 heads, m 0.98, loss weight 0.5, l2-normalised maps, the default BN), with its own LARS and parameter groups (BN and bias
  exempt from weight decay and adaptation) and its momentum update after the step.
"""
from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lewel_bench.errors import LewelError
from lewel_bench.models import build_torchvision_resnet, feature_dim
from lewel_bench.utils import amp_autocast, amp_step

#: the suite's method each external step is compared with, and the target of ours / theirs
COMPARED = {"lightly_byol": ("byol", 0.9), "lightly_mocov2": ("mocov2", 0.9), "official_lewel_b": ("lewel_b", 0.9)}


class ExternalUnavailable(LewelError):
    """An external implementation is not installed or not found (the benchmark skips it, saying why)."""


def _trunk(arch: str, device: torch.device, channels_last: bool) -> nn.Module:
    net = build_torchvision_resnet(arch, 1000)
    net.fc = nn.Identity()
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _lightly():
    try:
        return (importlib.import_module("lightly.models.modules"), importlib.import_module("lightly.loss"),
                importlib.import_module("lightly.models.utils"))
    except ImportError as e:
        raise ExternalUnavailable(f"lightly is not importable ({e}); pip install lightly to time it") from e


def _momentum_pair(*nets: nn.Module) -> list[nn.Module]:
    copies = [copy.deepcopy(n) for n in nets]
    for c in copies:
        for p in c.parameters():
            p.requires_grad = False
    return copies


def _lightly_model(arch: str, device: torch.device, channels_last: bool, head: Callable[..., nn.Module]):
    """lightly's modules, a trunk and its projection head (``head(trunk_dim)``), and their momentum copies."""
    modules, losses, utils = _lightly()
    trunk = _trunk(arch, device, channels_last)
    proj = head(modules, feature_dim(arch, "res5")).to(device)
    trunk_m, proj_m = _momentum_pair(trunk, proj)
    return modules, losses, utils, trunk, proj, trunk_m, proj_m


def lightly_byol(arch: str, views: list[torch.Tensor], device: torch.device, amp: bool,
                 channels_last: bool, official_root: str | None) -> Callable[[], None]:
    """BYOL from lightly's BYOLProjectionHead / BYOLPredictionHead / NegativeCosineSimilarity (4096-256)."""
    modules, losses, utils, trunk, proj, trunk_m, proj_m = _lightly_model(
        arch, device, channels_last, lambda mods, dim: mods.BYOLProjectionHead(dim, 4096, 256))
    pred = modules.BYOLPredictionHead(256, 4096, 256).to(device)
    crit = losses.NegativeCosineSimilarity()
    params = [*trunk.parameters(), *proj.parameters(), *pred.parameters()]
    opt = torch.optim.SGD(params, lr=0.06, momentum=0.9, weight_decay=1e-6)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x0, x1 = views[0], views[1]

    def step() -> None:
        utils.update_momentum(trunk, trunk_m, m=0.99)
        utils.update_momentum(proj, proj_m, m=0.99)
        with amp_autocast(device, amp):
            p0, p1 = pred(proj(trunk(x0))), pred(proj(trunk(x1)))
            with torch.no_grad():
                z0, z1 = proj_m(trunk_m(x0)), proj_m(trunk_m(x1))
            loss = 0.5 * (crit(p0, z1) + crit(p1, z0))
        amp_step(loss, opt, scaler)

    return step


def lightly_mocov2(arch: str, views: list[torch.Tensor], device: torch.device, amp: bool,
                   channels_last: bool, official_root: str | None) -> Callable[[], None]:
    """MoCo v2 from lightly's MoCoProjectionHead (2048-2048-128) and NTXentLoss with a 65536-key memory bank."""
    _, losses, utils, trunk, proj, trunk_m, proj_m = _lightly_model(
        arch, device, channels_last, lambda mods, dim: mods.MoCoProjectionHead(dim, 2048, 128))
    crit = losses.NTXentLoss(temperature=0.2, memory_bank_size=(65536, 128)).to(device)
    opt = torch.optim.SGD([*trunk.parameters(), *proj.parameters()], lr=0.03, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x_q, x_k = views[0], views[1]

    def step() -> None:
        utils.update_momentum(trunk, trunk_m, m=0.999)
        utils.update_momentum(proj, proj_m, m=0.999)
        with amp_autocast(device, amp):
            q = proj(trunk(x_q))
            with torch.no_grad():
                k = proj_m(trunk_m(x_k))
            loss = crit(q, k)
        amp_step(loss, opt, scaler)

    return step


def _official_modules(root: str | None):
    root = root or os.environ.get("LEWEL_OFFICIAL_ROOT")
    if not root:
        raise ExternalUnavailable("official_lewel_b: no checkout of the official LEWEL code "
                                  "(--official-root PATH or LEWEL_OFFICIAL_ROOT)")
    path = Path(root)
    if not (path / "models" / "lewel.py").is_file():
        raise ExternalUnavailable(f"official_lewel_b: {path} has no models/lewel.py (expected a checkout of the "
                                  "official LEWEL repository)")
    sys.path.insert(0, str(path))
    try:
        return (importlib.import_module("models"), importlib.import_module("backbone"),
                importlib.import_module("utils"))
    except ImportError as e:
        raise ExternalUnavailable(f"official_lewel_b: importing the code under {path} failed ({e})") from e
    finally:
        sys.path.remove(str(path))


def official_lewel_b(arch: str, views: list[torch.Tensor], device: torch.device, amp: bool,
                     channels_last: bool, official_root: str | None) -> Callable[[], None]:
    """The official LEWELB_EMAN with its LARS (lr 3.6 x 512 / 1024 as its script scaled to batch 512)."""
    models, backbone, utils = _official_modules(official_root)
    if arch != "resnet50":
        raise ExternalUnavailable(f"official_lewel_b: times ResNet-50 only (got --arch {arch})")
    model = models.get_lewel_model("LEWELB_EMAN")(
        backbone.resnet50_encoder, dim=256, m=0.98, hid_dim=4096, norm_layer=None,
        num_neck_mlp=2, scale=1.0, l2_norm=True, num_heads=4, loss_weight=0.5).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    exempt = ("bn", "downsample.1", "bias", "mlp.1")   # the code's parameter groups for its EMAN runs
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if any(k in n for k in exempt)], "weight_decay": 0.0,
               "lars_exclude": True},
              {"params": [p for n, p in named if not any(k in n for k in exempt)]}]
    opt = utils.LARS(groups, lr=1.8, momentum=0.9, weight_decay=1.5e-6)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x0, x1 = views[0], views[1]
    it = [0]

    def step() -> None:
        it[0] += 1
        with amp_autocast(device, amp):
            loss = model(im_v1=x0, im_v2=x1)
        amp_step(loss, opt, scaler)
        model.momentum_update(it[0], 1000)

    return step


#: --external name -> builder(arch, views, device, amp, channels_last, official_root) -> step
EXTERNAL: dict[str, Callable[..., Callable[[], None]]] = {
    "lightly_byol": lightly_byol, "lightly_mocov2": lightly_mocov2, "official_lewel_b": official_lewel_b,
}
