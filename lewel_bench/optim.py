"""The optimisation toolkit every training stage shares: parameter groups, optimisers, lr schedules.

* :func:`param_groups`: trainable parameters split by the ``no_decay`` rules (no weight decay and, for
  LARS, no trust-ratio adaptation) and by per-pattern lr scales. Rules: ``norm`` (parameters of
  normalisation layers, by module type), ``bias`` (every parameter named ``bias``), ``ndim1`` (tensors of
  one dimension or fewer), ``re:<pattern>`` (``re.search`` on the parameter's full name, as the CGH and
  MCL code exclude BN / bias by name).
* :data:`OPTIMIZERS` (``sgd``, ``lars``) and :func:`build_optimizer`; :class:`LARS` scales each update by
  ``trust * ||w|| / ||g + wd w||`` and applies the lr after the momentum buffer (You et al. 2017, as SimCLR /
  BYOL implement it; trust coefficient 1e-3 in the official LEWEL scripts), or, with
  ``optim.lars: official``, as the official LEWEL code does: ``trust * ||w|| / (||g|| + wd ||w||)``
  with the lr folded into the momentum buffer (the two differ in the norm and whenever the lr changes).
* :class:`Schedule`: one family of lr multipliers, per iteration or per epoch: ``cosine`` (to ``min_lr``),
  ``step`` (x ``gamma`` at each milestone), ``poly`` and ``constant``, each after an optional linear
  warm-up from ``warmup_start`` (for ``cosine``, ``cosine_from="start"`` is mmcv's form: the cosine runs over
  all steps and the warm-up multiplies it); :func:`set_lr` sets every group's lr from its base lr.
* gradient-norm clipping (``optim.clip_grad_norm``) is part of :func:`lewel_bench.utils.amp_step`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import ConfigError
from .registry import Registry

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
RULES = ("norm", "bias", "ndim1")


def _rule_matches(rule: str, name: str, p: torch.Tensor, owner: nn.Module) -> bool:
    if rule == "norm":
        return isinstance(owner, NORM_TYPES)
    if rule == "bias":
        return name.rsplit(".", 1)[-1] == "bias"
    if rule == "ndim1":
        return p.ndim <= 1
    if rule.startswith("re:"):
        return re.search(rule[3:], name) is not None
    raise ConfigError(f"optim.no_decay: unknown rule {rule!r}; expected one of {', '.join(RULES)} or re:<pattern>")


def param_groups(model: nn.Module, weight_decay: float, no_decay: Sequence[str] = (),
                 lr_scale: Mapping[str, float] | None = None) -> list[dict]:
    """Trainable parameters grouped by (excluded from decay?, lr scale).

    ``lr_scale``: ``{"re:<pattern>": scale}``; a parameter takes the first pattern its name matches (else 1).
    Each group holds ``weight_decay`` (0 when excluded), ``lars_exclude`` and ``lr_scale``. Shared
    parameters count once.
    """
    for r in no_decay:
        _rule_matches(r, "", torch.zeros(1), nn.Identity())  # unknown rules fail before anything is built
    scales = list((lr_scale or {}).items())
    for pat, _ in scales:
        if not pat.startswith("re:"):
            raise ConfigError(f"optim.lr_scale: key {pat!r} must be re:<pattern>")
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, float], list[torch.Tensor]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        excluded = any(_rule_matches(r, name, p, owners[id(p)]) for r in no_decay)
        scale = next((float(s) for pat, s in scales if re.search(pat[3:], name)), 1.0)
        groups.setdefault((excluded, scale), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if excl else weight_decay, "lars_exclude": excl, "lr_scale": scale}
            for (excl, scale), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling on top of SGD momentum; groups with ``lars_exclude`` are plain SGD.

    ``variant="standard"``: ``d = g + wd w``, ``d *= trust ||w|| / (||d|| + eps)``, ``buf = m buf + d``,
    ``w -= lr buf``. ``variant="official"`` (the official LEWEL code): ``r = trust ||w|| / (||g|| + wd ||w||)``,
    ``buf = m buf + lr r (g + wd w)``, ``w -= buf``. Excluded tensors: ratio 1 in both.
    """

    VARIANTS = ("standard", "official")

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, eps: float = 1e-8, variant: str = "standard") -> None:
        if variant not in self.VARIANTS:
            raise ConfigError(f"optim.lars {variant!r}: expected one of {', '.join(self.VARIANTS)}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, lars_exclude=False)
        super().__init__(params, defaults)
        self.variant = variant

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        if self.variant == "official":
            self._official_step()
            return loss
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

    def _official_step(self) -> None:
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                ratio = torch.ones((), device=p.device, dtype=p.dtype)
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.norm(p), torch.norm(g)
                    denom = g_norm + wd * w_norm
                    ratio = torch.where(denom > 0, group["trust_coefficient"] * w_norm / denom, ratio)
                d = g.add(p, alpha=wd) if wd else g.clone()
                d.mul_(ratio * group["lr"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.detach().clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.sub_(state["momentum_buffer"])


OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                           weight_decay=cfg.get("weight_decay", 0.0), nesterov=cfg.get("nesterov", False))


@OPTIMIZERS.register("lars")
def _lars(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return LARS(groups, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9), weight_decay=cfg.get("weight_decay", 0.0),
                trust_coefficient=cfg.get("trust_coefficient", 1e-3), variant=cfg.get("lars", "standard"))


def build_optimizer(groups: list[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``cfg``: ``name`` (a key of :data:`OPTIMIZERS`), ``lr``, ``momentum``, ``weight_decay``, ...

    A group's ``base_lr`` (what schedules scale) is its own ``lr`` if it sets one, else ``cfg["lr"]`` times its
    ``lr_scale``.
    """
    for g in groups:
        g.setdefault("lr", cfg["lr"] * g.get("lr_scale", 1.0))
    opt = OPTIMIZERS.get(cfg["name"])(groups, cfg)
    for g in opt.param_groups:
        g.setdefault("base_lr", g["lr"])
    return opt


def optimizer_for(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """:func:`build_optimizer` on :func:`param_groups` of ``model`` from one ``optim`` config section."""
    groups = param_groups(model, cfg.get("weight_decay", 0.0), cfg.get("no_decay", ()), cfg.get("lr_scale"))
    return build_optimizer(groups, cfg)


def set_lr(optimizer: torch.optim.Optimizer, schedule: Schedule, t: int) -> list[float]:
    """Every group's lr at step ``t`` of ``schedule`` (from its ``base_lr``); returns the lrs."""
    for g in optimizer.param_groups:
        g["lr"] = schedule.lr(g["base_lr"], t)
    return [g["lr"] for g in optimizer.param_groups]


@dataclass(frozen=True)
class Schedule:
    """lr multiplier at step ``t`` of ``total`` (steps are iterations or epochs, as the stage calls it).

    Warm-up (``warmup`` steps): ``warmup_start + (1 - warmup_start) * (t + warmup_offset) / warmup``;
    ``warmup_offset`` 0 starts exactly at ``warmup_start`` (detectron2, mmcv), 1 reaches the full lr on the
    last warm-up step (this suite's pretraining). Then ``cosine``: from 1 to ``min_ratio`` over the steps
    after the warm-up (``cosine_from="warmup_end"``), or over all ``total`` steps with the warm-up ramp
    multiplying it (``cosine_from="start"``: mmcv's ``CosineAnnealing`` with a linear warm-up, lr(t) =
    cos(t) * (warmup_start + (1 - warmup_start) t / warmup) for t < warmup, as the MCL code); ``step``:
    ``gamma`` ** (milestones passed) (the warm-up multiplies it, as detectron2's WarmupMultiStepLR);
    ``poly``: ``(1 - t / total) ** power`` (to ``min_ratio``); ``constant``.
    """

    name: str
    total: int
    warmup: int = 0
    warmup_start: float = 0.0
    warmup_offset: int = 0
    min_ratio: float = 0.0
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    power: float = 0.9
    cosine_from: str = "warmup_end"

    KINDS = ("cosine", "step", "poly", "constant")
    COSINE_FROM = ("warmup_end", "start")

    def __post_init__(self) -> None:
        if self.name not in self.KINDS:
            raise ConfigError(f"lr schedule {self.name!r}: expected one of {', '.join(self.KINDS)}")
        if self.cosine_from not in self.COSINE_FROM:
            raise ConfigError(f"schedule.cosine_from {self.cosine_from!r}: expected one of {', '.join(self.COSINE_FROM)}")

    def main_factor(self, t: int) -> float:
        if self.name == "step":
            return self.gamma ** sum(t >= m for m in self.milestones)
        if self.name == "constant":
            return 1.0
        if self.name == "poly":
            return self.min_ratio + (1.0 - self.min_ratio) * (1.0 - min(t, self.total) / max(self.total, 1)) ** self.power
        if self.cosine_from == "start":
            x = t / max(self.total, 1)
        elif t < self.warmup:
            return 1.0
        else:
            x = (t - self.warmup) / max(self.total - self.warmup, 1)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(x, 1.0)))

    def lr(self, base: float, t: int) -> float:
        """The lr at step ``t`` for a base lr ``base``."""
        main = self.main_factor(t)
        if t < self.warmup:
            ramp = self.warmup_start * self.warmup + (1.0 - self.warmup_start) * (t + self.warmup_offset)
            return base * main * ramp / self.warmup
        return base * main

    def __call__(self, t: int) -> float:
        """The multiplier at step ``t`` (the lr of a base lr of 1)."""
        return self.lr(1.0, t)


def schedule_from_config(sched: Mapping[str, Any], total: int, steps_per_epoch: int = 1, base_lr: float = 1.0) -> Schedule:
    """A :class:`Schedule` from a config section, ``total`` steps long; epoch-valued keys
    (``warmup_epochs``, ``milestones`` of a per-iteration schedule given in epochs) become steps with
    ``steps_per_epoch``; ``min_lr`` is absolute (divided by ``base_lr``)."""
    warmup = round(float(sched.get("warmup_epochs", 0)) * steps_per_epoch) + int(sched.get("warmup_iters", 0))
    return Schedule(name=sched["name"], total=int(total), warmup=warmup,
                    warmup_start=float(sched.get("warmup_start", 0.0)), warmup_offset=int(sched.get("warmup_offset", 0)),
                    min_ratio=float(sched.get("min_lr", 0.0)) / base_lr if base_lr else 0.0,
                    milestones=tuple(round(m * steps_per_epoch) for m in sched.get("milestones", ())),
                    gamma=float(sched.get("gamma", 0.1)), power=float(sched.get("power", 0.9)),
                    cosine_from=str(sched.get("cosine_from", "warmup_end")))
