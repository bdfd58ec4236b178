"""MCL (multi-level contrastive learning for dense prediction, appendix A.1, and the authors' code).

Each image of the batch comes with 2 L views: views[i] (BYOL view-1 recipe) and views[L + i] (view 2) feed
montage level i of the two sides. Level i (r = 2^i) tiles r x r images, each nearest-downsampled by 1/r,
edge to edge into B / montage_divisors[i] canvases of the training size (appendix: B / 4^i; the code's last
level B / 32); the tiles' source images are the level's labels. One side's levels go through the online
encoder as ONE batch: ResNet -> FPN -> the shared 4-conv neck, level i reading P(5 - i), where each tile
covers exactly one c x c cell (c = size / 32: 7 at 224 px), then the level's predictor. The targets are the
other side's full images (level 0) through the momentum encoder: P5 -> neck -> projector, L2-normalised and
gathered over the global batch. Loss of level i and side s: cross-entropy of the normalised prediction's
cosine logits over the global targets, labels = source image + rank * B, temperature T, scaled by 2 T and
the level weight w_i; the total sums levels and sides. No queue.

Compute (``model.neck_cells``): ``used`` (default) runs each FPN output and the neck only on the rows and
cells the loss reads (the appendix's 1.3125x online cost for levels B, B/4, B/16); ``all`` is the code (every
FPN level and the neck on every canvas, the unread cells sliced away; the neck visits the levels from the finest
to P5, in the order of the code's neck over its FPN outputs, so that with the code's four levels the BN running
statistics are the code's).
``model.target_batch``: ``full`` (default) runs the momentum encoder on the full images whose embeddings are
the targets; ``pyramid`` runs it on the whole montage batch as the code does (its BN statistics then mix the
montages in, for 1.3125x the target cost).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lewel_bench import dist as ldist
from lewel_bench.config import ConfigError
from lewel_bench.models import feature_dim

from ..heads import MLP
from ..necks import FPN, LEVEL_STAGE, DetConvNeck
from .base import METHODS, Encoder, SSLMethod

NECK_CELLS = ("used", "all")
TARGET_BATCH = ("full", "pyramid")
INITS = ("code", "torch")
#: cell size of the neck = training size / the stride of P5
P5_STRIDE = 32


def montage_ratio(level: int) -> int:
    """r = 2^i: level i tiles r x r images, each downsampled by 1/r."""
    return 2 ** level


def pixel_ratio(divisors: Sequence[int]) -> float:
    """Pixels of one side's montage batch per pixel of its B full images: sum_i 1 / divisor_i
    (1 + 1/4 + 1/16 = 1.3125 for the appendix's levels B, B/4, B/16)."""
    return sum(1.0 / d for d in divisors)


def downsample(x: torch.Tensor, r: int) -> torch.Tensor:
    """Nearest-neighbour downsampling by 1/r, as the code's ``F.interpolate(scale_factor=1/r)``: every r-th
    pixel from the first (the same numbers, without the interpolation kernel)."""
    return x[..., ::r, ::r]


def assemble(x: torch.Tensor, r: int, canvases: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Montage assembly of one level (appendix Sec. 3.1 / A.1): ``canvases`` images of x's size from
    r x r tiles of the B images of ``x`` (B, C, S, S).

    Tile slots are a random permutation of ``r^2 canvases`` taken modulo B (the code's draw: each image
    appears ``r^2 canvases / B`` times when that divides). Canvas j, tile row a, tile column c holds
    image ``ids[j r^2 + a r + c]``, downsampled by 1/r; returns (canvases (canvases, C, S, S), ids)."""
    B, C, H, W = x.shape
    if H % r or W % r:
        raise ValueError(f"montage: a {H}x{W} view does not split into {r} x {r} tiles")
    ids = torch.randperm(r * r * canvases, generator=generator) % B
    tiles = downsample(x, r)[ids.to(x.device)]  # (r^2 canvases, C, H/r, W/r)
    h, w = H // r, W // r
    canvas = tiles.reshape(canvases, r, r, C, h, w).permute(0, 3, 1, 4, 2, 5).reshape(canvases, C, H, W)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        canvas = canvas.contiguous(memory_format=torch.channels_last)
    return canvas, ids.to(x.device)


def mcl_logits(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N, M) of the predictions p (N, d) with the L2-normalised targets t (M, d), in their
    dtype (under AMP autocast's; the cross-entropy then runs in float32)."""
    return F.normalize(p, dim=1) @ t.detach().t()


def ce_scaled(logits: torch.Tensor, labels: torch.Tensor, T: float) -> torch.Tensor:
    """``CE(logits / T, labels) * 2 T``, mean over the rows (the code's scaling of the loss)."""
    return F.cross_entropy(logits / T, labels) * (2 * T)


def mcl_loss(p: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, T: float) -> torch.Tensor:
    """One level and side: ``CE(normalize(p) t^T / T, labels) * 2 T`` (T = 1.0 in the code).

    p (N, d): predictions of the level's tiles; t (M, d): the other side's L2-normalised targets of the whole
    global batch (no gradient); labels (N,): each tile's source image in t (local id + rank * B)."""
    return ce_scaled(mcl_logits(p, t), labels, T)


@torch.no_grad()
def cosine_gap(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine of the positive pairs and of all the other (negative) pairs (the code's logs)."""
    pos = logits.gather(1, labels.view(-1, 1))
    neg = (logits.sum() - pos.sum()) / max(logits.numel() - labels.numel(), 1)
    return pos.mean(), neg


class MCLHead(nn.Module):
    """FPN + the shared neck: the embedding of every cell that a level reads (the Encoder's head)."""

    def __init__(self, in_channels: Mapping[str, int], levels: int, fpn_dim: int, hidden: int, dim: int,
                 convs: int, neck_cells: str) -> None:
        super().__init__()
        if neck_cells not in NECK_CELLS:
            raise ConfigError(f"model.neck_cells: expected one of {', '.join(NECK_CELLS)}, got {neck_cells!r}")
        self.n_levels, self.neck_cells = levels, neck_cells
        self.fpn = FPN(in_channels, fpn_dim, [5 - i for i in range(levels)])
        self.neck = DetConvNeck(fpn_dim, hidden, dim, convs)

    def forward(self, feats: Mapping[str, torch.Tensor] | torch.Tensor, counts: Sequence[int] | None = None,
                read: int | None = None) -> list[torch.Tensor]:
        """Backbone stages of a batch whose rows are grouped by level (``counts[i]`` canvases of level i,
        in order; default: every row a full image) -> per level, the (counts[i] r_i^2, dim) embeddings of
        its cells (row-major per canvas: cell k of canvas j is row j r_i^2 + k). ``read``: only the first
        ``read`` levels' embeddings (the others' rows still go through the backbone and the laterals)."""
        if torch.is_tensor(feats):
            feats = {"res5": feats}
        n = next(iter(feats.values())).shape[0]
        counts = list(counts) if counts is not None else [n]
        if sum(counts) != n:
            raise ValueError(f"MCLHead: level counts {counts} do not add up to the batch of {n}")
        read = len(counts) if read is None else read
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
        if self.neck_cells == "used":
            rows = {5 - i: (bounds[i], bounds[i + 1]) for i in range(read)}
            P = self.fpn(feats, rows)
            return [self.neck(P[5 - i], montage_ratio(i)) for i in range(read)]
        # the code: every FPN level for every canvas, the neck on every cell of each level, visiting the levels
        # from the finest (P2 with four levels) to P5 as its neck does; the order decides the neck's BN running
        # statistics (each call updates them in turn), not the outputs (train-mode BN uses the batch's)
        P = self.fpn(feats)
        emb = {lv: self.neck(P[lv], montage_ratio(5 - lv)) for lv in sorted(P)}
        out = []
        for i in range(read):
            e = emb[5 - i]
            e = e.reshape(n, -1, e.shape[-1])[bounds[i]:bounds[i + 1]]
            out.append(e.reshape(-1, e.shape[-1]))
        return out


@dataclass
class Pyramid:
    """One side's montage batch: ``x`` (sum_i canvases_i, C, S, S), levels in order; ``counts`` canvases per
    level; ``labels[i]`` the source image (local index) of each tile of level i, in cell order."""

    x: torch.Tensor
    counts: tuple[int, ...]
    labels: list[torch.Tensor]

    @property
    def B(self) -> int:
        return self.counts[0]


def _code_init(online: Encoder, predictors: nn.ModuleList) -> None:
    """The MCL code's initialisation: trunk convs Kaiming-normal (fan-in, ReLU: its ResNet's ``init_weights``;
    torchvision's is fan-out); FPN convs Xavier-uniform; neck convs Kaiming-normal (fan-out, ReLU; mmcv
    ConvModule); projector linears Kaiming-normal (fan-in); predictor linears N(0, 0.01); biases 0, BN weight 1
    and bias 0 (torchvision's BN init already; no zero-initialised residual BN, as the code)."""
    for m in online.backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    head: MCLHead = online.head
    for m in head.fpn.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    for conv in head.neck.convs():
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    for fc in (head.neck.projector.fc1, head.neck.projector.fc2):
        nn.init.kaiming_normal_(fc.weight, mode="fan_in", nonlinearity="relu")
    for pred in predictors:
        for fc in (pred.fc1, pred.fc2):
            nn.init.normal_(fc.weight, 0.0, 0.01)
    for mod in (head, predictors):
        for m in mod.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.bias is not None:
                nn.init.zeros_(m.bias)


@METHODS.register("mcl")
class MCL(SSLMethod):
    """MCL on the suite's base: ``online`` = Encoder(ResNet, :class:`MCLHead`), one predictor per level,
    ``target`` = its momentum copy (parameter EMA, cosine 0.99 -> 1, in train mode)."""

    n_views = None  # 2 L, checked in check_views

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        self.divisors = [int(d) for d in mc["montage_divisors"]]
        self.weights = [float(w) for w in mc["level_weights"]]
        L = self.L = len(self.divisors)
        if not 1 <= L <= len(LEVEL_STAGE) or self.divisors[0] != 1:
            raise ConfigError(f"model.montage_divisors {self.divisors}: 1 to {len(LEVEL_STAGE)} levels (P5 down to "
                              f"P2), the first (the full images) 1")
        if len(self.weights) != L:
            raise ConfigError(f"model.level_weights {self.weights}: one weight per level of model.montage_divisors "
                              f"({L})")
        size = int(cfg["aug"]["size"])
        if size % P5_STRIDE:
            raise ConfigError(f"aug.size {size}: MCL needs a multiple of {P5_STRIDE} (each tile of level i covers "
                              f"one size/{P5_STRIDE} cell of P(5-i))")
        self.T = float(mc["temperature"])
        self.target_batch = mc["target_batch"]
        if self.target_batch not in TARGET_BATCH:
            raise ConfigError(f"model.target_batch: expected one of {', '.join(TARGET_BATCH)}, got {self.target_batch!r}")
        stages = tuple(LEVEL_STAGE[5 - i] for i in reversed(range(L)))
        head = MCLHead({s: feature_dim(self.arch, s) for s in stages}, L, int(mc["fpn_dim"]), int(mc["hidden"]),
                       int(mc["dim"]), int(mc["neck_convs"]), mc["neck_cells"])
        self.online = Encoder(self.arch, head, pooled=False, stages=stages)
        self.predictors = nn.ModuleList(MLP(mc["dim"], mc["pred_hidden"], mc["dim"], bn=True, bias=True)
                                        for _ in range(L))
        init = mc.get("init", "code")
        if init not in INITS:
            raise ConfigError(f"model.init: expected one of {', '.join(INITS)}, got {init!r}")
        if init == "code":
            _code_init(self.online, self.predictors)
        self.target = self.make_target(self.online)

    def check_views(self, n: int) -> None:
        if n != 2 * self.L:
            raise ConfigError(f"method 'mcl' with {self.L} montage levels takes {2 * self.L} views (views[i] and "
                              f"views[{self.L} + i] feed level i of the two sides); aug.views gives {n}")

    def transfer_parts(self) -> dict[str, dict[str, str]]:
        """``fpn``: the FPN levels built (P(6-L)..P5) as ``fpn_lateral{l}`` / ``fpn_output{l}`` (+ ``.norm``);
        ``box_head``: the neck's convs as ``conv{1..4}`` (+ ``.norm``); the online network's tensors."""
        parts: dict[str, dict[str, str]] = {"fpn": {}, "box_head": {}}
        for name in self.online.head.fpn.state_dict():
            parts["fpn"][f"online.head.fpn.{name}"] = name
        for name in self.online.head.neck.state_dict():
            if name.startswith("conv"):
                parts["box_head"][f"online.head.neck.{name}"] = name
        return parts

    # --- montage --------------------------------------------------------------------------------
    def _generator(self, rank: int, side: int, level: int) -> torch.Generator:
        """The montage draw of (seed, iteration, rank, side, level): resumed runs and DDP ranks reproducible."""
        key = f"mcl-montage/{self.seed}/{self.iteration}/{rank}/{side}/{level}".encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    @torch.no_grad()
    def pyramid(self, views: Sequence[torch.Tensor], side: int, rank: int = 0) -> Pyramid:
        """One side's montage batch from its L views (level i assembled from views[i])."""
        B = views[0].shape[0]
        bad = [d for d in self.divisors if B % d]
        if bad:
            raise ConfigError(f"MCL: the per-process batch {B} is not divisible by model.montage_divisors {bad} "
                              f"(batch_size / processes must be a multiple of {math.lcm(*self.divisors)})")
        xs, labels = [views[0]], [torch.arange(B, device=views[0].device)]
        for i in range(1, self.L):
            canvas, ids = assemble(views[i], montage_ratio(i), B // self.divisors[i], self._generator(rank, side, i))
            xs.append(canvas)
            labels.append(ids)
        return Pyramid(torch.cat(xs), tuple(x.shape[0] for x in xs), labels)

    def pyramids(self, views: Sequence[torch.Tensor], rank: int = 0) -> list[Pyramid]:
        return [self.pyramid(views[:self.L], 0, rank), self.pyramid(views[self.L:], 1, rank)]

    # --- embeddings and loss ------------------------------------------------------------------------
    @staticmethod
    def _embed(enc: Encoder, x: torch.Tensor, counts: Sequence[int], read: int | None = None) -> list[torch.Tensor]:
        return enc.head(enc.features(x), counts, read)

    @torch.no_grad()
    def targets(self, pyramids: Sequence[Pyramid]) -> list[torch.Tensor]:
        """Per side, the L2-normalised momentum-encoder embeddings (P5 -> neck -> projector) of its B full
        images (this process's; gathered by :meth:`forward`)."""
        out = []
        for p in pyramids:
            if self.target_batch == "full":
                emb = self._embed(self.target, p.x[:p.B], [p.B])[0]
            else:
                emb = self._embed(self.target, p.x, p.counts, read=1)[0]
            out.append(F.normalize(emb, dim=1))
        return out

    def losses(self, pyramids: Sequence[Pyramid], targets: Sequence[torch.Tensor], rank: int = 0):
        """The total loss sum_{i, s} w_i L_{i, s} against the GLOBAL targets of each side (``targets[s]``:
        (world B, d)); side s predicts the other side's targets. Returns (loss, logs): each level's loss (both
        sides), the mean cosine of its positive and negative pairs, the pixel ratio of the montage batch."""
        total, logs = 0.0, {}
        for s, p in enumerate(pyramids):
            embs = self._embed(self.online, p.x, p.counts)
            for i, (e, ids) in enumerate(zip(embs, p.labels)):
                labels = ids + rank * p.B
                logits = mcl_logits(self.predictors[i](e), targets[1 - s])
                li = ce_scaled(logits, labels, self.T) * self.weights[i]
                total = total + li
                pos, neg = cosine_gap(logits, labels)
                for k, v in (("loss", li.detach()), ("pos_cos", pos / 2), ("neg_cos", neg / 2)):
                    logs[f"{k}_level{i}"] = logs.get(f"{k}_level{i}", 0.0) + v  # sum over sides; cosines: mean
        logs["pixel_ratio"] = torch.tensor(pyramids[0].x.shape[0] / pyramids[0].B, device=pyramids[0].x.device)
        return total, logs

    def forward(self, views: list[torch.Tensor]):
        rank = ldist.get_rank()
        pyr = self.pyramids(views, rank)
        t = [ldist.all_gather_nograd(x.contiguous()) for x in self.targets(pyr)]
        return self.losses(pyr, t, rank)
