"""BYOL (Grill et al. 2020): projector and predictor 4096-256 with BN, normalised MSE (Eq. 5), cosine EMA."""
from __future__ import annotations

import torch

from ..heads import MLP
from ..losses import normalized_mse
from .base import METHODS, Encoder, SSLMethod


def sym_reduce(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """The two view directions: ``sum`` (official BYOL / LEWEL code: the loss scale the lr was tuned with)
    or ``mean`` (half of it)."""
    if mode == "sum":
        return a + b
    if mode == "mean":
        return 0.5 * (a + b)
    raise ValueError(f"model.sym_reduce: expected sum or mean, got {mode!r}")


@METHODS.register("byol")
class BYOL(SSLMethod):
    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        self.sym = mc.get("sym_reduce", "sum")
        self.online = Encoder(self.arch, MLP(self.D, mc["hidden"], mc["dim"]), pooled=True)
        self.predictor = MLP(mc["dim"], mc["pred_hidden"], mc["dim"])
        self.target = self.make_target(self.online)

    def forward(self, views: list[torch.Tensor]):
        x1, x2 = views
        p1, p2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        with torch.no_grad():
            t1, t2 = self.target(x1), self.target(x2)
        return sym_reduce(normalized_mse(p1, t2), normalized_mse(p2, t1), self.sym), {}
