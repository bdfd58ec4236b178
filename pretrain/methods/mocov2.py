"""MoCo v2 (Chen et al. 2020): InfoNCE (Eq. 4) against a FIFO queue, fixed momentum 0.999, ShuffleBN."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lewel_bench import dist as ldist

from ..heads import MLP
from ..losses import info_nce
from .base import METHODS, Encoder, FIFOQueue, SSLMethod


@METHODS.register("mocov2")
class MoCoV2(SSLMethod):
    """Query = online(view 1), key = target(view 2); head 2048-2048-128 (ReLU, no BN, bias) by default."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        self.tau = float(mc["temperature"])
        self.symmetric = bool(mc.get("symmetric", False))
        head = MLP(self.D, mc["hidden"], mc["dim"], bn=mc.get("head_bn", False), bias=mc.get("head_bias", True))
        self.online = Encoder(self.arch, head, pooled=True)
        self.target = self.make_target(self.online)
        self.queue = FIFOQueue(mc["queue_size"], mc["dim"])

    def _direction(self, x_q: torch.Tensor, x_k: torch.Tensor):
        q = self.online_split(x_q)
        k = F.normalize(self.target_shuffled(x_k), dim=1)
        return info_nce(q, k, self.queue.keys.clone().detach(), self.tau), k

    def forward(self, views: list[torch.Tensor]):
        x1, x2 = views
        loss, k = self._direction(x1, x2)
        keys = [k]
        if self.symmetric:
            loss2, k1 = self._direction(x2, x1)
            loss, keys = loss + loss2, [k, k1]
        for k in keys:
            self.queue.push(keys=ldist.all_gather_nograd(k))
        return loss, {}
