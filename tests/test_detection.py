"""Detection transfer: detectron2 converter, torchvision C4/FPN models, VOC evaluation, configs, bad input."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import d2_cfg, tiny_detection_batch
from lewel_bench.checkpoint import BackboneError, save_backbone
from lewel_bench.config import ConfigError
from lewel_bench.models import build_backbone, build_torchvision_resnet

REPO = Path(__file__).resolve().parent.parent
D2_CONFIGS = REPO / "eval_detection" / "configs" / "detectron2"


@pytest.fixture(scope="module")
def r50_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sd = build_backbone("resnet50").state_dict()
    # make every tensor distinctive (running stats too), so a wrong mapping cannot pass unnoticed
    return {k: (v + torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v) for k, v in sd.items()}


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory, r50_sd: dict) -> Path:
    p = tmp_path_factory.mktemp("bb") / "backbone.pth"
    save_backbone(p, r50_sd, {"arch": "resnet50", "method": "byol", "epochs": 1, "exp": "test_det"})
    return p


# ------------------------------------------------------------------------------------------------
# converter
# ------------------------------------------------------------------------------------------------
def test_converter_round_trip_all_input_formats(tmp_path: Path, r50_sd: dict, backbone_file: Path) -> None:
    from lewel_bench.transfer.detectron2 import convert, load_detectron2_pkl
    from tools.convert_to_detectron2 import main

    full = tmp_path / "ckpt.pth"  # a full pretraining checkpoint: backbone under a prefix named in its meta
    model = {f"online.encoder.{k}": v for k, v in r50_sd.items()}
    model.update({"online.projector.0.weight": torch.zeros(4, 4), "target.encoder.conv1.weight": torch.zeros(1)})
    torch.save({"model": model, "meta": {"format": "lewel-bench/pretrain", "backbone_prefix": "online.encoder.",
                                         "arch": "resnet50", "method": "lewel_b"}}, full)
    tv = tmp_path / "tv.pth"  # a plain torchvision state dict, fc included
    tv_sd = build_torchvision_resnet("resnet50").state_dict()
    tv_sd.update(r50_sd)
    torch.save(tv_sd, tv)
    for src in (backbone_file, full, tv):
        out = tmp_path / f"{src.stem}.pkl"
        if src is tv:
            main([str(src), str(out)])  # the CLI path
        else:
            convert(src, out)
        with open(out, "rb") as f:
            obj = pickle.load(f)
        assert obj["__author__"] == "lewel-bench" and obj["matching_heuristics"] is True
        names = set(obj["model"])
        assert all(isinstance(v, np.ndarray) for v in obj["model"].values())
        assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
                "res2.0.shortcut.norm.bias", "res5.2.conv3.norm.weight", "res4.5.conv2.weight"} <= names
        assert not any(k.startswith(("fc", "layer", "stem.fc")) or ".bn" in k or "downsample" in k for k in names)
        back = load_detectron2_pkl(out)
        assert set(back) == set(r50_sd)
        for k, v in r50_sd.items():
            assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert not list(tmp_path.glob(".*.tmp"))


def test_converter_refuses_empty_and_partial(tmp_path: Path, r50_sd: dict) -> None:
    from lewel_bench.transfer.detectron2 import check_complete, convert
    from tools.convert_to_detectron2 import main

    empty = tmp_path / "empty.pth"  # MoCo-converter failure mode: no key under the expected prefix
    torch.save({"model": {"module.encoder_k.conv1.weight": torch.zeros(1)},
                "meta": {"format": "lewel-bench/pretrain", "backbone_prefix": "module.encoder_q.", "arch": "resnet50"}},
               empty)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in r50_sd.items() if not k.startswith("layer4.")}, partial)
    for src in (empty, partial):
        out = tmp_path / f"{src.stem}.pkl"
        with pytest.raises(BackboneError, match="refusing|no key starts with"):
            convert(src, out, arch="resnet50")
        assert not out.exists()
    with pytest.raises(SystemExit, match="missing"):
        main([str(partial), str(tmp_path / "p2.pkl"), "--arch", "resnet50"])
    # the converter's own guard, independent of the intake: counts in the message
    with pytest.raises(BackboneError, match=r"0 of 265 resnet50 tensors present"):
        check_complete({}, "resnet50")
    with pytest.raises(BackboneError, match=r"partial backbone weights: 215 of 265 resnet50 tensors present, 50 missing"):
        check_complete({k: v for k, v in r50_sd.items() if not k.startswith("layer4.")}, "resnet50")
    assert not list(tmp_path.glob("*.pkl"))


# ------------------------------------------------------------------------------------------------
# torchvision models: build from a converted checkpoint, zero missing backbone keys, one training step
# ------------------------------------------------------------------------------------------------
TINY = dict(min_size_train=[64], max_size=96, min_size_test=64, anchor_sizes=[16, 32, 64], rpn_batch_per_image=32,
            roi_batch_per_image=8, rpn_pre_nms_train=100, rpn_post_nms_train=16, rpn_pre_nms_test=50,
            rpn_post_nms_test=8, pooler_resolution=4, detections_per_img=5,
            fpn_anchor_sizes=[8, 16, 32, 64, 128], fpn_rpn_pre_nms_train=50, fpn_rpn_post_nms_train=16,
            fpn_rpn_pre_nms_test=50, fpn_rpn_post_nms_test=8)


@pytest.fixture(scope="module")
def converted_bb(tmp_path_factory: pytest.TempPathFactory, backbone_file: Path):
    """The backbone read back from a converted detectron2 .pkl (what a detectron2 run would load)."""
    from lewel_bench.checkpoint import Backbone
    from lewel_bench.transfer.detectron2 import convert, load_detectron2_pkl

    pkl = convert(backbone_file, tmp_path_factory.mktemp("d2") / "bb.pkl")
    return Backbone(state_dict=load_detectron2_pkl(pkl), arch="resnet50", path=str(pkl))


@pytest.mark.parametrize("arch,mask", [("c4", False), ("c4", True), ("fpn", True)])
def test_models_build_from_converted_checkpoint_and_train_one_step(converted_bb, r50_sd: dict, arch: str,
                                                                   mask: bool) -> None:
    from eval_detection.tv_models import backbone_keys_report, build_model

    torch.manual_seed(0)
    bb = converted_bb
    model = build_model(arch, bb, num_classes=3, mask=mask, **TINY)
    rep = backbone_keys_report(model, bb)
    assert rep == {"matched": len(r50_sd), "total": len(r50_sd)}  # ZERO missing backbone tensors, values equal
    if arch == "c4":
        assert isinstance(model.roi_heads.box_head.res5.norm, torch.nn.BatchNorm2d)  # Res5ROIHeadsExtraNorm
        assert model.roi_heads.box_head.res5.res5[0].conv2.stride == (2, 2)  # res5 keeps stride 2 (C4)
        assert model.roi_heads.box_roi_pool.output_size == (4, 4)
    else:
        assert all(not isinstance(m, __import__("torchvision").ops.FrozenBatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.backbone.parameters())  # FREEZE_AT 0
    imgs, targets = tiny_detection_batch(mask)
    model.train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if k.endswith("conv1.weight")}
    losses = model(imgs, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    assert ("loss_mask" in losses) == mask
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss.backward()
    opt.step()
    after = model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the backbone is fine-tuned
    model.eval()
    with torch.no_grad():
        out = model(imgs)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "scores", "labels"}


def test_rpn_losses_are_detectron2s_by_hand() -> None:
    """D2RPN on a hand example (every anchor drawn: 2 images, at most 8 anchors each, half positive): objectness
    BCE summed over the drawn anchors and the box loss (smooth-L1 with beta, 0: L1) summed over the positive ones,
    both divided by batch_size_per_image x images = 16 (detectron2's ``RPN.losses``)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RPNHead

    from eval_detection.tv_models import D2RPN

    rpn = D2RPN(AnchorGenerator(((16,),), ((1.0,),)), RPNHead(4, 1), 0.7, 0.3, 8, 0.5, dict(training=10, testing=10),
                dict(training=10, testing=10), 0.7)
    labels = [torch.tensor([1.0, 0.0, 0.0, -1.0, 1.0]), torch.tensor([0.0, -1.0, 1.0, 0.0])]
    g = torch.Generator().manual_seed(0)
    logits, deltas, targets = torch.randn(9, generator=g), torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    flat = torch.cat(labels)
    drawn, pos = flat >= 0, flat == 1
    bce = F.binary_cross_entropy_with_logits(logits[drawn], flat[drawn], reduction="sum")
    d = (deltas - targets)[pos].abs()
    for beta, box in ((0.0, d.sum()), (1 / 9, torch.where(d < 1 / 9, 0.5 * d ** 2 * 9, d - 0.5 / 9).sum())):
        rpn.smooth_l1_beta = beta
        obj, reg = rpn.compute_loss(logits.view(-1, 1), deltas, labels, [targets[:5], targets[5:]])
        torch.testing.assert_close(obj, bce / 16)
        torch.testing.assert_close(reg, box / 16)


def test_rcnn_detectors_train_with_detectron2s_box_loss() -> None:
    """C4 and FPN detectors regress boxes with detectron2's loss: ``model.smooth_l1_beta`` 0 (L1) by default. With
    torchvision's beta 1/9 the same draws give torchvision's own losses exactly (so only the loss changes: the
    RPN's normaliser equals the anchors drawn when every image has enough); with beta 0 the box losses are the L1
    ones, larger than smooth-L1 of the same deltas."""
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork

    from eval_detection.tv_models import D2RPN, D2RoIHeads, build_model
    from lewel_bench.checkpoint import Backbone

    torch.manual_seed(0)
    bb = Backbone(state_dict=build_backbone("resnet18").state_dict(), arch="resnet18", path="r18")
    imgs, targets = tiny_detection_batch(False)
    box_keys = ("loss_box_reg", "loss_rpn_box_reg")
    for arch in ("c4", "fpn"):
        model = build_model(arch, bb, 3, False, **TINY).train()
        assert type(model.rpn) is D2RPN and type(model.roi_heads) is D2RoIHeads and model.rpn.smooth_l1_beta == 0.0
        losses = {}
        for beta in (0.0, 1 / 9, "torchvision"):
            if beta == "torchvision":
                model.rpn.__class__, model.roi_heads.__class__ = RegionProposalNetwork, RoIHeads
            else:
                model.rpn.smooth_l1_beta = model.roi_heads.smooth_l1_beta = beta
            torch.manual_seed(1)
            losses[beta] = {k: float(v.detach()) for k, v in model(imgs, targets).items()}
        assert losses[1 / 9] == pytest.approx(losses["torchvision"], rel=1e-6), arch
        assert all(losses[0.0][k] > losses[1 / 9][k] > 0 for k in box_keys), arch
        assert losses[0.0]["loss_classifier"] == pytest.approx(losses[1 / 9]["loss_classifier"], rel=1e-6)
    with pytest.raises(ConfigError, match="smooth_l1_beta"):
        build_model("c4", bb, 3, False, **{**TINY, "smooth_l1_beta": -1.0})


def test_model_refuses_partial_backbone() -> None:
    from eval_detection.tv_models import build_model
    from lewel_bench.checkpoint import Backbone

    sd = {k: v for k, v in build_backbone("resnet50").state_dict().items() if not k.startswith("layer4.0.")}
    with pytest.raises(BackboneError, match="missing"):
        build_model("c4", Backbone(state_dict=sd, arch="resnet50", path="partial"), 3, False, **TINY)
    with pytest.raises(BackboneError, match="missing"):
        build_model("fpn", Backbone(state_dict=sd, arch="resnet50", path="partial"), 3, True, **TINY)


# ------------------------------------------------------------------------------------------------
# VOC evaluation (detectron2's PascalVOCDetectionEvaluator semantics)
# ------------------------------------------------------------------------------------------------
def _voc_gt(rng: np.random.Generator, n_img: int = 12, n_cls: int = 3) -> dict:
    gt = {}
    for i in range(n_img):
        n = int(rng.integers(1, 4))
        x1 = rng.integers(1, 100, n).astype(float)
        y1 = rng.integers(1, 100, n).astype(float)
        w = rng.integers(20, 80, n)
        h = rng.integers(20, 80, n)
        gt[f"img{i}"] = {"boxes": np.stack([x1, y1, x1 + w, y1 + h], 1), "labels": rng.integers(0, n_cls, n),
                         "difficult": np.zeros(n, bool)}
    return gt


def _as_detections(gt: dict, jitter: float = 0.0, rng: np.random.Generator | None = None) -> dict:
    dets = {}
    for k, g in gt.items():
        b = g["boxes"].astype(float).copy()
        b[:, :2] -= 1.0  # model coordinates: 0-based continuous (the loader's xmin - 1)
        if jitter:
            b += rng.normal(0, jitter, b.shape)
        dets[k] = {"boxes": b, "scores": np.linspace(0.9, 0.5, len(b)), "labels": g["labels"]}
    return dets


def test_voc_eval_ground_truth_gives_ap_100_and_perturbed_less() -> None:
    from eval_detection.voc_eval import evaluate_voc

    rng = np.random.default_rng(0)
    gt = _voc_gt(rng)
    names = ("a", "b", "c")
    for use07 in (True, False):
        perfect = evaluate_voc(gt, _as_detections(gt), names, use_07_metric=use07)
        assert perfect["AP"] == pytest.approx(100.0) and perfect["AP50"] == pytest.approx(100.0)
        assert perfect["AP75"] == pytest.approx(100.0)
    noisy = evaluate_voc(gt, _as_detections(gt, jitter=4.0, rng=rng), names)
    assert noisy["AP50"] > 80.0 and noisy["AP"] < 90.0 and noisy["AP75"] < 100.0 and noisy["AP"] < noisy["AP50"]
    # missing half the detections lowers recall, hence AP50
    half = {k: v for i, (k, v) in enumerate(_as_detections(gt).items()) if i % 2 == 0}
    assert evaluate_voc(gt, half, names)["AP50"] < 80.0
    # wrong labels give nothing
    wrong = {k: {**d, "labels": (d["labels"] + 1) % 3} for k, d in _as_detections(gt).items()}
    assert evaluate_voc(gt, wrong, names)["AP50"] == pytest.approx(0.0)


def test_voc_eval_matches_detectron2_conventions() -> None:
    from eval_detection.voc_eval import evaluate_voc, voc_ap

    # 11-point VOC07: recall 0.5 reached at precision 1 -> 6 of 11 points
    assert voc_ap(np.array([0.5]), np.array([1.0]), True) == pytest.approx(6 / 11)
    assert voc_ap(np.array([0.5]), np.array([1.0]), False) == pytest.approx(0.5)
    gt = {"a": {"boxes": np.array([[1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]), "labels": np.array([0, 0]),
                "difficult": np.array([False, True])}}
    # a duplicate detection is a false positive; a match to a difficult object is neither TP nor FP
    dets = {"a": {"boxes": np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [49.0, 49.0, 60.0, 60.0]]),
                  "scores": np.array([0.9, 0.8, 0.95]), "labels": np.array([0, 0, 0])}}
    r = evaluate_voc(gt, dets, ("x",), use_07_metric=False)
    assert r["AP50"] == pytest.approx(100.0)
    with pytest.raises(KeyError, match="not in the ground truth"):
        evaluate_voc(gt, {"zzz": dets["a"]}, ("x",))


# ------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------
def test_detectron2_configs_follow_the_protocol() -> None:
    common = lambda c: (c["MODEL"]["PIXEL_MEAN"] == [123.675, 116.28, 103.53]
                        and c["MODEL"]["PIXEL_STD"] == [58.395, 57.12, 57.375] and c["INPUT"]["FORMAT"] == "RGB"
                        and c["MODEL"]["RESNETS"]["STRIDE_IN_1X1"] is False and c["MODEL"]["BACKBONE"]["FREEZE_AT"] == 0
                        and c["MODEL"]["RESNETS"]["DEPTH"] == 50 and c["SOLVER"]["IMS_PER_BATCH"] == 16)
    voc = d2_cfg("voc_R_50_C4_24k.yaml")
    assert common(voc)
    assert voc["MODEL"]["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm" and voc["MODEL"]["MASK_ON"] is False
    assert voc["MODEL"]["RESNETS"]["NORM"] in ("SyncBN", "naiveSyncBN") and voc["TEST"]["PRECISE_BN"]["ENABLED"]
    assert voc["SOLVER"]["MAX_ITER"] == 24000 and list(voc["SOLVER"]["STEPS"]) == [18000, 22000]
    assert voc["SOLVER"]["BASE_LR"] == 0.02 and voc["SOLVER"]["WARMUP_ITERS"] == 100
    assert list(voc["DATASETS"]["TRAIN"]) == ["voc_2007_trainval", "voc_2012_trainval"]
    assert list(voc["DATASETS"]["TEST"]) == ["voc_2007_test"]
    assert min(voc["INPUT"]["MIN_SIZE_TRAIN"]) == 480 and max(voc["INPUT"]["MIN_SIZE_TRAIN"]) == 800
    c4 = d2_cfg("coco_R_50_C4_1x.yaml")
    assert common(c4) and c4["MODEL"]["MASK_ON"] is True
    assert c4["MODEL"]["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
    assert c4["SOLVER"]["MAX_ITER"] == 90000 and list(c4["SOLVER"]["STEPS"]) == [60000, 80000]
    for name, iters, steps in (("coco_R_50_FPN_1x.yaml", 90000, [60000, 80000]),
                               ("coco_R_50_FPN_2x.yaml", 180000, [120000, 160000])):
        c = d2_cfg(name)
        assert common(c) and c["MODEL"]["MASK_ON"] is True
        assert c["MODEL"]["BACKBONE"]["NAME"] == "build_resnet_fpn_backbone"
        assert c["MODEL"]["RESNETS"]["NORM"] == "SyncBN" and c["MODEL"]["FPN"]["NORM"] == "SyncBN"
        assert c["SOLVER"]["MAX_ITER"] == iters and list(c["SOLVER"]["STEPS"]) == steps


def test_detectron2_configs_merge_into_get_cfg() -> None:
    pytest.importorskip("detectron2", reason="detectron2 is not installed here (not on the package registries; "
                                            "see eval_detection/detectron2_backend.py); YAML checked by the test above")
    from eval_detection.detectron2_backend import setup_cfg

    for name in ("voc_R_50_C4_24k.yaml", "coco_R_50_C4_1x.yaml", "coco_R_50_FPN_1x.yaml", "coco_R_50_FPN_2x.yaml"):
        cfg = setup_cfg(D2_CONFIGS / name, [])
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.MODEL.BACKBONE.FREEZE_AT == 0


def test_torchvision_configs_mirror_detectron2() -> None:
    from eval_detection.cli import CONFIG_DIR
    from lewel_bench.config import load_config

    pairs = {"voc_c4_24k": "voc_R_50_C4_24k.yaml", "coco_c4_1x": "coco_R_50_C4_1x.yaml",
             "coco_fpn_1x": "coco_R_50_FPN_1x.yaml", "coco_fpn_2x": "coco_R_50_FPN_2x.yaml"}
    for tv, d2 in pairs.items():
        c, d = load_config(tv, CONFIG_DIR), d2_cfg(d2)
        assert c["solver"]["max_iter"] == d["SOLVER"]["MAX_ITER"] and c["solver"]["steps"] == list(d["SOLVER"]["STEPS"])
        assert c["solver"]["ims_per_batch"] == d["SOLVER"]["IMS_PER_BATCH"] and c["solver"]["base_lr"] == d["SOLVER"]["BASE_LR"]
        assert c["model"]["min_size_train"] == list(d["INPUT"]["MIN_SIZE_TRAIN"])
        assert c["mask"] == d["MODEL"]["MASK_ON"]
    assert load_config("voc_c4_24k", CONFIG_DIR)["protocol"] == "c4_24k"
    assert [load_config(n, CONFIG_DIR)["protocol"] for n in ("coco_c4_1x", "coco_fpn_1x", "coco_fpn_2x")] == \
        ["c4_1x", "fpn_1x", "fpn_2x"]
    for mini in ("mini_voc_c4_24k", "mini_coco_c4_1x", "mini_coco_fpn_1x", "mini_coco_fpn_2x"):
        c = load_config(mini, CONFIG_DIR)
        assert c["dataset"] == "mini" and c["protocol"] == load_config(mini[len("mini_"):], CONFIG_DIR)["protocol"]


def test_torchvision_backend_runs_the_protocols_in_fp32_with_l1_box_regression() -> None:
    """detectron2's defaults, which the protocol files leave alone (MoCo's and MCL's configs too): fp32
    (``SOLVER.AMP.ENABLED`` False) and L1 box regression (``RPN.SMOOTH_L1_BETA`` and
    ``ROI_BOX_HEAD.SMOOTH_L1_BETA`` 0); every torchvision protocol config runs the same: ``amp: false`` and
    ``model.smooth_l1_beta: 0``."""
    from eval_detection.cli import CONFIG_DIR
    from lewel_bench.config import load_config

    for f in sorted(D2_CONFIGS.glob("*.yaml")):
        d = d2_cfg(f.name)
        assert not d.get("SOLVER", {}).get("AMP", {}).get("ENABLED", False), f.name
        for head in ("RPN", "ROI_BOX_HEAD"):
            assert d.get("MODEL", {}).get(head, {}).get("SMOOTH_L1_BETA", 0.0) == 0.0, f.name
    for f in sorted(CONFIG_DIR.glob("*.yaml")):
        c = load_config(f.stem, CONFIG_DIR)
        assert c["amp"] is False and c["model"]["smooth_l1_beta"] == 0.0, f.name


# ------------------------------------------------------------------------------------------------
# bad input: clear errors or counted skips (policy in eval_detection/datasets.py)
# ------------------------------------------------------------------------------------------------
def _write_voc(root: Path, objects: list[tuple[str, tuple[int, int, int, int]]], listed: list[str]) -> None:
    from PIL import Image

    d = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    (d / "Annotations" / "a.xml").write_text(f"<annotation><size><width>64</width><height>48</height></size>{objs}</annotation>")
    Image.new("RGB", (64, 48)).save(d / "JPEGImages" / "a.jpg")
    (d / "ImageSets/Main/trainval.txt").write_text("\n".join(listed) + "\n")


def test_bad_voc_input_is_counted_or_refused(tmp_path: Path) -> None:
    from eval_detection.datasets import DetectionDataset, load_voc

    _write_voc(tmp_path, [("cat", (5, 5, 30, 30)), ("cat", (40, 20, 90, 60)), ("unicorn", (1, 1, 10, 10)),
                          ("dog", (70, 60, 80, 70))], ["a"])
    samples, skips = load_voc(tmp_path, "2007", "trainval", ("cat", "dog"), train=True)
    assert len(samples) == 1 and samples[0].labels.tolist() == [0, 0]
    assert samples[0].boxes[1].tolist() == [39.0, 19.0, 64.0, 48.0]  # clipped to the 64x48 image
    assert skips["clipped_box"] == 1 and skips["skipped_unknown_class"] == 1 and skips["skipped_box_outside"] == 1
    x, t = DetectionDataset(samples, train=False)[0]
    assert x.shape == (3, 48, 64) and t["labels"].tolist() == [1, 1]
    _write_voc(tmp_path, [("cat", (5, 5, 30, 30))], ["a", "b"])  # "b" listed but missing
    with pytest.raises(FileNotFoundError, match="b.xml|b.jpg"):
        load_voc(tmp_path, "2007", "trainval", ("cat",), train=True)


def test_bad_coco_input_is_counted_or_refused(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from eval_detection.datasets import DatasetError, DetectionDataset, load_coco

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "img" / "1.jpg")
    poly = [[5, 5, 30, 5, 30, 30, 5, 30]]
    doc = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
           "categories": [{"id": 3, "name": "cat"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 25, 25], "segmentation": poly, "area": 625, "iscrowd": 0},
               {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 30, 40, 40], "segmentation": poly, "area": 1, "iscrowd": 0},
               {"id": 3, "image_id": 1, "category_id": 99, "bbox": [5, 5, 5, 5], "segmentation": poly, "area": 1, "iscrowd": 0},
               {"id": 4, "image_id": 1, "category_id": 3, "bbox": [70, 60, 5, 5], "segmentation": poly, "area": 1, "iscrowd": 0}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    samples, skips, coco = load_coco(ann, tmp_path / "img", train=True)
    assert skips == {"unknown_class": 1, "clipped": 1, "empty_box": 1}
    assert samples[0].boxes.tolist() == [[5, 5, 30, 30], [50, 30, 64, 48]]
    _x, t = DetectionDataset(samples, train=True, masks=True, coco=coco)[0]
    assert t["masks"].shape == (2, 48, 64) and t["labels"].tolist() == [1, 1]
    doc["images"].append({"id": 2, "file_name": "missing.jpg", "width": 64, "height": 48})
    doc["annotations"].append({**doc["annotations"][0], "id": 5, "image_id": 2})
    ann.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="1 of 2 listed images are missing.*missing.jpg"):
        load_coco(ann, tmp_path / "img", train=True)


# ------------------------------------------------------------------------------------------------
# end to end on a tiny VOC folder: train 2 iterations, evaluate, write metrics + a record; resume
# ------------------------------------------------------------------------------------------------
def test_cli_end_to_end_tiny_voc(tmp_path: Path, backbone_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from eval_detection.cli import main
    from lewel_bench.records import load_records

    root = tmp_path / "VOCdevkit"
    d = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"{i:06d}" for i in range(4)]
    for i in ids:
        img = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
        img[10:40, 20:60] = 255
        Image.fromarray(img).save(d / "JPEGImages" / f"{i}.jpg")
        (d / "Annotations" / f"{i}.xml").write_text(
            "<annotation><size><width>80</width><height>64</height></size><object><name>circle</name>"
            "<difficult>0</difficult><bndbox><xmin>21</xmin><ymin>11</ymin><xmax>60</xmax><ymax>40</ymax></bndbox>"
            "</object></annotation>")
    for split in ("trainval", "test"):
        (d / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    monkeypatch.setenv("LEWEL_RESULTS_DIR", str(tmp_path / "results"))
    out = tmp_path / "out"
    opts = ["data.train=[[\"2007\",\"trainval\"]]", "solver.max_iter=2", "solver.ims_per_batch=2",
            "solver.checkpoint_period=1", "model.min_size_train=[64]", "model.min_size_test=64", "model.max_size=96",
            "model.pooler_resolution=4", "model.roi_batch_per_image=8", "model.rpn_post_nms_train=16",
            "model.rpn_post_nms_test=8", "model.rpn_pre_nms_train=100", "model.rpn_pre_nms_test=50",
            "test.precise_bn_iters=1"]
    argv = ["--config", "mini_voc_c4_24k", "--ckpt", str(backbone_file), "--data", str(root), "--out", str(out),
            "--backend", "torchvision", *opts]
    main(argv)
    import json

    res = json.loads((out / "metrics.json").read_text())
    assert set(res["metrics"]) == {"AP", "AP50", "AP75"} and res["backend"] == "torchvision"
    recs, problems = load_records(tmp_path / "results" / "records")
    assert not problems and len(recs) == 1
    r = recs[0]
    assert (r["eval"], r["protocol"], r["dataset"], r["backend"], r["method"]) == \
        ("voc_det", "c4_24k", "VOCdevkit", "torchvision", "byol")
    assert r["config"]["solver"]["max_iter"] == 2 and r["status"] == "ok"  # the record holds what ran
    assert len(r["data"]["fingerprint"]) == 64
    assert torch.load(out / "last.pth", weights_only=False)["iter"] == 2
    main(argv)  # finished run: no second record
    assert len(load_records(tmp_path / "results" / "records")[0]) == 1
