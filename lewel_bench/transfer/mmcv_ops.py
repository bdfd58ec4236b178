"""A pure-torch stand-in for ``mmcv.ops`` when mmcv has no compiled ops (``mmcv-lite``).

mmseg 1.2.2 imports ``point_sample`` (``mmseg/utils/mask_classification.py``,
``mmseg/models/utils/point_sample.py``) and ``sigmoid_focal_loss`` (``mmseg/models/losses/focal_loss.py``)
from ``mmcv.ops`` unconditionally, so ``import mmseg.models`` fails under ``mmcv-lite`` with
``No module named 'mmcv._ext'``. :func:`install` registers this module's functions as ``mmcv.ops``
*only* when the real ``mmcv.ops`` cannot be imported; with a full mmcv build nothing is replaced.
The FCN protocol uses neither op; they are implemented faithfully anyway so other heads/losses work.
"""
from __future__ import annotations

import importlib
import logging
import sys
import types

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

SHIM_ATTR = "__lewel_bench_shim__"


def point_sample(input: Tensor, points: Tensor, align_corners: bool = False, **kwargs) -> Tensor:
    """mmcv's ``point_sample``: bilinear samples of ``input`` (N, C, H, W) at ``points`` in [0, 1].

    ``points`` is (N, P, 2) -> output (N, C, P), or (N, Hp, Wp, 2) -> (N, C, Hp, Wp) (``grid_sample``).
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    out = F.grid_sample(input, points * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out


def sigmoid_focal_loss(input: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """mmcv's compiled sigmoid focal loss: ``input`` (N, C) logits, ``target`` (N,) class ids (C = none).

    Per element: ``-alpha (1-p)^gamma log p`` for the target class, ``-(1-alpha) p^gamma log(1-p)`` for the
    others; ``weight`` (C,) scales each sample by its target class' weight; 'mean' divides by N.
    """
    num_classes = input.size(1)
    onehot = F.one_hot(target.long().clamp(max=num_classes), num_classes + 1)[:, :num_classes].to(input.dtype)
    p = input.sigmoid()
    pos = -alpha * (1 - p).pow(gamma) * F.logsigmoid(input)
    neg = -(1 - alpha) * p.pow(gamma) * F.logsigmoid(-input)
    loss = onehot * pos + (1 - onehot) * neg
    if weight is not None:
        w = torch.cat([weight, weight.new_ones(1)])[target.long().clamp(max=num_classes)]
        loss = loss * w[:, None]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / input.size(0)
    raise ValueError(f"sigmoid_focal_loss: unknown reduction {reduction!r} (none, mean, sum)")


def install() -> bool:
    """Make ``import mmcv.ops`` work. Returns True if the shim was installed, False if real ops exist."""
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return bool(getattr(current, SHIM_ATTR, False))
    try:
        importlib.import_module("mmcv.ops")
        return False
    except ImportError as e:  # mmcv-lite: no mmcv._ext
        reason = f"{type(e).__name__}: {e}"
    for name in [m for m in sys.modules if m.startswith("mmcv.ops.")]:
        del sys.modules[name]  # half-imported submodules of the failed real package
    import mmcv

    mod = types.ModuleType("mmcv.ops", doc=f"lewel-bench pure-torch shim ({reason})")

    def missing_op(name: str):
        # mmseg guards its optional ops with ``except ModuleNotFoundError`` (what the real failure raises)
        if name.startswith("__"):
            raise AttributeError(name)
        raise ModuleNotFoundError(f"mmcv.ops.{name} needs mmcv's compiled ops ({reason}); only point_sample "
                                  "and sigmoid_focal_loss have pure-torch versions in lewel-bench's shim")

    mod.__getattr__ = missing_op
    mod.point_sample = point_sample
    mod.sigmoid_focal_loss = sigmoid_focal_loss
    setattr(mod, SHIM_ATTR, True)
    sys.modules["mmcv.ops"] = mod
    mmcv.ops = mod
    log.info("mmcv.ops has no compiled ops (%s); using lewel-bench's pure-torch point_sample/sigmoid_focal_loss",
             reason)
    return True
