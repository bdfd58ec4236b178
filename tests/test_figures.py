"""Figures: Fig. 5 alignment maps from a (tiny, untrained) LEWEL checkpoint; loss / kNN curves."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def _images(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def lewel_ckpt(tmp_path_factory) -> Path:
    from lewel_bench.config import load_config
    from pretrain.cli import CONFIG_DIR
    from pretrain.methods import METHODS

    cfg = load_config("lewel_m_mini", CONFIG_DIR, ["model.hidden=64", "model.dim=32", "model.queue_size=64"])
    torch.manual_seed(0)
    method = METHODS.get("lewel_m")(cfg)
    sd = method.state_dict()
    ck = {"model": {k: v for k, v in sd.items() if not k.startswith(("target.", "queue"))}, "config": cfg,
          "meta": {"format": "lewel-bench/pretrain", "method": "lewel_m", "exp": "lewel_m_mini", "epochs": 1,
                   "arch": cfg["arch"], "backbone_prefix": "online.backbone."}}
    p = tmp_path_factory.mktemp("ck") / "checkpoint.pth"
    torch.save(ck, p)
    return p


def test_alignment_maps_figure(lewel_ckpt, tmp_path):
    from tools import visualize_alignment as va

    method, cfg = va.load_lewel(lewel_ckpt)
    view = torch.randn(3, 64, 64)
    maps = va.alignment_maps_for(method, view)
    assert maps.shape == (32, 2, 2)                       # d maps over the 2x2 layer4 grid of a 64 px view
    assert torch.allclose(maps.flatten(1).sum(1), torch.ones(32), atol=1e-5)   # each W_k sums to 1
    idx = va.strongest(maps, 3)
    peaks = maps.flatten(1).max(1).values
    assert peaks[idx[0]] == peaks.max() and len(set(idx)) == 3
    out = va.draw(lewel_ckpt, _images(tmp_path / "imgs"), tmp_path / "fig" / "align.png", n_images=2, n_maps=3)
    im = Image.open(out)
    assert im.size[0] > im.size[1] > 100                  # 2 rows x 5 columns


def test_alignment_refuses_non_lewel(tmp_path, lewel_ckpt):
    from tools import visualize_alignment as va

    bb = tmp_path / "backbone.pth"
    torch.save({"state_dict": {}, "meta": {"format": "lewel-bench/backbone"}}, bb)
    with pytest.raises(va.AlignmentError, match="not a full pretraining checkpoint"):
        va.load_lewel(bb)
    ck = torch.load(lewel_ckpt, weights_only=False)
    ck["config"] = dict(ck["config"], method="byol")
    torch.save(ck, tmp_path / "byol.pth")
    with pytest.raises(va.AlignmentError, match="no alignment maps"):
        va.load_lewel(tmp_path / "byol.pth")


def test_plot_curves(tmp_path):
    from tools import plot_curves as pc

    log = tmp_path / "lewel_b" / "metrics.jsonl"
    log.parent.mkdir()
    lines = [{"iter": i, "epoch": i // 5, "loss": 4.0 - 0.1 * i, "lr": 0.1, "loss_g": 2.0, "loss_a": 2.0}
             for i in range(1, 11)]
    lines += [{"iter": 5, "epoch": 1, "knn_top1": 20.0}, {"iter": 10, "epoch": 2, "knn_top1": 30.0}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = pc.plot([log], tmp_path / "curves.png")
    assert Image.open(out).size[0] > 500
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iter": 1}\nnot json\n')
    with pytest.raises(pc.MetricsError, match=r"bad.jsonl:2"):
        pc.read_metrics(bad)
