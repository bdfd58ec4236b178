"""Projection heads of the pretraining methods (channel-LAST layout: tensors are (..., C)).

* :class:`MLP`: the "neck" of BYOL and the official LEWEL code: linear (no bias), BN, ReLU, linear
  (no bias). The weights are stored as the official 1x1 ``Conv1d`` layers (shape (out, in, 1)), but
  applied as one GEMM over all positions of a (B, L, C) tensor (CPU runs 1x1 conv1d through a slow
  im2col path). BN statistics are shared over the batch AND the position axis, exactly as BatchNorm1d
  over a (B, C, L) tensor.
* :func:`alignment_maps`: LEWEL's maps W (Sec. 3.2): L2-normalise the heat-maps across the d channels
  at every position, divide by a temperature, softmax over the H*W positions.
* :func:`aligned_aggregate`: Eq. (1) with the channel grouping of Eq. (2), one batched matmul.
* :class:`CoupledHead`: the coupled global projector g (pooled vector at position 0 and the H*W pixels
  in ONE pass) plus the semantic projector p on the d/h aligned representations; with the ablation options
  of Tables 5 and 6 (uncoupled heads, no global branch, uniform or random maps, no p).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Two-layer MLP ``Linear(in, hidden) [-> BN] -> ReLU -> Linear(hidden, out)`` on (..., in) tensors.

    ``bn=True, bias=False`` is the BYOL / LEWEL form (4096-256 for LEWEL_B, 2048-128 for LEWEL_M, Sec. 3.3);
    ``bn=False, bias=True`` is MoCo v2's head (2048-2048-128).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, bn: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Conv1d(in_dim, hidden, 1, bias=bias or not bn)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv1d(hidden, out_dim, 1, bias=bias)

    @staticmethod
    def _linear(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, conv.weight.squeeze(-1), conv.bias)

    def after_fc1(self, a: torch.Tensor) -> torch.Tensor:
        """Everything after the first linear layer: BN over all leading dims, ReLU, second linear."""
        shape = a.shape
        a = self.relu(self.bn(a.reshape(-1, shape[-1]))).reshape(shape)
        return self._linear(self.fc2, a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_fc1(self._linear(self.fc1, x))


def alignment_maps(heat: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Alignment maps W (B, HW, d) from the per-pixel heat-maps W~ (B, HW, d) (Sec. 3.2).

    L2 normalisation across the d channels at each position, division by the temperature (1.0 in
    the official scripts), softmax over the positions: each of the d maps is >= 0 and sums to 1.
    """
    return F.softmax(F.normalize(heat, dim=2) / temperature, dim=1)


def aligned_aggregate(x: torch.Tensor, maps: torch.Tensor, h: int) -> torch.Tensor:
    """Aligned representations y_k, Eq. (1)-(2): x (B, HW, D), maps (B, HW, d) -> (B, d/h, D).

    The D channels split into h groups of D/h, the d maps into h contiguous blocks of d/h maps (block j
    pairs with feature group j, as in the official code; the paper's interleaved index of Eq. (2) is a
    fixed permutation of g's outputs). y_k concatenates, over j, map (j, k) applied to group j.
    """
    b, hw, D = x.shape
    d = maps.shape[2]
    if D % h or d % h:
        raise ValueError(f"channel grouping: D={D} and d={d} must both be divisible by h={h}")
    k = d // h
    xg = x.reshape(b, hw, h, D // h).permute(0, 2, 1, 3)  # (B, h, HW, D/h)
    wg = maps.reshape(b, hw, h, k).permute(0, 2, 3, 1)  # (B, h, d/h, HW)
    y = torch.matmul(wg, xg)  # (B, h, d/h, D/h)
    return y.permute(0, 2, 1, 3).reshape(b, k, D)


class CoupledHead(nn.Module):
    """LEWEL head: coupled global projector g and semantic projector p (Sec. 3.2-3.3).

    forward(F (B, D, H, W)) -> (z (B, d), z_aligned (B, d/h, c), W (B, HW, d)).
    g runs once over [GAP(F), pixels] (length 1 + HW, shared BN statistics); position 0 is the global
    embedding z, positions 1.. are the heat-maps W~. p runs on the d/h aligned representations.
    ``reassociate``: p's first layer is linear, so fc1(sum_p W_p F_p) = sum_p W_p fc1(F_p) group by group;
    both orders give the same numbers up to rounding. Pixels-first does fewer multiply-adds when
    HW < d/h (7 x 7 maps and d/h = 64 at 224 px: 1.27 vs 1.29 LEWEL_B / BYOL FLOPs); "auto" picks it then,
    "never" is the literal order, "always" forces pixels-first. (On an H100 with AMP the two orders
    timed the same: LEWEL_B / BYOL 1.135 vs 1.144, within that machine's noise.)

    Ablations (Tables 5 and 6 of the paper; the defaults are LEWEL):

    * ``coupling="uncoupled"``: g sees only GAP(F) and gives z; a separate projector ``g_w`` of the same
      shape predicts the heat-maps from the pixels ("Global + Align" without the coupled head);
    * ``global_branch=False``: no global embedding (z is None); g predicts the heat-maps from the pixels
      alone ("Align only"; the method then has no global loss);
    * ``align="uniform"``: every map is 1 / HW (no alignment: each aligned representation is GAP(F));
      ``align="random"``: maps drawn for every image, view and step from the training process's random
      generator as softmax(N(0, 1) / temperature) over the positions: non-negative, summing to 1, not a
      function of the features; deterministic under the loop's seeding and restored exactly on resume;
    * ``sem_projector=False``: no p; the aligned embeddings are the aggregated D-dim representations.
    """

    COUPLINGS, ALIGNS = ("coupled", "uncoupled"), ("learned", "uniform", "random")

    def __init__(self, in_dim: int, hidden: int, dim: int, h: int = 4, temperature: float = 1.0,
                 sem_hidden: int | None = None, sem_dim: int | None = None, bn: bool = True,
                 reassociate: str = "auto", coupling: str = "coupled", global_branch: bool = True,
                 align: str = "learned", sem_projector: bool = True) -> None:
        super().__init__()
        if dim % h or in_dim % h:
            raise ValueError(f"LEWEL head: d={dim} and D={in_dim} must be divisible by h={h}")
        if reassociate not in ("auto", "never", "always"):
            raise ValueError(f"model.reassociate: expected auto, never or always, got {reassociate!r}")
        if coupling not in self.COUPLINGS or align not in self.ALIGNS:
            raise ValueError(f"LEWEL head: coupling {coupling!r} / align {align!r}: expected one of "
                             f"{self.COUPLINGS} / {self.ALIGNS}")
        self.h, self.temperature, self.reassociate = h, temperature, reassociate
        self.coupling, self.global_branch, self.align = coupling, global_branch, align
        self.g = MLP(in_dim, hidden, dim, bn=bn)
        self.g_w = MLP(in_dim, hidden, dim, bn=bn) if coupling == "uncoupled" and global_branch else None
        self.p = MLP(in_dim, sem_hidden or hidden, sem_dim or dim, bn=bn) if sem_projector else None

    def _heat_and_z(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(z, heat-maps W~ (B, HW, d)) of the pixels x (B, HW, D)."""
        if not self.global_branch:
            return None, self.g(x)
        if self.g_w is not None:
            return self.g(x.mean(1)), self.g_w(x)
        out = self.g(torch.cat([x.mean(1, keepdim=True), x], dim=1))  # one pass, shared BN statistics
        return out[:, 0], out[:, 1:]

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        b, D, H, W = feat.shape
        x = feat.permute(0, 2, 3, 1).reshape(b, H * W, D)  # free when feat is channels_last
        z, heat = self._heat_and_z(x)
        if self.align == "learned":
            maps = alignment_maps(heat, self.temperature)
        elif self.align == "uniform":
            maps = torch.full_like(heat, 1.0 / (H * W))
        else:
            noise = torch.randn(heat.shape, device=heat.device, dtype=heat.dtype)
            maps = torch.softmax(noise / self.temperature, dim=1)
        k = maps.shape[2] // self.h
        if self.p is None:
            za = aligned_aggregate(x, maps, self.h)
        elif self.reassociate == "always" or (self.reassociate == "auto" and H * W < k):
            za = self.p.after_fc1(self._p_fc1_pixels_first(x, maps))
        else:
            za = self.p(aligned_aggregate(x, maps, self.h))
        return z, za, maps

    def _p_fc1_pixels_first(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """p.fc1 of every aligned representation as sum_j sum_pos W_(j,k)(pos) fc1_j(F_j(pos)): (B, d/h, hidden)."""
        b, hw, D = x.shape
        h = self.h
        k = maps.shape[2] // h
        w1 = self.p.fc1.weight.squeeze(-1)  # (hidden, D)
        hid = w1.shape[0]
        xg = x.reshape(b * hw, h, D // h).transpose(0, 1)  # (h, B*HW, D/h)
        proj = torch.bmm(xg, w1.reshape(hid, h, D // h).permute(1, 2, 0))  # (h, B*HW, hidden)
        proj = proj.view(h, b, hw, hid)  # group j: a contiguous (B, HW, hidden) block, no reordered copy
        wg = maps.transpose(1, 2)  # (B, d, HW): maps j*k .. (j+1)*k - 1 pair with group j
        out = torch.bmm(wg[:, :k], proj[0])  # sum over positions, then over the h groups: (B, d/h, hidden)
        for j in range(1, h):
            out.baddbmm_(wg[:, j * k:(j + 1) * k], proj[j])
        if self.p.fc1.bias is not None:
            out = out + self.p.fc1.bias
        return out
