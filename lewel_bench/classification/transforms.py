"""Train / val transforms of the image evaluations (RandomResizedCrop + flip; resize + centre crop)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchvision import transforms as T

from ..data.imagenet import IMAGENET_MEAN, IMAGENET_STD


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
