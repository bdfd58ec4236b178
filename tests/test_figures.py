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

    method, _cfg = va.load_method(lewel_ckpt)
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
        va.load_method(bb)
    ck = torch.load(lewel_ckpt, weights_only=False)
    ck["config"] = dict(ck["config"], method="byol")
    torch.save(ck, tmp_path / "byol.pth")
    with pytest.raises(va.AlignmentError, match="no alignment maps"):
        va.load_method(tmp_path / "byol.pth")


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


# --------------------------------------------------------------------------- curves: shared axes, kNN reference
def _log(folder: Path, loss0: float, knn: list[float], fp: str | None = None) -> Path:
    folder.mkdir(parents=True)
    lines = [{"iter": i, "epoch": (i - 1) // 5, "loss": loss0 - 0.1 * i, "lr": 0.1 * (1 - i / 20), "momentum": 0.99,
              "loss_g": loss0, "loss_a": loss0 / 2} for i in range(1, 11 if loss0 > 3 else 21)]
    lines += [{"iter": 5 * (e + 1), "epoch": e + 1, "knn_top1": v} for e, v in enumerate(knn)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if fp:
        (folder / "identity.json").write_text(json.dumps({"identity": {"data": {"name": "mini", "fingerprint": fp}}}))
        (folder / "config.yaml").write_text("method: lewel_m\narch: resnet18\nknn: {k: 20}\n")
    return folder / "metrics.jsonl"


def _random_record(fp: str, top1: float, **kw) -> dict:
    return {"eval": "knn", "method": "random", "status": "ok", "data": {"name": "mini", "fingerprint": fp},
            "metrics": {"top1": top1}, "arch": "resnet18", "k": 20, **kw}


def test_knn_ylim_spans_ten_points():
    from tools.plot_curves import knn_ylim

    for vals in ([49.0, 50.0], [50.0], [0.5, 1.0], [99.0, 99.5], [20.0, 60.0]):
        lo, hi = knn_ylim(vals)
        assert hi - lo >= 10.0 - 1e-9 and 0.0 <= lo and hi <= 100.0
        assert lo <= min(vals) and max(vals) <= hi
    assert knn_ylim([20.0, 60.0])[1] - knn_ylim([20.0, 60.0])[0] > 40


def test_curves_share_axes_across_methods(tmp_path):
    from tools import plot_curves as pc

    a = _log(tmp_path / "mocov2", 8.0, [20.0, 22.0])
    b = _log(tmp_path / "byol", 2.0, [30.0, 31.0, 31.5, 32.0])
    curves = pc.curves_for([a, b])
    fig = pc.figure(curves, "rows")
    axes = fig.axes
    assert len(axes) == 8
    for col in range(4):   # every column: the same x and y range in both rows
        assert axes[col].get_ylim() == axes[4 + col].get_ylim()
        assert axes[col].get_xlim() == axes[4 + col].get_xlim()
    assert axes[0].get_ylim()[1] >= 8.0 and axes[0].get_ylim()[0] <= 1.0       # holds both losses
    # separate figures drawn with shared limits compare too
    lim = pc.shared_limits(curves)
    f1, f2 = pc.figure([curves[0]], limits=lim), pc.figure([curves[1]], limits=lim)
    for col in range(4):
        assert f1.axes[col].get_ylim() == f2.axes[col].get_ylim()
        assert f1.axes[col].get_xlim() == f2.axes[col].get_xlim()
    titles = [ax.get_title() for ax in f1.axes]
    assert any("momentum" in t for t in titles)
    import matplotlib.pyplot as plt
    plt.close("all")


def test_knn_panel_random_init_reference(tmp_path):
    import matplotlib.pyplot as plt

    from tools import plot_curves as pc

    fp = "ab" * 32
    log = _log(tmp_path / "lewel_m", 6.0, [30.0, 31.0], fp=fp)
    recs = [_random_record(fp, 46.0), _random_record(fp, 50.0), _random_record("cd" * 32, 10.0),
            _random_record(fp, 99.0, arch="resnet50"), _random_record(fp, 98.0, status="failed"),
            {**_random_record(fp, 97.0), "method": "lewel_m"}]
    assert pc.random_knn_reference(recs, fp, "resnet18", 20) == (48.0, "random init (kNN records, n=2)")
    assert pc.random_knn_reference(recs, "ee" * 32) is None
    [cv] = pc.curves_for([log], records=recs)
    assert cv.random_knn == 48.0
    fig = pc.figure([cv])
    knn_ax = fig.axes[3]
    flat = [ln for ln in knn_ax.get_lines() if len(set(ln.get_ydata())) == 1 and ln.get_ydata()[0] == 48.0]
    assert flat and "random init" in flat[0].get_label()
    lo, hi = knn_ax.get_ylim()
    assert hi - lo >= 10 and lo <= 30.0 and hi >= 48.0
    # no record of this data: no line, the legend and the panel say so; --random-knn fills in
    [cv] = pc.curves_for([log], records=[_random_record("cd" * 32, 10.0)])
    assert cv.random_knn is None and "no kNN record of method random on data mini:abababab" in cv.random_note
    fig = pc.figure([cv])
    labels = fig.axes[3].get_legend_handles_labels()[1]
    assert any("no random-init reference" in lb for lb in labels)
    assert any("no kNN record" in t.get_text() for t in fig.axes[3].texts)
    [cv] = pc.curves_for([log], random_knn=40.0, records=[])
    assert cv.random_knn == 40.0 and "given" in cv.random_note
    plt.close("all")
    out = pc.plot([log], tmp_path / "c.png", records=recs, layout="rows")
    assert Image.open(out).size[0] > 1000


# --------------------------------------------------------------------------- alignment: images, classes, object
def test_foreground_mask_finds_the_shape():
    from tools import visualize_alignment as va

    rng = np.random.default_rng(0)
    h = w = 96
    yy, xx = np.mgrid[0:h, 0:w]
    bg = 110 + 30 * (xx / w) + 15 * np.sin(yy / 30.0)                  # a smooth grey background
    true = (xx - 50) ** 2 / 25 ** 2 + (yy - 40) ** 2 / 15 ** 2 < 1      # an ellipse, 60 levels darker
    img = np.where(true, bg - 60, bg) + rng.normal(0, 12, (h, w))
    pil = Image.fromarray(np.clip(np.stack([img] * 3, -1), 0, 255).astype(np.uint8))
    m = va.foreground_mask(pil)
    assert m is not None and (m & true).sum() / (m | true).sum() > 0.9
    assert va.coverage(m, (0, 0, w, h)) == 1.0 and va.coverage(true, (0, 0, 50, h)) == pytest.approx(0.5, abs=0.05)
    assert va.foreground_mask(Image.fromarray(np.full((32, 32, 3), 128, np.uint8))) is None


def test_alignment_defaults_to_the_checkpoints_val_split(tmp_path, mini_data):
    from lewel_bench.config import load_config
    from lewel_bench.data.mini import SHAPE_CLASSES
    from pretrain.augment import build_views, view_specs
    from pretrain.cli import CONFIG_DIR
    from pretrain.methods import METHODS
    from tools import visualize_alignment as va

    cfg = load_config("lewel_m_mini", CONFIG_DIR, ["model.hidden=64", "model.dim=32", "model.queue_size=64",
                                                   f"data.root={mini_data / 'imagenet'}"])
    torch.manual_seed(0)
    sd = METHODS.get("lewel_m")(cfg).state_dict()
    ck = tmp_path / "run" / "checkpoint.pth"
    ck.parent.mkdir()
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith(("target.", "queue"))}, "config": cfg,
                "meta": {"exp": "lewel_m"}}, ck)
    val = va.default_images(cfg, ck)
    assert val == mini_data / "imagenet" / "val"
    assert va.is_mini(val) and va.class_names(val)["n90000001"] == "circle"
    view_tf = build_views(view_specs(cfg["aug"]))[0]
    picks, criterion = va.pick_images(va.all_images(val), view_tf, 4, seed=0)
    assert len(picks) == 4 and "contrast foreground" in criterion
    assert len({p.label for p in picks}) == 4 and all(p.label in SHAPE_CLASSES for p in picks)
    assert all(p.coverage >= 0.8 for p in picks)
    for p in picks:   # the box is the crop the view was drawn from
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= p.image.size[0] and 0 <= y0 < y1 <= p.image.size[1]
        assert p.label == dict(zip([f"n9{i + 1:07d}" for i in range(10)], SHAPE_CLASSES))[p.file.parent.name]
    # the same seed draws the same view as the plain transform
    from pretrain.augment import seeded
    img = picks[0].image
    a, _ = seeded(lambda: va.view_with_box(view_tf, img), 7)
    assert torch.equal(a, seeded(lambda: view_tf(img), 7))
    out = va.draw(ck, None, tmp_path / "align.png", n_images=2, n_maps=2)
    assert Image.open(out).size[1] > 200
    # a data root that is not here: one line saying to pass an image folder
    cfg2 = {**cfg, "data": {**cfg["data"], "root": str(tmp_path / "gone")}}
    with pytest.raises(va.AlignmentError, match="pass an image folder"):
        va.default_images(cfg2, tmp_path / "nowhere" / "checkpoint.pth")
    # no classes.txt: rows are labelled by the folder name
    assert va.class_label(tmp_path / "imgs" / "a.png", va.class_names(tmp_path)) == "imgs"
