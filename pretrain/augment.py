"""Data augmentation: the MoCo v2 pair and BYOL's asymmetric pair (sizes and crop scale from the config).

Every random draw goes through torch's global generator (torchvision transforms), so a sample's two
views are a pure function of the seed the dataset sets from (seed, epoch, index): workers and resumed
runs see identical views. Crop scale: the paper follows MoCo / BYOL, whose defaults are (0.2, 1.0) for
MoCo v2 and (0.08, 1.0) for BYOL; the official LEWEL scripts use (0.2, 1.0) for LEWEL_B as well:
configs expose ``aug.scale``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import ImageFilter
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GaussianBlur:
    """PIL Gaussian blur with sigma ~ U(0.1, 2.0) drawn from torch's generator (as in MoCo v2 / BYOL).

    PIL's filter is used rather than torchvision's conv2d blur, which is ~50x slower on CPU for
    single images; the sigma is scaled with the crop size relative to 224 px so small mini images
    are blurred like ImageNet ones."""

    def __init__(self, size: int, sigma: Sequence[float] = (0.1, 2.0)) -> None:
        self.sigma, self.scale = tuple(sigma), size / 224.0

    def __call__(self, img):
        s = float(torch.empty(1).uniform_(*self.sigma)) * self.scale
        return img.filter(ImageFilter.GaussianBlur(radius=s))


def _view(size: int, scale: Sequence[float], blur_p: float, solarize_p: float,
          jitter: Sequence[float], normalize: bool = True) -> Callable:
    ops = [
        T.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(*jitter)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if blur_p > 0:
        ops.append(T.RandomApply([GaussianBlur(size)], p=blur_p))
    if solarize_p > 0:
        ops.append(T.RandomSolarize(128, p=solarize_p))
    ops.append(T.ToTensor())
    if normalize:
        ops.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(ops)


def mocov2_pair(size: int = 224, scale: Sequence[float] = (0.2, 1.0)) -> tuple[Callable, Callable]:
    """MoCo v2: both views crop, flip, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur p 0.5."""
    t = _view(size, scale, blur_p=0.5, solarize_p=0.0, jitter=(0.4, 0.4, 0.4, 0.1))
    return t, t


def byol_pair(size: int = 224, scale: Sequence[float] = (0.08, 1.0)) -> tuple[Callable, Callable]:
    """BYOL's asymmetric pair: jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, blur p 1.0 / 0.1,
    solarise p 0.0 / 0.2."""
    j = (0.4, 0.4, 0.2, 0.1)
    return (_view(size, scale, blur_p=1.0, solarize_p=0.0, jitter=j),
            _view(size, scale, blur_p=0.1, solarize_p=0.2, jitter=j))


PAIRS = {"mocov2": mocov2_pair, "byol": byol_pair}


def build_pair(kind: str, size: int, scale: Sequence[float]) -> tuple[Callable, Callable]:
    if kind not in PAIRS:
        raise ValueError(f"aug.kind: unknown augmentation {kind!r}; expected one of {', '.join(PAIRS)}")
    return PAIRS[kind](size, scale)


def eval_transform(size: int) -> Callable:
    """Resize to size / 0.875 then centre crop (kNN monitor)."""
    return T.Compose([T.Resize(int(round(size / 0.875)), antialias=True), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def seeded(fn: Callable, seed: int):
    """Run ``fn`` under torch's global generator seeded with ``seed``, restoring the caller's state."""
    gen = torch.random.default_generator  # CPU generator only (torch.manual_seed also seeds CUDA: slow)
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        return fn()
    finally:
        gen.set_state(state)
