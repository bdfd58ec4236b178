"""Data augmentation: the views a method trains on, declared in its config (``aug.views``).

A config lists its views in order (the method's ``forward(views)`` gets them in that order), each a
pipeline: a random resized crop (``size``, ``scale``; defaults ``aug.size`` / ``aug.scale``), a
horizontal flip (``flip``) and the photometric ops of a named ``recipe`` from ``aug.recipes`` (colour
jitter strengths and probability, grayscale, Gaussian blur, solarisation probabilities; any of them can
be set on the view itself), repeated ``count`` times::

    aug:
      views:
        - {recipe: byol_1}                       # BYOL's asymmetric pair (Grill et al. 2020)
        - {recipe: byol_2}
        - {recipe: weak, size: 224}              # crop + flip only (a weak / strong pair)
        - {recipe: mocov2, size: 96, scale: [0.05, 0.14], count: 4}   # small multi-crop views

Every random draw goes through torch's global generator (torchvision transforms), so a sample's views
are a pure function of the seed the dataset sets from (seed, epoch, index): workers and resumed runs see
identical views. Crop scale: the paper follows MoCo / BYOL, whose defaults are (0.2, 1.0) for MoCo v2 and
(0.08, 1.0) for BYOL; the official LEWEL scripts use (0.2, 1.0) for LEWEL_B as well.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import ImageFilter
from torchvision import transforms as T

from lewel_bench.config import ConfigError
from lewel_bench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD


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


@dataclass(frozen=True)
class ViewSpec:
    """One view: random resized crop (``size``, ``scale``), optional horizontal flip, and the photometric
    recipe: colour jitter (brightness, contrast, saturation, hue strengths) applied with probability
    ``jitter_p`` in a random order, grayscale, Gaussian blur, solarisation (an op whose probability is 0 is
    not in the pipeline at all)."""

    size: int
    scale: tuple[float, float]
    jitter: tuple[float, float, float, float]
    jitter_p: float
    gray_p: float
    blur_p: float
    solarize_p: float
    flip: bool = True


RECIPE_KEYS = {"jitter": "list of 4 numbers", "jitter_p": "probability", "gray_p": "probability",
               "blur_p": "probability", "solarize_p": "probability"}
VIEW_KEYS = {"recipe", "count", "size", "scale", "flip", *RECIPE_KEYS}


def _prob(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ConfigError(f"{where} must be a probability in [0, 1], got {v!r}")
    return float(v)


def view_specs(aug: Mapping[str, Any]) -> list[ViewSpec]:
    """The views of an ``aug`` config section in order, counts expanded (errors name ``aug.views[i].key``)."""
    recipes = aug.get("recipes") or {}
    views = aug.get("views")
    if not isinstance(views, list) or not views:
        raise ConfigError("aug.views must be a non-empty list of views ({recipe: <name>, count, size, ...})")
    specs: list[ViewSpec] = []
    for i, v in enumerate(views):
        where = f"aug.views[{i}]"
        if not isinstance(v, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {v!r}")
        unknown = sorted(set(v) - VIEW_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(VIEW_KEYS))})")
        name = v.get("recipe")
        if name not in recipes:
            raise ConfigError(f"{where}.recipe {name!r} is not in aug.recipes ({', '.join(sorted(recipes))})")
        r = {**recipes[name], **{k: v[k] for k in RECIPE_KEYS if k in v}}
        missing = [k for k in RECIPE_KEYS if k not in r]
        if missing:
            raise ConfigError(f"aug.recipes.{name} lacks {', '.join(missing)}")
        jitter = r["jitter"]
        if not (isinstance(jitter, (list, tuple)) and len(jitter) == 4
                and all(isinstance(x, (int, float)) and x >= 0 for x in jitter)):
            raise ConfigError(f"{where}: jitter must be 4 non-negative numbers, got {jitter!r}")
        size, scale = v.get("size", aug["size"]), tuple(v.get("scale", aug["scale"]))
        count = v.get("count", 1)
        if not (isinstance(size, int) and size >= 8) or not (isinstance(count, int) and count >= 1):
            raise ConfigError(f"{where}: size must be an int >= 8 and count an int >= 1, got {size!r}, {count!r}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"{where}: scale must be [min, max] within (0, 1], got {list(scale)!r}")
        spec = ViewSpec(size=size, scale=(float(scale[0]), float(scale[1])), jitter=tuple(float(x) for x in jitter),
                        jitter_p=_prob(r["jitter_p"], f"{where}.jitter_p"), gray_p=_prob(r["gray_p"], f"{where}.gray_p"),
                        blur_p=_prob(r["blur_p"], f"{where}.blur_p"),
                        solarize_p=_prob(r["solarize_p"], f"{where}.solarize_p"), flip=bool(v.get("flip", True)))
        specs += [spec] * count
    return specs


def _view(spec: ViewSpec) -> Callable:
    """The whole view on the PIL image (data-loader workers): crop, flip, photometric ops, normalise."""
    ops = [T.RandomResizedCrop(spec.size, scale=spec.scale, antialias=True)]
    if spec.flip:
        ops.append(T.RandomHorizontalFlip())
    if spec.jitter_p > 0:
        ops.append(T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p))
    if spec.gray_p > 0:
        ops.append(T.RandomGrayscale(p=spec.gray_p))
    if spec.blur_p > 0:
        ops.append(T.RandomApply([GaussianBlur(spec.size)], p=spec.blur_p))
    if spec.solarize_p > 0:
        ops.append(T.RandomSolarize(128, p=spec.solarize_p))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


def build_views(specs: Sequence[ViewSpec], batched: bool = False) -> list[Callable]:
    """One transform per view. ``batched=False``: each maps a PIL image to a normalised float tensor.
    ``batched=True``: each maps it to ``(uint8 crop, photometric parameters)`` (:class:`CropAndDraw`);
    :func:`apply_photometric` then runs the photometric ops on a whole batch on the training device."""
    return [CropAndDraw(s) if batched else _view(s) for s in specs]


# --- batched photometric ops (``aug.batched``): the loader workers only decode, crop and flip -------
N_PARAMS = 12  # jitter on, brightness, contrast, saturation, hue, order (4), grayscale on, blur sigma, solarise on


class CropAndDraw:
    """Worker half of a batched view: random resized crop and flip of the PIL image (uint8 (3, H, W)),
    and every random draw of the photometric ops, as a float vector of :data:`N_PARAMS` (same
    distributions as the PIL view: torchvision's ColorJitter factors and random order, etc.)."""

    def __init__(self, spec: ViewSpec) -> None:
        geo = [T.RandomResizedCrop(spec.size, scale=spec.scale, antialias=True)]
        geo += [T.RandomHorizontalFlip()] if spec.flip else []
        self.geometric = T.Compose([*geo, T.PILToTensor()])
        self.spec, self.blur_scale = spec, spec.size / 224.0
        self.jitter = T.ColorJitter(*spec.jitter)

    def draw(self) -> torch.Tensor:
        p = torch.zeros(N_PARAMS)
        p[1:4] = 1.0  # identity factors (unused while jitter is off)
        if self.spec.jitter_p > 0 and float(torch.rand(1)) < self.spec.jitter_p:
            j = self.jitter
            order, b, c, s, h = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
            p[0], p[1], p[2], p[3], p[4] = 1.0, b, c, s, h
            p[5:9] = order.float()
        if self.spec.gray_p > 0:
            p[9] = float(float(torch.rand(1)) < self.spec.gray_p)
        if self.spec.blur_p > 0 and float(torch.rand(1)) < self.spec.blur_p:
            p[10] = float(torch.empty(1).uniform_(0.1, 2.0)) * self.blur_scale
        if self.spec.solarize_p > 0:
            p[11] = float(float(torch.rand(1)) < self.spec.solarize_p)
        return p

    def __call__(self, img) -> tuple[torch.Tensor, torch.Tensor]:
        crop = self.geometric(img)
        return crop, self.draw()


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma (torchvision's rgb_to_grayscale): (B, 3, H, W) -> (B, 1, H, W)."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor | float, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio.view(-1, 1, 1, 1) * a + (1.0 - ratio.view(-1, 1, 1, 1)) * b).clamp(0.0, 1.0)


def adjust_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Per-sample hue shift (fraction of a turn, ``hue`` (B,)) through HSV, as torchvision's adjust_hue."""
    maxc, minc = x.max(1).values, x.min(1).values
    cr = maxc - minc
    r, g, b = x.unbind(1)
    safe_cr = torch.where(cr > 0, cr, torch.ones_like(cr))
    rc, gc, bc = (maxc - r) / safe_cr, (maxc - g) / safe_cr, (maxc - b) / safe_cr
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(cr > 0, torch.fmod(h / 6.0 + 1.0, 1.0), torch.zeros_like(h))
    s = cr / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    h = torch.remainder(h + hue.view(-1, 1, 1), 1.0)
    # HSV -> RGB: channel n in (R, G, B) = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    return (maxc.unsqueeze(1) * (1.0 - s.unsqueeze(1) * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-sample separable Gaussian blur (kernel 2 * radius + 1, reflect padding, as torchvision's
    gaussian_blur): ``sigma`` (B,) > 0."""
    b, c, hgt, wid = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, 2r+1)
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, hgt, wid)


_JITTER_OPS = (
    lambda x, f: _blend(x, 0.0, f),  # brightness
    lambda x, f: _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), f),  # contrast
    lambda x, f: _blend(x, _gray(x), f),  # saturation
    adjust_hue,
)


def views_to_device(views, device: torch.device, batched: bool) -> torch.Tensor:
    """A loader batch of one view on ``device``: the finished tensor, or (``batched``) the uint8 crops and
    parameters moved there and finished by :func:`apply_photometric`."""
    if not batched:
        return views.to(device, non_blocking=True)
    crops, params = views
    return apply_photometric(crops.to(device, non_blocking=True), params.to(device, non_blocking=True))


def apply_photometric(crops: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Device half of a batched view: uint8 crops (B, 3, H, W) and their :class:`CropAndDraw` parameters
    (B, :data:`N_PARAMS`) -> normalised float views. Ops in the PIL view's order: colour jitter (the
    sample's own order of brightness, contrast, saturation, hue), grayscale, blur, solarise, normalise."""
    x = crops.float().div_(255.0)
    jit = params[:, 0] > 0
    for pos in range(4):
        for op, fn in enumerate(_JITTER_OPS):
            sel = jit & (params[:, 5 + pos] == op)
            if sel.any():
                x[sel] = fn(x[sel], params[sel, 1 + op])
    sel = params[:, 9] > 0
    if sel.any():
        x[sel] = _gray(x[sel]).expand(-1, 3, -1, -1)
    sel = params[:, 10] > 0
    if sel.any():
        radius = max(1, math.ceil(3.0 * float(params[sel, 10].max())))
        x[sel] = gaussian_blur(x[sel], params[sel, 10], min(radius, min(x.shape[2:]) - 1))
    sel = params[:, 11] > 0
    if sel.any():
        xs = x[sel]
        x[sel] = torch.where(xs >= 128.0 / 255.0, 1.0 - xs, xs)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def eval_transform(size: int) -> Callable:
    """Resize to size / 0.875 then centre crop (kNN monitor)."""
    return T.Compose([T.Resize(round(size / 0.875), antialias=True), T.CenterCrop(size), T.ToTensor(),
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
