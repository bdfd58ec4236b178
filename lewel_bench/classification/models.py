"""The evaluated models: a frozen backbone with a linear probe, a fine-tuned network, a feature extractor.

The linear probe's input (``feature``, :data:`PROBE_FEATURES`): ``gap`` = GAP(res5), the usual probe;
``hypercolumn`` = GAP of CGH's hypercolumn [res4 resized to res5's size, res5] of the trunk (the "CGH (hyper)"
probe; concat(GAP(res4), GAP(res5)) when res4 is exactly twice res5's size, 3072-d for a ResNet-50);
``hypercolumn_learned`` = GAP of the pretrained 1x1 conv + BN + ReLU on that hypercolumn (the checkpoint's
``hypercolumn`` transfer part; 2048-d for a ResNet-50).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoint import Backbone, BackboneError, backbone_into
from ..dist import DistInfo
from ..models import (
    backbone_features,
    build_torchvision_resnet,
    feature_dim,
    hypercolumn,
)
from ..registry import Registry


def _init_fc(fc: nn.Linear) -> None:
    """Classifier init of MoCo / SimSiam linear evaluation: N(0, 0.01) weights, zero bias."""
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)


@dataclass(frozen=True)
class ProbeFeature:
    """How a linear probe's input is computed: ``build(trunk with fc = Identity, backbone)`` returns the frozen
    module mapping images to (B, ``dim``) vectors; ``parts``: the transfer-bundle parts it needs."""

    build: Callable[[nn.Module, Backbone], nn.Module]
    parts: tuple[str, ...] = ()


#: feature name -> :class:`ProbeFeature` (the ``feature`` key of the linear-probe configs)
PROBE_FEATURES: Registry = Registry("linear-probe feature")


def _gap(net: nn.Module, bb: Backbone) -> nn.Module:
    """GAP(res5): the torchvision trunk itself (its ``fc`` is the identity)."""
    net.dim = feature_dim(bb.arch)
    return net


class HypercolumnFeatures(nn.Module):
    """GAP of the hypercolumn of ``stages`` (:func:`lewel_bench.models.hypercolumn`): backbone weights only."""

    stages: Sequence[str] = ("res4", "res5")

    def __init__(self, net: nn.Module, bb: Backbone) -> None:
        super().__init__()
        self.net = net
        self.dim = sum(feature_dim(bb.arch, s) for s in self.stages)

    def hypercolumn(self, x: torch.Tensor) -> torch.Tensor:
        f = backbone_features(self.net, x, self.stages)
        return hypercolumn([f[s] for s in self.stages])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hypercolumn(x).mean((2, 3))


class LearnedHypercolumnFeatures(HypercolumnFeatures):
    """GAP of the pretrained 1x1 conv + BN + ReLU on the hypercolumn (CGH's branch, from the checkpoint's
    ``hypercolumn`` part: ``reduce.0.weight`` (width, channels, 1, 1), ``reduce.1.*`` its BatchNorm)."""

    def __init__(self, net: nn.Module, bb: Backbone) -> None:
        super().__init__(net, bb)
        part = bb.parts.get("hypercolumn")
        if not part or "reduce.0.weight" not in part:
            raise BackboneError(f"{bb.path}: feature hypercolumn_learned needs the checkpoint's 'hypercolumn' part "
                                f"(a CGH checkpoint); it has {', '.join(sorted(bb.parts)) or 'the trunk only'}")
        width, channels = part["reduce.0.weight"].shape[:2]
        if channels != self.dim:
            raise BackboneError(f"{bb.path}: the 'hypercolumn' part reduces {channels} channels, but the probe's "
                                f"hypercolumn of {'+'.join(self.stages)} has {self.dim}")
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        missing, unexpected = self.reduce.load_state_dict(
            {k.removeprefix("reduce."): v for k, v in part.items()}, strict=False)
        if missing or unexpected:
            raise BackboneError(f"{bb.path}: 'hypercolumn' part does not fit a 1x1 conv + BN (missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]})")
        self.dim = int(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.hypercolumn(x)).mean((2, 3))


PROBE_FEATURES.register("gap")(ProbeFeature(_gap))
PROBE_FEATURES.register("hypercolumn")(ProbeFeature(HypercolumnFeatures))
PROBE_FEATURES.register("hypercolumn_learned")(ProbeFeature(LearnedHypercolumnFeatures, parts=("hypercolumn",)))


class LinearProbe(nn.Module):
    """Frozen backbone f_theta (always in eval mode, no gradient) + a trainable linear classifier (Sec. 4.1).

    ``feature`` (:data:`PROBE_FEATURES`): what the classifier reads; ``self.backbone`` maps images to it
    (the trunk itself for ``gap``). ``norm="bn"`` puts a parameter-free BatchNorm1d (``affine=False``, as in
    MAE's linear probe) before the classifier: still a linear classifier at test time (a fixed affine map folded
    into ``fc``), but insensitive to the feature scale. Its running statistics are a cumulative average
    (``momentum=None``), exact for a frozen backbone even after few iterations. The paper recipes use ``norm="none"``; the mini config uses
    ``bn`` because briefly pretrained mini backbones give features with norms around 100, on which
    SGD at lr 0.4 diverges.
    """

    def __init__(self, bb: Backbone, num_classes: int, norm: str = "none", feature: str = "gap") -> None:
        super().__init__()
        if norm not in ("none", "bn"):
            raise ValueError(f"linear probe norm {norm!r}: expected 'none' or 'bn'")
        net = build_torchvision_resnet(bb.arch, num_classes)
        backbone_into(net, bb)
        fc, net.fc = net.fc, nn.Identity()
        features = PROBE_FEATURES.get(feature).build(net, bb)
        self.fc = fc if features.dim == fc.in_features else nn.Linear(features.dim, num_classes)
        _init_fc(self.fc)
        self.norm = nn.BatchNorm1d(self.fc.in_features, affine=False, momentum=None) if norm == "bn" else nn.Identity()
        self.backbone = features
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> LinearProbe:
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
