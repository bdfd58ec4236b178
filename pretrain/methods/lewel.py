"""LEWEL (Huang et al., CVPR 2022): LEWEL_M (MoCo-based, Eq. 4) and LEWEL_B (BYOL-based, Eq. 5).

Both use the coupled head (:class:`pretrain.heads.CoupledHead`): g on [GAP(F), pixels] in one pass
gives the global embedding z and the alignment maps W; the d/h aligned representations (Eq. 1-2)
go through the semantic projector p. Total loss Eq. (3): (1 - beta) L_g + beta L_a.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lewel_bench import dist as ldist
from lewel_bench.models import backbone_features

from ..heads import MLP, CoupledHead
from ..losses import info_nce, info_nce_in_batch, lewel_total, normalized_mse
from .base import METHODS, Encoder, FIFOQueue, SSLMethod
from .byol import sym_reduce


def coupled_head(D: int, mc: dict) -> CoupledHead:
    return CoupledHead(D, mc["hidden"], mc["dim"], h=mc["groups"], temperature=mc["align_temperature"],
                       sem_hidden=mc.get("sem_hidden") or mc["hidden"], sem_dim=mc.get("sem_dim") or mc["dim"],
                       reassociate=mc.get("reassociate", "auto"), coupling=mc.get("coupling", "coupled"),
                       global_branch=mc.get("global_branch", True), align=mc.get("align", "learned"),
                       sem_projector=mc.get("sem_projector", True))


def online_alignment_maps(method: SSLMethod, x: torch.Tensor) -> torch.Tensor:
    """W of the online coupled head for images ``x``: (B, HW, d) -> (B, d, h, w)."""
    feat = backbone_features(method.online.backbone, x)["res5"]
    _, _, W = method.online.head(feat)
    b, _hw, d = W.shape
    return W.permute(0, 2, 1).reshape(b, d, feat.shape[2], feat.shape[3])


def aligned_dim(D: int, mc: dict) -> int:
    """Width c of the aligned embeddings: p's output, or D without p."""
    return (mc.get("sem_dim") or mc["dim"]) if mc.get("sem_projector", True) else D


@METHODS.register("lewel_m")
class LEWELM(SSLMethod):
    """L_g: InfoNCE of z' against target z'' with queue negatives; L_a: InfoNCE of aligned z'_k against
    z''_k with the other images of the (global) batch at the same k as negatives (Sec. 3.3)."""

    has_alignment_maps = True
    alignment_maps = online_alignment_maps

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        self.tau, self.beta = float(mc["temperature"]), float(mc["beta"])
        self.symmetric = bool(mc.get("symmetric", False))
        self.global_branch = bool(mc.get("global_branch", True))
        self.online = Encoder(self.arch, coupled_head(self.D, mc), pooled=False)
        self.target = self.make_target(self.online)
        if self.global_branch:  # "Align only" (Table 5) has no global loss, hence no queue
            self.queue = FIFOQueue(mc["queue_size"], mc["dim"])

    def _direction(self, x_q: torch.Tensor, x_k: torch.Tensor):
        z, za, _ = self.online_split(x_q)
        tz, tza, _ = self.target_shuffled(x_k)
        loss_g = None
        if self.global_branch:
            tz = F.normalize(tz, dim=1)
            loss_g = info_nce(z, tz, self.queue.keys.clone().detach(), self.tau)
        tza_all = ldist.all_gather_nograd(tza.contiguous())
        loss_a = info_nce_in_batch(za, tza_all, self.tau, offset=ldist.get_rank() * za.shape[0])
        return loss_g, loss_a, tz

    def forward(self, views: list[torch.Tensor]):
        x1, x2 = views
        lg, la, k = self._direction(x1, x2)
        keys = [k]
        if self.symmetric:
            lg2, la2, k1 = self._direction(x2, x1)
            lg, la, keys = (lg + lg2 if lg is not None else None), la + la2, [k, k1]
        if not self.global_branch:  # L = L_a: the global term is neither computed nor in the graph
            return la, {"loss_a": la.detach()}
        for k in keys:
            self.queue.push(keys=ldist.all_gather_nograd(k))
        return lewel_total(lg, la, self.beta), {"loss_g": lg.detach(), "loss_a": la.detach()}


@METHODS.register("lewel_b")
class LEWELB(SSLMethod):
    """Predictor q on z (global loss), separate predictor s on the aligned embeddings (aligned loss);
    normalised MSE (Eq. 5), global term averaged over B, aligned over B * d/h; directions summed as in
    the official code (``model.sym_reduce``). Target flavour ``model.target``: params | eman."""

    has_alignment_maps = True
    alignment_maps = online_alignment_maps

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        self.beta = float(mc["beta"])
        self.sym = mc.get("sym_reduce", "sum")
        self.global_branch = bool(mc.get("global_branch", True))
        self.online = Encoder(self.arch, coupled_head(self.D, mc), pooled=False)
        c = aligned_dim(self.D, mc)
        self.predictor = MLP(mc["dim"], mc["pred_hidden"], mc["dim"]) if self.global_branch else None  # q
        self.predictor_aligned = MLP(c, mc["pred_hidden"], c)  # s
        self.target = self.make_target(self.online)

    def _online(self, x: torch.Tensor):
        z, za, _ = self.online(x)
        return (self.predictor(z) if self.global_branch else None), self.predictor_aligned(za)

    def forward(self, views: list[torch.Tensor]):
        x1, x2 = views
        (q1, s1), (q2, s2) = self._online(x1), self._online(x2)
        with torch.no_grad():
            t1, ta1, _ = self.target(x1)
            t2, ta2, _ = self.target(x2)
        la = sym_reduce(normalized_mse(s1, ta2), normalized_mse(s2, ta1), self.sym)
        if not self.global_branch:
            return la, {"loss_a": la.detach()}
        lg = sym_reduce(normalized_mse(q1, t2), normalized_mse(q2, t1), self.sym)
        return lewel_total(lg, la, self.beta), {"loss_g": lg.detach(), "loss_a": la.detach()}
