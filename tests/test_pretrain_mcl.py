"""MCL: montage assembly, tile -> cell mapping, FPN / neck / predictor shapes, the loss, the pixel ratio, the
optimiser's exclusions and schedule, EMA after the step, the transfer bundle, and DDP (2 gloo processes)."""
from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from lewel_bench.checkpoint import load_backbone
from lewel_bench.config import ConfigError, load_config
from lewel_bench.launch import _free_port
from lewel_bench.optim import Schedule, param_groups, schedule_from_config
from pretrain.methods import METHODS
from pretrain.methods.mcl import MCL, assemble, downsample, mcl_loss, pixel_ratio
from pretrain.necks import ConvNorm, DetConvNeck, split_cells

SIZE = 32  # the smallest size MCL takes: P5 1 x 1, one 1 x 1 cell per tile
TINY = ["arch=resnet18", f"aug.size={SIZE}", "model.fpn_dim=16", "model.hidden=32", "model.dim=8",
        "model.pred_hidden=32"]
CODE_LEVELS = ["model.montage_divisors=[1,4,16,32]", "model.level_weights=[0.5,0.25,0.125,0.125]",
               "aug.views=[{recipe: byol_1, count: 4}, {recipe: byol_2, count: 4}]"]


def _cfg(*extra: str) -> dict:
    return load_config("mcl_mini", "pretrain/configs", [*TINY, *extra])


def _build(*extra: str) -> MCL:
    torch.manual_seed(0)
    return METHODS.get("mcl")(_cfg(*extra)).train()


def _views(n: int, B: int, size: int = SIZE, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, size, size, generator=g) for _ in range(n)]


# --- montage ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("r, canvases", [(2, 2), (4, 1), (8, 2)])
def test_montage_is_invertible_and_tiles_are_the_downsampled_sources_in_label_order(r: int, canvases: int) -> None:
    B, S = 8, 32
    x = torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(0))
    canvas, ids = assemble(x, r, canvases, torch.Generator().manual_seed(3))
    assert canvas.shape == (canvases, 3, S, S) and ids.shape == (canvases * r * r,)
    assert torch.equal(torch.bincount(ids, minlength=B), torch.full((B,), canvases * r * r // B))
    # nearest 1/r = the code's F.interpolate(scale_factor=1/r) (every r-th pixel from the first)
    small = F.interpolate(x, scale_factor=1.0 / r)
    assert torch.equal(downsample(x, r), small)
    t = S // r
    for j in range(canvases):
        for a in range(r):
            for c in range(r):
                tile = canvas[j, :, a * t:(a + 1) * t, c * t:(c + 1) * t]
                assert torch.equal(tile, small[ids[j * r * r + a * r + c]])
    # cutting every canvas back into its r x r tiles (row-major) gives the sources in label order
    cut = canvas.reshape(canvases, 3, r, t, r, t).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, t, t)
    assert torch.equal(cut, small[ids])


def test_level_sizes_and_how_often_each_image_appears() -> None:
    B = 32
    m = _build()
    p = m.pyramid(_views(3, B), side=0)
    assert p.counts == (B, B // 4, B // 16) and p.x.shape == (B + B // 4 + B // 16, 3, SIZE, SIZE)
    assert torch.equal(p.x[:B], _views(3, B)[0])  # level 0: the full images, labels 0..B-1
    assert [len(lv) for lv in p.labels] == [B, B, B]
    for ids in p.labels:
        assert torch.equal(torch.bincount(ids, minlength=B), torch.ones(B, dtype=torch.long))  # once per level
    assert torch.equal(p.labels[0], torch.arange(B))
    # each level cuts its canvases from its own view
    canvas, ids = assemble(_views(3, B)[2], 4, B // 16, m._generator(0, 0, 2))
    assert torch.equal(p.x[B + B // 4:], canvas) and torch.equal(p.labels[2], ids)
    # the other side (and another rank, another iteration) draws other montages
    assert not torch.equal(m.pyramid(_views(3, B), side=1).labels[1], p.labels[1])
    assert not torch.equal(m.pyramid(_views(3, B), side=0, rank=1).labels[1], p.labels[1])
    # the code's four levels: B / 32 canvases of 8 x 8 tiles, every image twice
    m4 = _build(*CODE_LEVELS)
    p4 = m4.pyramid(_views(4, B), side=0)
    assert p4.counts == (B, B // 4, B // 16, B // 32) and [len(lv) for lv in p4.labels] == [B, B, B, 2 * B]
    assert torch.equal(torch.bincount(p4.labels[3], minlength=B), torch.full((B,), 2))
    with pytest.raises(ConfigError, match="not divisible by model.montage_divisors"):
        m.pyramid(_views(3, 8), side=0)


def test_pixel_ratio_processed_per_step() -> None:
    """Pixels through the online and the target trunk in one step, counted at the trunks' first conv."""
    assert pixel_ratio([1, 4, 16]) == 1.3125 and pixel_ratio([1, 4, 16, 32]) == 1.34375
    B = 32
    for extra, online, target in (((), 1.3125, 1.0), (("model.target_batch=pyramid",), 1.3125, 1.3125),
                                  (CODE_LEVELS, 1.34375, 1.0)):
        m = _build(*extra)
        seen = {"online": 0, "target": 0}
        for name in list(seen):
            getattr(m, name).backbone.conv1.register_forward_pre_hook(  # the trunk's first layer
                lambda mod, args, name=name, seen=seen: seen.__setitem__(name, seen[name] + args[0][:, 0].numel()))
        _loss, logs = m(_views(2 * m.L, B))
        assert seen["online"] / (2 * B * SIZE * SIZE) == online and seen["target"] / (2 * B * SIZE * SIZE) == target
        assert float(logs["pixel_ratio"]) == online


# --- tile -> cell ----------------------------------------------------------------------------------
def test_cell_k_of_a_map_covers_rows_and_columns_of_tile_a_c() -> None:
    n, c = 4, 7
    rows = torch.arange(n * c).view(-1, 1).expand(n * c, n * c).float()
    x = torch.stack([rows, rows.t()])[None].repeat(2, 1, 1, 1)  # channel 0 = row, channel 1 = column
    x[1] += 1000  # canvas 1
    cells = split_cells(x, n)
    assert cells.shape == (2 * n * n, 2, c, c)
    for j in range(2):
        for a in range(n):
            for b in range(n):
                cell = cells[j * n * n + a * n + b]
                assert torch.equal(cell[0] - 1000 * j, torch.arange(c * a, c * a + c).float().view(-1, 1).expand(c, c))
                assert torch.equal(cell[1] - 1000 * j, torch.arange(c * b, c * b + c).float().view(1, -1).expand(c, c))


def test_level_i_reads_its_fpn_level_and_only_the_cells_it_needs() -> None:
    """In eval mode (BN from running statistics, so rows are independent) the default computes exactly the
    code's numbers for the rows it keeps: level i's cells of P(5 - i), tile k of canvas j = row j r^2 + k."""
    B = 16
    used, full = _build(), _build("model.neck_cells=all")
    full.load_state_dict(used.state_dict())
    p = used.pyramid(_views(3, B), side=0)
    with torch.no_grad():
        for m in (used, full):
            m.eval()
            for mod in m.modules():  # non-trivial running statistics
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    g = torch.Generator().manual_seed(sum(mod.running_mean.shape))
                    mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                    mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
        a = used._embed(used.online, p.x, p.counts)
        b = full._embed(full.online, p.x, p.counts)
        assert [e.shape for e in a] == [(B, 8), (B // 4 * 4, 8), (B // 16 * 16, 8)]
        for ea, eb in zip(a, b):
            torch.testing.assert_close(ea, eb, rtol=1e-5, atol=1e-5)
        # tile (a, c) of level-2 canvas 0 is its own cell of P3 (4 x 4 cells of 1 x 1 at 32 px)
        head = used.online.head
        P = head.fpn(used.online.features(p.x))
        cell = P[3][B + B // 4: B + B // 4 + 1, :, 2:3, 1:2]  # canvas 0 of level 2, tile row 2, column 1
        one = head.neck(cell, 1)
        torch.testing.assert_close(a[2][2 * 4 + 1], one[0], rtol=1e-5, atol=1e-5)


def _neck_stats_by_hand(neck, x: torch.Tensor, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The neck's train-mode forward on the n x n cells of x written out with plain ops: for each of its BN
    layers, the batch mean and the unbiased variance of its input (what the running statistics take in)."""
    N, C, H, _W = x.shape
    c = H // n
    y = x.reshape(N, C, n, c, n, c).permute(0, 2, 4, 1, 3, 5).reshape(N * n * n, C, c, c)
    stats = {}
    for k, conv in enumerate(neck.convs(), 1):
        z = F.conv2d(y, conv.weight, padding=1)
        mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
        stats[f"conv{k}.norm"] = (mean, z.var((0, 2, 3), unbiased=True))
        z = (z - mean[:, None, None]) / torch.sqrt(var[:, None, None] + conv.norm.eps)
        y = torch.relu(z * conv.norm.weight[:, None, None] + conv.norm.bias[:, None, None])
    proj = neck.projector
    h = y.mean((2, 3)) @ proj.fc1.weight[..., 0].t() + proj.fc1.bias
    stats["projector.bn"] = (h.mean(0), h.var(0, unbiased=True))
    h = torch.relu((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + proj.bn.eps) * proj.bn.weight + proj.bn.bias)
    o = h @ proj.fc2.weight[..., 0].t() + proj.fc2.bias
    stats["last_bn"] = (o.mean(0), o.var(0, unbiased=True))
    return stats


def test_shared_neck_visits_the_levels_from_p2_as_the_code_its_running_statistics() -> None:
    """``neck_cells: all`` with the code's four levels: one train-mode step from fresh statistics leaves every BN
    of the shared neck with the running mean / variance of the code's order, the neck on P2 first, then P3, P4,
    P5 (each call: running = 0.9 running + 0.1 batch statistic), computed here by hand from the FPN outputs; the
    reverse order (P5 first) gives other statistics, so the check tells the two apart."""
    head = _build("model.neck_cells=all", "aug.size=64", *CODE_LEVELS).online.head.double()
    g = torch.Generator().manual_seed(3)
    # backbone maps of 6 canvases of 64 px (res2 16 x 16 .. res5 2 x 2: 2 x 2 cells at every level), rows grouped
    # by level as a montage batch
    feats = {s: torch.randn(6, c, 2 ** (6 - k), 2 ** (6 - k), generator=g, dtype=torch.float64)
             for k, (s, c) in enumerate(zip(("res2", "res3", "res4", "res5"), (64, 128, 256, 512)), 2)}
    neck = head.neck
    bns = {name: mod for name, mod in neck.named_modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)}
    assert sorted(bns) == ["conv1.norm", "conv2.norm", "conv3.norm", "conv4.norm", "last_bn", "projector.bn"]
    with torch.no_grad():
        for bn in bns.values():
            bn.reset_running_stats()
        P = head.fpn(feats)  # train mode: the same maps as the step's
        by_level = {lv: _neck_stats_by_hand(neck, P[lv], 2 ** (5 - lv)) for lv in (2, 3, 4, 5)}
        head(feats, [3, 1, 1, 1])
    for order, should_match in (((2, 3, 4, 5), True), ((5, 4, 3, 2), False)):
        for name, bn in bns.items():
            mean, var = torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var)
            for lv in order:
                mean = 0.9 * mean + 0.1 * by_level[lv][name][0]
                var = 0.9 * var + 0.1 * by_level[lv][name][1]
            if should_match:
                torch.testing.assert_close(bn.running_mean, mean, rtol=1e-9, atol=1e-12)
                torch.testing.assert_close(bn.running_var, var, rtol=1e-9, atol=1e-12)
                assert int(bn.num_batches_tracked) == 4
            else:
                assert (bn.running_var - var).abs().max() > 1e-3 * var.abs().max(), name


def _fans(w: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv / linear weight: in or out channels x the kernel's size."""
    k = w[0, 0].numel()
    return w.shape[1] * k, w.shape[0] * k


def _check_normal(name: str, w: torch.Tensor, std: float) -> None:
    n = w.numel()
    w = w.detach()
    assert abs(float(w.mean())) < 5 * std / math.sqrt(n), name
    assert float(w.std()) == pytest.approx(std, rel=max(0.05, 6 / math.sqrt(2 * n))), name


def _check_uniform(name: str, w: torch.Tensor, bound: float) -> None:
    w = w.detach()
    assert float(w.abs().max()) <= bound, name
    assert float(w.abs().max()) > 0.95 * bound, name  # fills the interval
    _check_normal(name, w, bound / math.sqrt(3))  # its mean and std


@pytest.mark.parametrize("init", ["code", "torch"])
def test_initialisation_of_every_conv_and_linear_follows_its_rule(init: str) -> None:
    """``model.init: code`` (the MCL code): trunk convs Kaiming-normal fan-in (its ResNet's init_weights), FPN
    convs Xavier-uniform, neck convs Kaiming-normal fan-out (mmcv ConvModule), projector linears Kaiming-normal
    fan-in, predictor linears N(0, 0.01), their biases 0; ``torch``: torchvision's trunk (Kaiming-normal
    fan-out) and PyTorch's defaults elsewhere (Kaiming-uniform with a = sqrt(5): U(+-1 / sqrt(fan_in))).
    Every BN starts at weight 1, bias 0, and the momentum encoder is a copy. Each weight's mean and standard
    deviation are checked against its rule (the mini config's ResNet-18 FPN: at least 8192 weights each)."""
    m = _build(f"model.init={init}")
    trunk = [(n, mod) for n, mod in m.online.backbone.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(trunk) == 20
    # the rules tell fan-in from fan-out here: the stem (147 vs 3136) and every stage's first convs differ
    assert sum(len(set(_fans(mod.weight))) == 2 for _, mod in trunk) >= 7
    for n, mod in trunk:
        fan_in, fan_out = _fans(mod.weight)
        _check_normal(n, mod.weight, math.sqrt(2 / (fan_in if init == "code" else fan_out)))
    head = m.online.head
    fpn = [(n, mod) for n, mod in head.fpn.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    neck = [(f"conv{i}", c) for i, c in enumerate(head.neck.convs(), 1)]
    proj = [("fc1", head.neck.projector.fc1), ("fc2", head.neck.projector.fc2)]
    pred = [(f"predictor{i}.{k}", getattr(p, k)) for i, p in enumerate(m.predictors) for k in ("fc1", "fc2")]
    assert len(fpn) == 6 and len(neck) == 4 and len(pred) == 6
    for n, mod in fpn + neck + proj + pred:
        fan_in, fan_out = _fans(mod.weight)
        if init == "torch":
            _check_uniform(n, mod.weight, 1 / math.sqrt(fan_in))
        elif (n, mod) in fpn:
            _check_uniform(n, mod.weight, math.sqrt(6 / (fan_in + fan_out)))
        elif (n, mod) in neck:
            _check_normal(n, mod.weight, math.sqrt(2 / fan_out))
        elif (n, mod) in proj:
            _check_normal(n, mod.weight, math.sqrt(2 / fan_in))
        else:
            _check_normal(n, mod.weight, 0.01)
        if init == "code" and mod.bias is not None:
            assert not mod.bias.any(), n
    for mod in m.online.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.affine:
            assert bool((mod.weight == 1).all()) and not mod.bias.any()
    for a, b in zip(m.online.state_dict().values(), m.target.state_dict().values()):
        assert torch.equal(a, b)


def test_cell_split_hands_batchnorm_a_gradient_it_computes_right() -> None:
    """One canvas cut into 1 x 1 cells (a level with a single canvas at 32 px) right after the FPN output's
    conv + BN: float64 gradcheck of the input and the BN parameters. (The plain split's backward gives a
    channels-last gradient with a non-canonical stride on the batch dimension of 1, and CPU BatchNorm's
    backward in PyTorch 2.x returns wrong gradients for it; the split hands on a dense one.)"""
    torch.manual_seed(0)
    fpn_out = ConvNorm(3, 4, 3).double().train()
    neck = DetConvNeck(4, 6, 5, convs=1).double().train()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bn = fpn_out.norm

    def f(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(F.conv2d(x, fpn_out.weight, padding=1), None, None, w, b, training=True)
        return neck(y, 4)

    params = (bn.weight.detach().clone().requires_grad_(), bn.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


# --- architecture ----------------------------------------------------------------------------------
def test_fpn_neck_and_predictor_shapes_at_224_px() -> None:
    cfg = load_config("mcl", "pretrain/configs", CODE_LEVELS)
    torch.manual_seed(0)
    m = METHODS.get("mcl")(cfg).train()
    head = m.online.head
    assert head.fpn.levels == (5, 4, 3, 2) and m.online.stages == ("res2", "res3", "res4", "res5")
    for lv, cin in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        lat, out = getattr(head.fpn, f"fpn_lateral{lv}"), getattr(head.fpn, f"fpn_output{lv}")
        assert lat.weight.shape == (256, cin, 1, 1) and lat.bias is None and lat.norm.num_features == 256
        assert out.weight.shape == (256, 256, 3, 3) and out.bias is None and not lat.relu and not out.relu
    convs = head.neck.convs()
    assert len(convs) == 4 and all(c.weight.shape == (256, 256, 3, 3) and c.relu and c.bias is None for c in convs)
    assert head.neck.projector.fc1.weight.shape[:2] == (2048, 256) and head.neck.projector.fc2.weight.shape[:2] == (256, 2048)
    assert head.neck.projector.fc1.bias is not None and head.neck.last_bn.num_features == 256
    assert not head.neck.last_bn.affine
    assert len(m.predictors) == 4
    assert all(p.fc1.weight.shape[:2] == (2048, 256) and p.fc2.weight.shape[:2] == (256, 2048) for p in m.predictors)
    assert all(isinstance(p.bn, torch.nn.BatchNorm1d) for p in m.predictors)
    # the code's init: predictors N(0, 0.01)
    assert abs(float(m.predictors[0].fc1.weight.std()) - 0.01) < 1e-3
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        P = head.fpn(m.online.features(x))
        assert {lv: tuple(p.shape) for lv, p in P.items()} == {5: (2, 256, 7, 7), 4: (2, 256, 14, 14),
                                                            3: (2, 256, 28, 28), 2: (2, 256, 56, 56)}
        assert head.neck(P[2], 8).shape == (2 * 64, 256)  # 8 x 8 cells of 7 x 7
        assert m.predictors[3](head.neck(P[2], 8)).shape == (128, 256)


def test_views_and_sizes_are_checked() -> None:
    m = _build()
    with pytest.raises(ConfigError, match="3 montage levels takes 6 views"):
        m.check_views(8)
    m.check_views(6)
    with pytest.raises(ConfigError, match="aug.size 48: MCL needs a multiple of 32"):
        _build("aug.size=48")
    with pytest.raises(ConfigError, match="model.level_weights"):
        _build("model.level_weights=[0.5,0.5]")


# --- loss ------------------------------------------------------------------------------------------
def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))


def test_loss_on_a_hand_example() -> None:
    """B = 2 per process, 2 processes (4 global targets), dim 2: CE(cos / T) * 2 T with labels offset by rank."""
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]), dim=1)
    for T in (1.0, 0.5):
        for rank in (0, 1):
            ids = torch.tensor([1, 0])
            pn = np.array([[0.6, 0.8], [1.0, 0.0]])
            logits = pn @ t.numpy().T
            labels = ids.numpy() + 2 * rank
            want = _ce(logits / T, labels) * 2 * T
            assert mcl_loss(p, t, ids + 2 * rank, T).item() == pytest.approx(want, rel=1e-6)
    # by hand for rank 0, T = 1: logits row 0 = (0.6, 0.8, 1.4/sqrt2, -0.6), label 1
    row = [0.6, 0.8, 1.4 / math.sqrt(2), -0.6]
    l0 = math.log(sum(math.exp(v) for v in row)) - 0.8
    row = [1.0, 0.0, 1 / math.sqrt(2), -1.0]
    l1 = math.log(sum(math.exp(v) for v in row)) - 1.0
    assert mcl_loss(p, t, torch.tensor([1, 0]), 1.0).item() == pytest.approx((l0 + l1) / 2 * 2, rel=1e-6)


def test_loss_gradient_in_float64() -> None:
    """torch.autograd.gradcheck (float64) of one level's loss with respect to the predictions (the targets are
    detached); the logits stay in the inputs' dtype."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = F.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([1, 0, 3, 1]) + 2  # rank 1 of B = 2
    assert mcl_loss(p, t, labels, 0.2).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda a: mcl_loss(a, t, labels, 0.2), (p,))


def test_total_is_the_weighted_sum_over_levels_and_sides_against_the_other_sides_detached_targets() -> None:
    B, rank = 16, 1
    m = _build()
    pyr = m.pyramids(_views(6, B), rank=rank)
    local = m.targets(pyr)
    assert all(t.shape == (B, 8) and not t.requires_grad for t in local)
    torch.testing.assert_close(local[0].norm(dim=1), torch.ones(B))
    other = [F.normalize(torch.randn(B, 8, generator=torch.Generator().manual_seed(s)), dim=1) for s in (5, 6)]
    glob = [torch.cat([other[s], local[s]]).requires_grad_() for s in (0, 1)]  # rank 1's rows come second
    total, logs = m.losses(pyr, glob, rank)
    want = 0.0
    for s, p in enumerate(pyr):
        embs = m._embed(m.online, p.x, p.counts)
        for i in range(3):
            want += m.weights[i] * mcl_loss(m.predictors[i](embs[i]), glob[1 - s], p.labels[i] + rank * B, m.T)
    torch.testing.assert_close(total, want)
    torch.testing.assert_close(total.detach(), sum(logs[f"loss_level{i}"] for i in range(3)))
    assert m.weights == [0.5, 0.25, 0.125]
    total.backward()
    assert glob[0].grad is None and glob[1].grad is None  # targets are detached
    assert all(p.grad is None for p in m.target.parameters())
    assert m.online.backbone.conv1.weight.grad is not None and all(
        p.fc1.weight.grad is not None for p in m.predictors)
    # swapping the sides' targets changes the loss: side s is scored against side 1 - s
    swapped, _ = m.losses(pyr, glob[::-1], rank)
    assert not torch.allclose(swapped, total)


# --- optimiser, schedule, EMA ------------------------------------------------------------------------
def test_no_decay_excludes_what_the_code_excludes() -> None:
    """The code's regex: biases and BN layers named bn<k> (trunk) or inside a conv module (FPN, neck); the
    trunk's downsample BN and the MLPs' BN weights keep weight decay and LARS adaptation."""
    m = _build()
    cfg = _cfg()
    groups = param_groups(m, cfg["optim"]["weight_decay"], cfg["optim"]["no_decay"])
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for g in groups if not g["lars_exclude"] for p in g["params"]}
    assert all(g["weight_decay"] == 0 for g in groups if g["lars_exclude"])
    one_d = sorted(n for n in decayed if dict(m.named_parameters())[n].ndim == 1)
    assert one_d == sorted([*(f"online.backbone.layer{k}.0.downsample.1.weight" for k in (2, 3, 4)),
                            "online.head.neck.projector.bn.weight",
                            *(f"predictors.{i}.bn.weight" for i in range(3))])
    excluded = {names[id(p)] for g in groups if g["lars_exclude"] for p in g["params"]}
    assert "online.backbone.layer1.0.bn2.weight" in excluded and "online.head.fpn.fpn_output4.norm.weight" in excluded
    assert "online.head.neck.conv3.norm.weight" in excluded and "predictors.0.fc1.bias" in excluded
    assert not any(n.startswith("target.") for n in decayed | excluded)


def test_warmup_on_top_of_a_cosine_over_all_iterations() -> None:
    """mmcv's CosineAnnealing + linear warm-up (the MCL code): lr(t) = cos(t) (r + (1 - r) t / W) for t < W."""
    s = Schedule("cosine", total=100, warmup=10, warmup_start=1e-4, warmup_offset=0, min_ratio=0.01,
                 cosine_from="start")

    def cos(t: float) -> float:
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / 100))

    assert s.lr(2.0, 0) == pytest.approx(2.0 * 1e-4)
    assert s.lr(2.0, 5) == pytest.approx(2.0 * cos(5) * (1e-4 + (1 - 1e-4) * 0.5))
    assert s.lr(2.0, 10) == pytest.approx(2.0 * cos(10))  # below the base lr: the cosine started at 0
    assert s.lr(2.0, 60) == pytest.approx(2.0 * cos(60)) and s.lr(2.0, 100) == pytest.approx(0.02)
    old = Schedule("cosine", total=100, warmup=10, warmup_start=1e-4, warmup_offset=0, min_ratio=0.01)
    assert old.lr(2.0, 10) == pytest.approx(2.0)  # the suite's form: cosine over the steps after the warm-up
    assert old.lr(2.0, 55) == pytest.approx(2.0 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    with pytest.raises(ConfigError, match="schedule.cosine_from"):
        Schedule("cosine", total=10, cosine_from="end")
    cfg = load_config("mcl", "pretrain/configs")
    full = schedule_from_config(cfg["schedule"], total=31200, steps_per_epoch=312, base_lr=cfg["optim"]["lr"])
    assert (full.warmup, full.cosine_from, full.warmup_start) == (3127, "start", 1e-4)
    assert full.lr(16.0, 31200) == pytest.approx(1e-4) and full.lr(16.0, 0) == pytest.approx(16.0 * 1e-4)
    mini = schedule_from_config(load_config("mcl_mini", "pretrain/configs")["schedule"], 138, 46, 0.25)
    assert mini.warmup == 46


@pytest.fixture(scope="module")
def tiny_run(mini_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-iteration MCL run through the real loop (batch 16 of 32 px images)."""
    from pretrain.cli import main

    out = tmp_path_factory.mktemp("mcl") / "run"
    main(["mcl_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), *TINY, "epochs=1",
          "batch_size=16", "data.max_images=16", "data.num_workers=0", "num_threads=1", "knn.every=0"])
    return out


def test_ema_follows_the_optimiser_step(tiny_run: Path) -> None:
    """Iteration 0: momentum 0.99 (cosine 0.99 -> 1), target = 0.99 init + 0.01 (online AFTER the step); the
    target's BN statistics are its own (not averaged)."""
    ck = torch.load(tiny_run / "checkpoint.pth", weights_only=False)
    assert ck["iteration"] == 1
    torch.manual_seed(0)  # the loop seeds with seed + rank before it builds the method
    init = METHODS.get("mcl")(ck["config"]).state_dict()
    after, target = ck["model"], ck["target"]
    moved = 0
    for k, v in target.items():
        if not v.is_floating_point() or "running_" in k:
            continue
        o = after[f"online.{k}"]
        torch.testing.assert_close(v, 0.99 * init[f"online.{k}"] + 0.01 * o, rtol=1e-5, atol=1e-6)
        moved += not torch.equal(o, init[f"online.{k}"])
    assert moved > 50
    k = "backbone.layer1.0.bn1.running_mean"
    assert not torch.allclose(target[k], 0.99 * init[f"online.{k}"] + 0.01 * after[f"online.{k}"])


def test_transfer_bundle_carries_the_fpn_and_the_neck_convs(tiny_run: Path, tmp_path: Path) -> None:
    from lewel_bench.transfer.detectron2 import convert, to_detectron2

    bb = load_backbone(tiny_run / "backbone.pth", parts=["fpn", "box_head"])
    assert bb.arch == "resnet18" and all(not k.startswith(("online.", "fpn", "conv1.norm")) for k in bb.state_dict)
    fpn, box = bb.parts["fpn"], bb.parts["box_head"]
    for lv, cin in ((3, 128), (4, 256), (5, 512)):  # three levels read P3..P5: the FPN has those
        assert fpn[f"fpn_lateral{lv}.weight"].shape == (16, cin, 1, 1)
        assert fpn[f"fpn_output{lv}.weight"].shape == (16, 16, 3, 3)
        assert fpn[f"fpn_lateral{lv}.norm.running_var"].shape == (16,)
    assert not any(k.startswith(("fpn_lateral2", "fpn_output2")) for k in fpn)
    assert sorted({k.split(".")[0] for k in box}) == ["conv1", "conv2", "conv3", "conv4"]
    assert box["conv2.weight"].shape == (16, 16, 3, 3) and box["conv4.norm.bias"].shape == (16,)
    ck = torch.load(tiny_run / "checkpoint.pth", weights_only=False)
    assert torch.equal(box["conv1.weight"], ck["model"]["online.head.neck.conv1.weight"])
    # the same parts from the full checkpoint (its own key map), and into detectron2's names
    full = load_backbone(tiny_run / "checkpoint.pth", parts=["fpn", "box_head"])
    assert all(torch.equal(full.parts["fpn"][k], v) for k, v in fpn.items())
    d2 = to_detectron2(bb, ["fpn", "box_head"])["model"]
    assert d2["fpn_lateral4.norm.weight"].shape == (16,) and d2["box_head.conv3.norm.running_mean"].shape == (16,)
    assert "res2.0.conv1.weight" in d2 and not any(k.startswith("online") for k in d2)
    out = convert(tiny_run / "backbone.pth", tmp_path / "mcl.pkl", parts=["fpn", "box_head"])
    with open(out, "rb") as f:
        assert np.array_equal(pickle.load(f)["model"]["box_head.conv2.weight"], box["conv2.weight"].numpy())


# --- DDP ---------------------------------------------------------------------------------------------
B_DDP = 16  # per process


def _ddp_data() -> list[torch.Tensor]:
    return _views(6, 2 * B_DDP, seed=7)


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from lewel_bench import dist as ldist

    ldist.init_distributed()
    m = _build()
    m.iteration = 3
    ddp = torch.nn.parallel.DistributedDataParallel(m, broadcast_buffers=False)
    views = [v[rank * B_DDP:(rank + 1) * B_DDP] for v in _ddp_data()]
    loss, _ = ddp(views)
    loss.backward()
    res = {"loss": ldist.all_reduce_mean(loss.detach()),
           "grads": {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}}
    if rank == 0:
        torch.save(res, out)
    ldist.cleanup()


@pytest.mark.slow
def test_ddp_first_step_equals_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    """Without SyncBN (CUDA only) each process normalises its half with that half's BN statistics; the
    one-process reference does the same (each half its own BN batch, each half's montages drawn as its rank
    draws them) against the targets of the WHOLE batch with labels offset by rank, and averages the halves'
    losses: the objective DDP optimises, so loss and gradients agree up to rounding."""
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(_free_port(), out), nprocs=2, join=True)
    res = torch.load(out, weights_only=False)
    m = _build()
    m.iteration = 3
    data = _ddp_data()
    halves = [[v[h * B_DDP:(h + 1) * B_DDP] for v in data] for h in (0, 1)]
    pyr = [m.pyramids(v, rank=h) for h, v in enumerate(halves)]
    t = [m.targets(p) for p in pyr]
    glob = [torch.cat([t[0][s], t[1][s]]) for s in (0, 1)]
    loss = 0.5 * (m.losses(pyr[0], glob, 0)[0] + m.losses(pyr[1], glob, 1)[0])
    loss.backward()
    torch.testing.assert_close(res["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    ref = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    assert set(ref) == set(res["grads"]) and len(ref) > 100
    # a bias right before a BN has a zero gradient up to rounding (the projector's and predictors' fc1): such
    # tensors are compared against the scale of the gradients, every other one relative to its own norm
    scale = max(g.norm().item() for g in ref.values())
    worst = max(((res["grads"][n] - g).norm() / max(g.norm().item(), 1e-3 * scale), n) for n, g in ref.items())
    assert worst[0] < 1e-4, worst


# --- benchmark -------------------------------------------------------------------------------------
def test_benchmark_prints_mcl_over_byol_and_the_pixel_ratio(capsys: pytest.CaptureFixture) -> None:
    from tools.bench_pretrain import main

    main(["--arch", "resnet18", "--size", "32", "--batch", "16", "--reps", "1", "--warmup", "0",
          "--methods", "byol", "mcl"])
    out = capsys.readouterr().out
    row = re.search(r"^\| mcl / byol \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", out, re.MULTILINE)
    assert row and float(row.group(1)) > 0 and float(row.group(3)) == 1.3125
    assert float(row.group(2)) > 1.0  # MCL does more FLOPs per step than BYOL
    px = dict(re.findall(r"^\| (\w+) \|(?: [0-9.]+ \|){5} ([0-9.]+) \| [0-9.]+ \|$", out, re.MULTILINE))
    assert px == {"supervised": "1", "byol": "2", "mcl": "2.625"}
