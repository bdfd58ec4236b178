"""Backbones: plain torchvision ResNets, so every checkpoint is a torchvision state dict.

``build_backbone(arch)`` returns a torchvision ResNet whose ``fc`` is ``nn.Identity`` (its state dict
is exactly torchvision's minus ``fc.*``). ``backbone_features(model, x, stages)`` returns the named
feature maps of the stages asked for, as detectron2's ``Backbone.forward`` does: ``res2``..``res5`` are
torchvision's ``layer1``..``layer4`` (strides 4, 8, 16, 32); ``res5`` is the map ``F`` (B, D, H, W) that
LEWEL aggregates with its alignment maps. Only the layers up to the deepest stage asked for run.
``hypercolumn(maps)`` is CGH's hypercolumn of such maps (shared by the pretraining head and the linear probe).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}
#: detectron2 stage names -> torchvision ResNet layers
STAGES = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}


def feature_dim(arch: str, stage: str = "res5") -> int:
    """Channels of the ``stage`` feature map of ``arch`` (``res5``: D, the last one)."""
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(FEATURE_DIMS)}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return FEATURE_DIMS[arch] >> (3 - list(STAGES).index(stage))


def build_torchvision_resnet(arch: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """A randomly initialised torchvision ResNet (with its ``fc``), never downloading weights."""
    feature_dim(arch)
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, **kwargs)


def build_backbone(arch: str, zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet trunk: ``fc`` replaced by ``nn.Identity`` so ``model(x)`` is the pooled feature."""
    model = build_torchvision_resnet(arch, zero_init_residual=zero_init_residual)
    model.fc = nn.Identity()
    return model


def backbone_features(model: nn.Module, x: torch.Tensor, stages: Sequence[str] = ("res5",)) -> dict[str, torch.Tensor]:
    """``{stage: feature map}`` of a torchvision ResNet for the ``stages`` asked for (see the module docstring)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"backbone stages {list(stages)}: expected some of {', '.join(STAGES)}")
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out: dict[str, torch.Tensor] = {}
    last = max(list(STAGES).index(s) for s in stages)
    for name, layer in list(STAGES.items())[: last + 1]:
        x = getattr(model, layer)(x)
        if name in stages:
            out[name] = x
    return out


def hypercolumn(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """CGH's hypercolumn: every map resized bilinearly (``align_corners=False``) to the spatial size of the LAST
    one and all concatenated along the channels in the given order: [res4, res5] of a ResNet-50 at 224 px is
    (B, 1024 + 2048, 7, 7). For an exact factor of 2 (14 -> 7) the resize is a 2 x 2 average pool, so the
    hypercolumn's global average pool is the concatenation of the maps' own pools."""
    size = maps[-1].shape[-2:]
    return torch.cat([m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                      for m in maps], dim=1)


def infer_arch(state_dict: dict) -> str | None:
    """Guess the ResNet depth from torchvision key names of its blocks (None if it is no torchvision ResNet); a
    trunk missing some tensors (``conv1.weight`` too) still has a depth, so the intake can name what is missing."""
    if not any(k.startswith("layer1.") for k in state_dict) or not any(k.startswith("layer3.") for k in state_dict):
        return None
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state_dict)
    n3 = len({k.split(".")[1] for k in state_dict if k.startswith("layer3.")})
    if bottleneck:
        return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(n3)
    return {2: "resnet18", 6: "resnet34"}.get(n3)
