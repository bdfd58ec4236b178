"""Projection heads of the pretraining methods.

* :class:`MLP`: the "neck" used by BYOL and the official LEWEL code: 1x1 ``Conv1d`` layers
  (linear without bias, BN, ReLU, linear without bias), applied position-wise to a ``(B, C, L)`` tensor
  (or to a ``(B, C)`` vector). BN statistics are shared over the batch AND the length axis.
* :func:`alignment_maps`: LEWEL's maps W (Sec. 3.2): L2-normalise the heat-maps across the d channels
  at every position, divide by a temperature, softmax over the H*W positions.
* :func:`aligned_aggregate`: Eq. (1) with the channel grouping of Eq. (2).
* :class:`CoupledHead`: the coupled global projector g (pooled vector at position 0 and the H*W pixels
  in ONE pass) plus the semantic projector p on the d/h aligned representations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Two-layer MLP of 1x1 conv1d: ``Linear(in, hidden) [-> BN] -> ReLU -> Linear(hidden, out)``.

    ``bn=True, bias=False`` is the BYOL / LEWEL form (4096-256 for LEWEL_B, 2048-128 for LEWEL_M, Sec. 3.3);
    ``bn=False, bias=True`` is MoCo v2's head (2048-2048-128).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, bn: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Conv1d(in_dim, hidden, 1, bias=bias or not bn)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv1d(hidden, out_dim, 1, bias=bias)

    def after_fc1(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the first linear layer (for the re-associated aligned path)."""
        return self.fc2(self.relu(self.bn(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.forward(x.unsqueeze(-1)).squeeze(-1)
        return self.after_fc1(self.fc1(x))


def alignment_maps(heat: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Alignment maps W from the per-pixel heat-maps W~ (B, d, HW) (Sec. 3.2).

    L2 normalisation across the d channels at each position, division by the temperature (1.0 in
    the official scripts), softmax over positions: every one of the d maps is >= 0 and sums to 1.
    """
    return F.softmax(F.normalize(heat, dim=1) / temperature, dim=2)


def aligned_aggregate(feat: torch.Tensor, maps: torch.Tensor, h: int) -> torch.Tensor:
    """Aligned representations y_k, Eq. (1)-(2): returns (B, D, d/h).

    ``feat`` (B, D, HW) splits into h groups of D/h channels; ``maps`` (B, d, HW) into h contiguous
    blocks of d/h maps (block j pairs with feature group j, as in the official code; the paper's
    interleaved index of Eq. (2) is a fixed permutation of g's outputs). y_k concatenates, over j,
    map (j, k) applied to group j: one batched matmul.
    """
    b, D, hw = feat.shape
    d = maps.shape[1]
    if D % h or d % h:
        raise ValueError(f"channel grouping: D={D} and d={d} must both be divisible by h={h}")
    k = d // h
    fg = feat.reshape(b, h, D // h, hw)
    wg = maps.reshape(b, h, k, hw)
    y = torch.matmul(fg, wg.transpose(2, 3))  # (B, h, D/h, d/h)
    return y.reshape(b, D, k)


class CoupledHead(nn.Module):
    """LEWEL head: coupled global projector g and semantic projector p (Sec. 3.2-3.3).

    forward(F (B, D, H, W)) -> (z (B, d), z_aligned (B, c, d/h), W (B, d, HW)).
    g runs once over [GAP(F), pixels] (length 1 + HW, shared BN statistics); position 0 is the global
    embedding z, positions 1.. are the heat-maps W~. p runs on the d/h aligned representations.
    ``reassociate``: p's first layer is linear, so p.fc1(sum_p W_p F_p) = sum_p W_p (p.fc1 F_p) per group;
    computing it in the cheaper order (pixels first when HW < d/h) gives the same numbers up to
    rounding ("auto" picks the cheaper, "never" is the literal order).
    """

    def __init__(self, in_dim: int, hidden: int, dim: int, h: int = 4, temperature: float = 1.0,
                 sem_hidden: int | None = None, sem_dim: int | None = None, bn: bool = True,
                 reassociate: str = "auto") -> None:
        super().__init__()
        if dim % h or in_dim % h:
            raise ValueError(f"LEWEL head: d={dim} and D={in_dim} must be divisible by h={h}")
        self.h, self.temperature, self.reassociate = h, temperature, reassociate
        self.g = MLP(in_dim, hidden, dim, bn=bn)
        self.p = MLP(in_dim, sem_hidden or hidden, sem_dim or dim, bn=bn)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, D, H, W = feat.shape
        x = feat.flatten(2)  # (B, D, HW)
        out = self.g(torch.cat([x.mean(2, keepdim=True), x], dim=2))  # one pass, shared BN stats
        z, heat = out[:, :, 0], out[:, :, 1:]
        maps = alignment_maps(heat, self.temperature)
        k = maps.shape[1] // self.h
        hw = H * W
        if self.reassociate == "always" or (self.reassociate == "auto" and hw < k):
            za = self.p.after_fc1(self._p_fc1_pixels_first(x, maps))
        else:
            za = self.p(aligned_aggregate(x, maps, self.h))
        return z, za, maps

    def _p_fc1_pixels_first(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """p.fc1 of every aligned representation, computed as sum_j W_(j,k) @ (fc1_j F_j)."""
        b, D, hw = x.shape
        h = self.h
        k = maps.shape[1] // h
        w1 = self.p.fc1.weight.squeeze(-1)  # (hidden, D)
        hid = w1.shape[0]
        xg = x.reshape(b, h, D // h, hw)
        w1g = w1.reshape(hid, h, D // h).permute(1, 0, 2)  # (h, hidden, D/h)
        proj = torch.matmul(w1g.unsqueeze(0), xg)  # (B, h, hidden, HW)
        out = torch.matmul(proj, maps.reshape(b, h, k, hw).transpose(2, 3)).sum(1)  # (B, hidden, d/h)
        if self.p.fc1.bias is not None:
            out = out + self.p.fc1.bias[None, :, None]
        return out
