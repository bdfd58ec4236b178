"""Target-network updates: xi <- m xi + (1 - m) theta (Sec. 3.1), and the momentum schedules.

* ``params``: EMA of the parameters only; the target keeps its own BN running statistics and runs
  in train mode (MoCo v2, BYOL, LEWEL_B with SyncBN at 400 epochs).
* ``eman``: EMA of the whole state dict including BN running statistics (``num_batches_tracked``
  copied), target in eval mode (EMAN, Cai et al. 2021; LEWEL_B 100/200 epochs, "EMA BN statistics").
"""
from __future__ import annotations

import math

import torch
from torch import nn

EMA_MODES = ("params", "eman")


def cosine_momentum(m0: float, it: int, total: int) -> float:
    """BYOL schedule: m = 1 - (1 - m0) (cos(pi t / T) + 1) / 2; m(0) = m0, m(T) = 1."""
    return 1.0 - (1.0 - m0) * (math.cos(math.pi * it / max(total, 1)) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float, mode: str = "params") -> None:
    """Move ``target`` towards ``online`` with momentum ``m`` (``mode`` in ``params`` | ``eman``)."""
    if mode == "params":
        tp = [p for p in target.parameters()]
        op = [p.detach() for p in online.parameters()]
    elif mode == "eman":
        tsd, osd = target.state_dict(), online.state_dict()
        tp, op = [], []
        for name, t in tsd.items():
            o = osd[name]
            if t.is_floating_point():
                tp.append(t)
                op.append(o.detach())
            else:
                t.copy_(o)  # num_batches_tracked
    else:
        raise ValueError(f"unknown EMA mode {mode!r}; expected one of {EMA_MODES}")
    if tp:
        torch._foreach_mul_(tp, m)
        torch._foreach_add_(tp, op, alpha=1.0 - m)
