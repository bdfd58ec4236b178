"""The checkpoint mmsegmentation's ``ResNet`` loads, from a lewel-bench backbone.

Output: ``{"state_dict": {name: tensor}, "meta": {...}}`` written atomically, for
``backbone=dict(type='ResNet', init_cfg=dict(type='Pretrained', checkpoint=OUT))``. mmseg's ``ResNet``
with ``deep_stem=False`` (the torchvision 7x7 stem) and ``style='pytorch'`` uses torchvision's own
parameter names (``conv1``, ``bn1``, ``layerN.i.convK/bnK``, ``layerN.0.downsample.0/1``), so the
conversion is a checked identity on the names: ``fc.*`` dropped, every tensor of mmseg's ``ResNet``
required with the right shape (an empty or partial result is refused, never written).

A deep-stem checkpoint (mmseg/mmcls ``ResNetV1c``/``V1d``: ``stem.0.weight`` ... three 3x3 convs) is
refused with an explanation: its stem cannot be mapped onto the 7x7 ``conv1`` that every SSL method here
pretrains, and the protocol's config uses ``ResNet``, not ``ResNetV1c``.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Backbone, BackboneError, resolve_backbone, torch_load
from ..io import atomic_torch_save

log = logging.getLogger(__name__)

MMSEG_FORMAT = "lewel-bench/mmseg-resnet"
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
_OPTIONAL = ("num_batches_tracked",)
_DEEP_STEM = re.compile(r"(^|\.)stem\.(\d+)\.(weight|running_mean)$")


class ConversionError(BackboneError):
    """The checkpoint cannot become an mmseg ``ResNet`` checkpoint (empty, partial, deep stem)."""


def mmseg_resnet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The state dict of mmseg's own ``ResNet`` (torchvision stem) for ``arch``: the conversion target, on the meta
    device (names, shapes and dtypes only; built once per arch)."""
    if arch not in DEPTHS:
        raise ConversionError(f"unsupported arch {arch!r} for mmseg's ResNet; expected one of {', '.join(DEPTHS)}")
    return dict(_mmseg_resnet_reference(arch))


@functools.cache
def _mmseg_resnet_reference(arch: str) -> dict[str, torch.Tensor]:
    from .mmcv_ops import install

    install()
    from mmseg.models.backbones import ResNet

    with torch.device("meta"):
        return ResNet(depth=DEPTHS[arch], style="pytorch", deep_stem=False).state_dict()


def deep_stem_keys(obj: Any) -> list[str]:
    """Keys of a deep (V1c/V1d: ``stem.0/3/6`` 3x3 convs) stem anywhere in a loaded checkpoint."""
    found: list[str] = []
    stack = [obj]
    while stack and len(found) < 5:
        d = stack.pop()
        if not isinstance(d, Mapping):
            continue
        for k, v in d.items():
            if isinstance(k, str) and _DEEP_STEM.search(k) and torch.is_tensor(v):
                found.append(k)
            elif isinstance(v, Mapping):
                stack.append(v)
    return sorted(found)


def refuse_deep_stem(path: str | Path, obj: Any = None) -> None:
    """Raise :class:`ConversionError` with an explanation when ``path`` holds a deep-stem ResNet."""
    obj = torch_load(path) if obj is None else obj
    keys = deep_stem_keys(obj)
    if keys:
        raise ConversionError(
            f"{path}: this is a deep-stem ResNet (ResNetV1c/V1d: keys like {', '.join(keys[:3])}): its stem is "
            "three 3x3 convolutions, not torchvision's single 7x7 conv1. The segmentation protocol uses mmseg's "
            "`ResNet` (torchvision stem, what every SSL backbone here is pretrained as), so the stem cannot be "
            "converted. Use a torchvision-stem checkpoint (backbone.pth from pretraining), or, for a V1c model, "
            "mmseg's own ResNetV1c configs.")


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], arch: str,
                       where: str = "<input>") -> dict[str, torch.Tensor]:
    """torchvision names -> mmseg ``ResNet`` names (identical), refusing anything incomplete.

    Every tensor of mmseg's ``ResNet`` must be present with its shape (``num_batches_tracked`` is taken
    from the target when missing); ``fc.*`` and other extra keys are dropped.
    """
    ref = mmseg_resnet_state_dict(arch)
    out: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for k, t in ref.items():
        v = state_dict.get(k)
        if v is None:
            if k.endswith(_OPTIONAL):
                out[k] = torch.zeros(t.shape, dtype=t.dtype)
            else:
                missing.append(k)
        elif tuple(v.shape) != tuple(t.shape):
            mismatched.append(f"{k}: {tuple(v.shape)} vs {tuple(t.shape)}")
        else:
            out[k] = v.detach().cpu().clone()
    needed = sum(1 for k in ref if not k.endswith(_OPTIONAL))
    if missing or mismatched:
        what = "an empty" if len(missing) == needed else "a partial"
        raise ConversionError(
            f"{where}: refusing to write {what} mmseg ResNet checkpoint: {len(missing)} of {needed} {arch} tensors "
            f"missing (first: {', '.join(missing[:5]) or '-'}), {len(mismatched)} shape mismatches "
            f"(first: {'; '.join(mismatched[:3]) or '-'})")
    dropped = [k for k in state_dict if k not in ref]
    if dropped:
        log.info("%s: %d keys not in mmseg's ResNet dropped (first: %s)", where, len(dropped), ", ".join(dropped[:5]))
    return out


def _plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Meta as JSON-able values (the file must load under torch's weights-only unpickler)."""
    return json.loads(json.dumps(dict(meta), default=str))


def load_for_mmseg(spec: str | Path, prefix: str | None = None, arch: str | None = None, seed: int = 0,
                   layout: str | None = None) -> Backbone:
    """:func:`resolve_backbone`, with a deep-stem checkpoint refused with an explanation."""
    try:
        return resolve_backbone(spec, prefix=prefix, arch=arch, seed=seed, layout=layout)
    except BackboneError:
        if Path(str(spec)).is_file():
            refuse_deep_stem(spec)
        raise


def convert_backbone(bb: Backbone, out: str | Path) -> Path:
    """Write ``bb`` as an mmseg ``ResNet`` checkpoint at ``out`` (atomically); returns ``out``."""
    sd = convert_state_dict(bb.state_dict, bb.arch, where=bb.path or "<backbone>")
    meta = _plain({**(bb.meta or {}), "format": MMSEG_FORMAT, "arch": bb.arch, "mmseg_backbone": "ResNet",
                   "depth": DEPTHS[bb.arch], "style": "pytorch", "deep_stem": False, "source": bb.path,
                   "source_sha256": bb.sha256, "source_layout": bb.layout or None,
                   "source_prefix": bb.prefix if bb.layout else None})
    path = atomic_torch_save({"state_dict": sd, "meta": meta}, out)
    log.info("wrote %s (%d tensors, mmseg ResNet depth %d) from %s", path, len(sd), DEPTHS[bb.arch], bb.path)
    return path


def convert_to_mmseg(spec: str | Path, out: str | Path, prefix: str | None = None, arch: str | None = None,
                     seed: int = 0, layout: str | None = None) -> tuple[Path, Backbone]:
    """Read ``spec`` (any accepted checkpoint or ``random:<arch>``), write ``out``; returns (out, backbone)."""
    bb = load_for_mmseg(spec, prefix=prefix, arch=arch, seed=seed, layout=layout)
    return convert_backbone(bb, out), bb
