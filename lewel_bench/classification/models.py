"""The evaluated models: a frozen backbone with a linear probe, a fine-tuned network, a feature extractor."""
from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import Backbone, backbone_into
from ..dist import DistInfo
from ..models import build_torchvision_resnet


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
