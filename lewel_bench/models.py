"""Backbones: plain torchvision ResNets, so every checkpoint is a torchvision state dict.

``build_backbone(arch)`` returns a torchvision ResNet whose ``fc`` is ``nn.Identity`` (its state dict
is exactly torchvision's minus ``fc.*``). ``backbone_features(model, x)`` returns the last feature map
``F`` (B, D, H, W) before global average pooling, which LEWEL aggregates with its alignment maps.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def feature_dim(arch: str) -> int:
    """Channels D of the last feature map of ``arch``."""
    if arch not in FEATURE_DIMS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(FEATURE_DIMS)}")
    return FEATURE_DIMS[arch]


def build_torchvision_resnet(arch: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """A randomly initialised torchvision ResNet (with its ``fc``), never downloading weights."""
    feature_dim(arch)
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, **kwargs)


def build_backbone(arch: str, zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet trunk: ``fc`` replaced by ``nn.Identity`` so ``model(x)`` is the pooled feature."""
    model = build_torchvision_resnet(arch, zero_init_residual=zero_init_residual)
    model.fc = nn.Identity()
    return model


def backbone_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature map ``F`` = layer4 output (B, D, H, W) of a torchvision ResNet."""
    x = model.conv1(x)
    x = model.bn1(x)
    x = model.relu(x)
    x = model.maxpool(x)
    x = model.layer1(x)
    x = model.layer2(x)
    x = model.layer3(x)
    return model.layer4(x)


def infer_arch(state_dict: dict) -> str | None:
    """Guess the ResNet depth from torchvision key names (None if it is no torchvision ResNet)."""
    if "conv1.weight" not in state_dict:
        return None
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state_dict)
    n3 = len({k.split(".")[1] for k in state_dict if k.startswith("layer3.")})
    if bottleneck:
        return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(n3)
    return {2: "resnet18", 6: "resnet34"}.get(n3)
