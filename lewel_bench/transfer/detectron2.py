"""detectron2's pickle format for a lewel-bench backbone (MoCo's detection-transfer convention).

Output: ``{"model": {detectron2 name: numpy array}, "__author__": "lewel-bench", "matching_heuristics": True}``.
detectron2's ``DetectionCheckpointer`` reads such a ``.pkl`` as it is (an ``__author__`` other than Caffe2
means no Caffe2 renames) and matches every name by suffix to the model's, so ``res2.0.conv1.weight``
lands in ``backbone.bottom_up.res2.0.conv1.weight`` of an FPN model and ``fpn_lateral3.weight`` in
``backbone.fpn_lateral3.weight``. Renames of the trunk (torchvision -> detectron2):

* non-``layer`` keys (``conv1``, ``bn1``) get the prefix ``stem.``;
* ``layer1..4`` -> ``res2..5``;
* ``bn1/2/3`` -> ``conv1/2/3.norm``;
* ``downsample.0`` -> ``shortcut``, ``downsample.1`` -> ``shortcut.norm``;
* ``fc.*`` is dropped; ``num_batches_tracked`` is kept (detectron2 ignores it).

Parts of a transfer bundle (:data:`lewel_bench.transfer.PARTS`) go in with their detectron2 names and the
part's prefix (``box_head.conv1.weight``). A known failure in the field (MoCo's converter keeps only
``module.encoder_q.`` keys and silently writes an empty model for anything else) cannot happen here:
:func:`check_complete` refuses a file that does not hold every trunk tensor. :func:`from_detectron2` maps
a converted dict back to torchvision names; the round trip is exact.
"""
from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import Backbone, BackboneError, load_backbone
from ..io import atomic_write_bytes
from ..layouts import DETECTRON2_TO_TORCHVISION, apply_renames
from ..models import build_backbone
from . import PARTS

log = logging.getLogger(__name__)

AUTHOR = "lewel-bench"
_OPTIONAL = ("num_batches_tracked",)


def tv_to_d2_name(k: str) -> str:
    """One torchvision ResNet key -> its detectron2 name (see the module docstring)."""
    if not k.startswith("layer"):
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}.", f"res{t + 1}.")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}.", f"conv{t}.norm.")
    k = k.replace("downsample.0.", "shortcut.")
    k = k.replace("downsample.1.", "shortcut.norm.")
    return k


def d2_to_tv_name(k: str) -> str:
    """Inverse of :func:`tv_to_d2_name` (the renames of the ``detectron2`` checkpoint layout)."""
    return apply_renames(k, DETECTRON2_TO_TORCHVISION)


def check_complete(state_dict: Mapping[str, Any], arch: str, where: str = "<input>") -> None:
    """Raise :class:`BackboneError` unless ``state_dict`` (torchvision names) holds every ``arch`` tensor."""
    ref = build_backbone(arch).state_dict()
    needed = [k for k in ref if not k.endswith(_OPTIONAL)]
    present = [k for k in needed if k in state_dict]
    if len(present) != len(needed):
        missing = [k for k in needed if k not in state_dict]
        raise BackboneError(
            f"{where}: refusing to write a detectron2 file with {'no' if not present else 'partial'} backbone weights: "
            f"{len(present)} of {len(needed)} {arch} tensors present, {len(missing)} missing "
            f"(first: {', '.join(missing[:5])})")
    bad = [k for k in present if tuple(np.shape(state_dict[k])) != tuple(ref[k].shape)]
    if bad:
        raise BackboneError(f"{where}: {len(bad)} tensors with the wrong shape for {arch} (first: {bad[:3]})")


def to_detectron2(bb: Backbone, parts: Sequence[str] = ()) -> dict:
    """The detectron2 checkpoint dict for a validated :class:`Backbone` (fc dropped, numpy values), with the
    transfer-bundle ``parts`` asked for (each must be in the backbone; see :mod:`lewel_bench.transfer`)."""
    check_complete(bb.state_dict, bb.arch, bb.path or "<backbone>")
    model = {tv_to_d2_name(k): v.detach().cpu().numpy() for k, v in bb.state_dict.items() if not k.startswith("fc.")}
    for part in parts:
        if part not in bb.parts:
            raise BackboneError(f"{bb.path or '<backbone>'}: no transfer part {part!r} to export "
                                f"(it has: {', '.join(sorted(bb.parts)) or 'the trunk only'})")
        model.update({PARTS[part] + k: v.detach().cpu().numpy() for k, v in bb.parts[part].items()})
    return {"model": model, "__author__": AUTHOR, "matching_heuristics": True}


def from_detectron2(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map a detectron2 checkpoint dict (ours) back to a torchvision state dict of tensors (the trunk;
    transfer-bundle parts stay under their detectron2 names)."""
    if "model" not in obj:
        raise BackboneError("not a detectron2 checkpoint dict: no 'model' key")
    trunk = ("stem.", "res2.", "res3.", "res4.", "res5.")
    return {(d2_to_tv_name(k) if k.startswith(trunk) else k): torch.from_numpy(np.asarray(v))
            for k, v in obj["model"].items()}


def load_detectron2_pkl(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a converted ``.pkl`` and return torchvision-named tensors."""
    with open(path, "rb") as f:
        return from_detectron2(pickle.load(f, encoding="latin1"))


def convert(src: str | Path, dst: str | Path, prefix: str | None = None, arch: str | None = None,
            parts: Sequence[str] = (), layout: str | None = None) -> Path:
    """Read ``src`` (any format :func:`load_backbone` accepts; ``prefix`` / ``layout``: which encoder) and write
    the detectron2 pickle ``dst``."""
    bb = load_backbone(src, prefix=prefix, arch=arch, parts=parts, layout=layout)
    obj = to_detectron2(bb, parts)
    out = atomic_write_bytes(dst, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    counts = ", ".join(f"{p} {len(bb.parts[p])}" for p in parts)
    log.info("wrote %s: %d tensors (%s trunk %d%s; method %s) from %s", out, len(obj["model"]), bb.arch,
             len(bb.state_dict), f", {counts}" if counts else "", bb.meta.get("method", "?"), src)
    return out
