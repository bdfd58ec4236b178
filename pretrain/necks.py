"""Detection-style necks of MCL (multi-level contrastive learning): the FPN and the shared 4-conv neck.

Module names follow detectron2's, so a method's transfer bundle (:mod:`lewel_bench.transfer`) is a plain
renaming of its state dict: the FPN holds ``fpn_lateral{l}`` / ``fpn_output{l}`` (a bias-free conv with its
BatchNorm as ``.norm``, like detectron2's ``Conv2d(norm=...)``) for the pyramid levels ``l`` it builds
(``l`` = log2 of the stride: P2..P5); the neck holds ``conv1..convN`` (conv + ``.norm`` + ReLU), as the
convs of detectron2's 4conv box head.

* :class:`FPN`: lateral 1x1 conv + BN on C_l, nearest top-down upsampling and addition, output 3x3 conv + BN,
  no activation (Lin et al. 2017, with BN as in the MCL code). :meth:`FPN.forward` can compute each output
  only for the rows that read it (a batch whose rows are grouped by pyramid level).
* :func:`split_cells`: an (N, C, n c, n c) map cut into n x n cells of c x c, row-major per image: cell
  ``k = a n + b`` covers rows ``c a .. c a + c - 1`` and columns ``c b .. c b + c - 1``.
* :class:`DetConvNeck`: on every cell, ``convs`` x [3x3 conv + BN + ReLU], average pool over the cell, and
  the projector (MLP ``in -> hidden -> out`` with BN, then a final BN without affine parameters).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import MLP

#: pyramid level -> the backbone stage it reads (stride 2^l)
LEVEL_STAGE = {2: "res2", 3: "res3", 4: "res4", 5: "res5"}


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by BatchNorm (``.norm``) and an optional ReLU (detectron2's naming)."""

    def __init__(self, cin: int, cout: int, k: int, relu: bool = False) -> None:
        super().__init__(cin, cout, k, padding=k // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x, inplace=True) if self.relu else x


class FPN(nn.Module):
    """Feature pyramid P_l for the levels ``levels`` (e.g. (3, 4, 5): P3..P5) from the stages C_l.

    ``in_channels``: ``{stage: channels}`` of the backbone stages read (``res2``..``res5``). The top-down
    path starts at the coarsest level built; ``P_l = output_l(lateral_l(C_l) + up(inner_{l+1}))``.
    """

    def __init__(self, in_channels: Mapping[str, int], dim: int, levels: Sequence[int]) -> None:
        super().__init__()
        self.levels = tuple(sorted(levels, reverse=True))  # coarse to fine: 5, 4, ...
        if not self.levels or any(lv not in LEVEL_STAGE for lv in self.levels) or \
                list(self.levels) != list(range(self.levels[0], self.levels[0] - len(self.levels), -1)):
            raise ValueError(f"FPN levels {list(levels)}: expected consecutive levels among {sorted(LEVEL_STAGE)}")
        for lv in self.levels:
            self.add_module(f"fpn_lateral{lv}", ConvNorm(in_channels[LEVEL_STAGE[lv]], dim, 1))
            self.add_module(f"fpn_output{lv}", ConvNorm(dim, dim, 3))

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(LEVEL_STAGE[lv] for lv in sorted(self.levels))

    def forward(self, feats: Mapping[str, torch.Tensor],
                rows: Mapping[int, tuple[int, int]] | None = None) -> dict[int, torch.Tensor]:
        """``{level: P_l}``. ``rows`` (optional): ``{level: (start, stop)}``, the rows that read P_l, in a batch
        whose rows are grouped so that each finer level's rows follow the coarser ones'. Then the lateral of
        level l runs on the rows from ``start`` of the finest level that needs it, and P_l's output conv only
        on its own rows: what the loss reads and nothing else (each conv called once, so its BN statistics
        are over the rows it computes). Without ``rows`` every level is computed for every row."""
        n = next(iter(feats.values())).shape[0]
        if rows is None:
            rows = {lv: (0, n) for lv in self.levels}
        # the finest level read decides how far down the top-down path goes; levels below it are skipped
        finest = min(rows)
        starts = {lv: min(s for k, (s, _) in rows.items() if k <= lv) for lv in self.levels if lv >= finest}
        out: dict[int, torch.Tensor] = {}
        inner, inner_start = None, 0
        for lv in self.levels:
            if lv < finest:
                break
            s = starts[lv]
            lat = getattr(self, f"fpn_lateral{lv}")(feats[LEVEL_STAGE[lv]][s:])
            if inner is not None:
                lat = lat + F.interpolate(inner[s - inner_start:], size=lat.shape[-2:], mode="nearest")
            inner, inner_start = lat, s
            if lv in rows:
                a, b = rows[lv]
                out[lv] = getattr(self, f"fpn_output{lv}")(inner[a - s:b - s])
        return out


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient in the input's memory format (a copy only when it is in
    another). With 1 x 1 cells the backward of the cell split gives a channels-last gradient whose size-1 batch
    dimension (one canvas) has a stride other than N's canonical one, and CPU BatchNorm's backward (PyTorch 2.x)
    returns wrong gradients for such a ``grad_output`` when its input is not channels-last: the FPN output's BN
    sits right before the split."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.fmt = torch.channels_last if x.dim() == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous(memory_format=ctx.fmt)


def split_cells(x: torch.Tensor, n: int) -> torch.Tensor:
    """(N, C, n c, n c) -> (N n^2, C, c, c): each map cut into n x n cells, row-major (cell k = a n + b of
    image j is row ``j n^2 + k``)."""
    N, C, H, W = x.shape
    if H % n or W % n:
        raise ValueError(f"a {H}x{W} map does not split into {n} x {n} cells")
    c, d = H // n, W // n
    if x.requires_grad:
        x = _DenseGrad.apply(x)
    return x.reshape(N, C, n, c, n, d).permute(0, 2, 4, 1, 3, 5).reshape(N * n * n, C, c, d)


class DetConvNeck(nn.Module):
    """MCL's shared "detection head" on every cell (appendix A.1): ``convs`` x [3x3 conv + BN + ReLU] on the
    c x c cell (zero padding at the cell's border), average pool over the cell, projector
    ``dim -> hidden -> out`` (linear + BN + ReLU + linear) and a final BN without affine parameters.

    forward((N, C, n c, n c), n) -> (N n^2, out): the embedding of every cell, row-major per image."""

    def __init__(self, dim: int, hidden: int, out: int, convs: int = 4) -> None:
        super().__init__()
        self.n_convs = convs
        for i in range(1, convs + 1):
            self.add_module(f"conv{i}", ConvNorm(dim, dim, 3, relu=True))
        self.projector = MLP(dim, hidden, out, bn=True, bias=True)
        self.last_bn = nn.BatchNorm1d(out, affine=False)

    def convs(self) -> list[ConvNorm]:
        return [getattr(self, f"conv{i}") for i in range(1, self.n_convs + 1)]

    def forward(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        y = split_cells(x, n)
        for conv in self.convs():
            y = conv(y)
        return self.last_bn(self.projector(y.mean((2, 3))))
