"""MoCo v2 (Chen et al. 2020): InfoNCE (Eq. 4) against a FIFO queue, fixed momentum 0.999, ShuffleBN.

``model.extra_p`` (LEWEL Table 6, "MoCo v2 with an extra projection head"): LEWEL_M's semantic projector p
(its MLP form, ``extra_p_hidden`` / ``extra_p_dim``) on GAP(F) beside MoCo's head, trained with LEWEL_M's
aligned loss (InfoNCE against the other images of the batch) on that one embedding, and Eq. (3)'s beta:
the parameters and the loss of LEWEL_M's aligned branch without any alignment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lewel_bench import dist as ldist

from ..heads import MLP
from ..losses import info_nce, info_nce_in_batch, lewel_total
from .base import METHODS, Encoder, FIFOQueue, SSLMethod


class WithExtraProjector(nn.Module):
    """MoCo's head g and an extra projector p side by side on the pooled feature: y -> (g(y), p(y))."""

    def __init__(self, g: nn.Module, p: nn.Module) -> None:
        super().__init__()
        self.g, self.p = g, p

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.g(y), self.p(y)


@METHODS.register("mocov2")
class MoCoV2(SSLMethod):
    """Query = online(view 1), key = target(view 2); head 2048-2048-128 (ReLU, no BN, bias) by default."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        self.tau = float(mc["temperature"])
        self.symmetric = bool(mc.get("symmetric", False))
        head = MLP(self.D, mc["hidden"], mc["dim"], bn=mc.get("head_bn", False), bias=mc.get("head_bias", True))
        self.extra_p = bool(mc.get("extra_p", False))
        if self.extra_p:
            head = WithExtraProjector(head, MLP(self.D, mc["extra_p_hidden"], mc["extra_p_dim"]))
            self.beta = float(mc["beta"])
        self.online = Encoder(self.arch, head, pooled=True)
        self.target = self.make_target(self.online)
        self.queue = FIFOQueue(mc["queue_size"], mc["dim"])

    def _direction(self, x_q: torch.Tensor, x_k: torch.Tensor):
        q, k = self.online_split(x_q), self.target_shuffled(x_k)
        if self.extra_p:
            (q, e), (k, te) = q, k
        k = F.normalize(k, dim=1)
        loss = info_nce(q, k, self.queue.keys.clone().detach(), self.tau)
        loss_p = None
        if self.extra_p:  # LEWEL_M's aligned loss on the one extra embedding (in-batch negatives)
            te_all = ldist.all_gather_nograd(te.contiguous())[:, None]
            loss_p = info_nce_in_batch(e[:, None], te_all, self.tau, offset=ldist.get_rank() * e.shape[0])
        return loss, loss_p, k

    def forward(self, views: list[torch.Tensor]):
        x1, x2 = views
        loss, loss_p, k = self._direction(x1, x2)
        keys = [k]
        if self.symmetric:
            loss2, loss_p2, k1 = self._direction(x2, x1)
            loss, keys = loss + loss2, [k, k1]
            loss_p = loss_p + loss_p2 if self.extra_p else None
        for k in keys:
            self.queue.push(keys=ldist.all_gather_nograd(k))
        if self.extra_p:
            return lewel_total(loss, loss_p, self.beta), {"loss_g": loss.detach(), "loss_p": loss_p.detach()}
        return loss, {}
