"""Optimisers and the learning-rate schedule (set every iteration).

* :func:`param_groups`: BN parameters and biases (every tensor with ndim <= 1) go to a group without
  weight decay and, for LARS, without trust-ratio adaptation (LEWEL_B / BYOL, "weight decay of bias
  and BN layers are set to 0", Sec. 3.3).
* :class:`LARS`: SGD with momentum whose update is scaled per tensor by
  ``trust * ||w|| / ||g + wd w||`` (You et al.; trust coefficient 1e-3 in the official LEWEL scripts).
* :func:`cosine_lr`: linear warm-up then cosine annealing to 0, per iteration.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """Trainable parameters split into decayed / excluded groups (``lars_exclude`` marks the latter)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_bn_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling on top of SGD momentum; groups with ``lars_exclude`` are plain SGD."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, eps: float = 1e-8) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        d = d.add(p, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.norm(p), torch.norm(d)
                    ratio = torch.where((w_norm > 0) & (d_norm > 0),
                                        group["trust_coefficient"] * w_norm / (d_norm + group["eps"]),
                                        torch.ones_like(w_norm))
                    d = d.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(cfg: dict, model: nn.Module) -> torch.optim.Optimizer:
    """``cfg`` = the ``optim`` section: name (sgd | lars), lr, momentum, weight_decay, exclude_bn_bias."""
    groups = param_groups(model, cfg["weight_decay"], cfg.get("exclude_bn_bias", False))
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if name == "lars":
        return LARS(groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                    trust_coefficient=cfg.get("trust_coefficient", 1e-3))
    raise ValueError(f"optim.name: unknown optimiser {name!r}; expected sgd or lars")


def cosine_lr(base_lr: float, it: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine from ``base_lr`` to 0 at ``total``."""
    if it < warmup:
        return base_lr * (it + 1) / warmup
    t = (it - warmup) / max(total - warmup, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
