"""Detection protocols of MCL: RetinaNet R50-FPN and Mask R-CNN C4 2x (build, one step, configs mirroring
detectron2, schedules), the transfer bundle (FPN / box head) into the torchvision detectors and detectron2's
names, the supervised baseline spec, the make targets (dry runs)."""
from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import d2_cfg, tiny_detection_batch
from lewel_bench.checkpoint import BackboneError, resolve_backbone, save_backbone
from lewel_bench.config import ConfigError, load_config
from lewel_bench.models import build_backbone, build_torchvision_resnet

REPO = Path(__file__).resolve().parent.parent
D2_CONFIGS = REPO / "eval_detection" / "configs" / "detectron2"
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}


def _distinct(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor shifted by noise (running statistics too): a wrong mapping cannot pass unnoticed."""
    g = torch.Generator().manual_seed(seed)
    return {k: (v + torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v + 7)
            for k, v in sd.items()}


def _trunk(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return _distinct(build_backbone(arch).state_dict(), seed)


# ------------------------------------------------------------------------------------------------
# a transfer bundle saved from a torchvision FPN detector (stands in for a method's backbone.pth)
# ------------------------------------------------------------------------------------------------
def _tv_fpn_detector(arch: str, norm: bool = True, channels: int = 256) -> tuple[nn.Module, nn.Module]:
    """A torchvision FPN on res2-res5 and a 4conv1fc box head, random weights made distinctive."""
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

    c = {"resnet18": [64, 128, 256, 512], "resnet50": [256, 512, 1024, 2048]}[arch]
    torch.manual_seed(1)
    fpn = FeaturePyramidNetwork(c, channels, norm_layer=nn.BatchNorm2d if norm else None)
    head = FastRCNNConvFCHead((channels, 7, 7), [channels] * 4, [1024], norm_layer=nn.BatchNorm2d if norm else None)
    fpn.load_state_dict(_distinct(fpn.state_dict(), 2))
    head.load_state_dict(_distinct(head.state_dict(), 3))
    return fpn, head


def _d2_name(kind: str, k: str) -> str:
    """torchvision FPN / box-head key -> detectron2's name inside the part (written out here, independently of
    eval_detection.tv_models): inner_blocks.i -> fpn_lateral{i+2}, layer_blocks.i -> fpn_output{i+2},
    box head block i -> conv{i+1}; sub-module 0 is the conv, 1 its norm."""
    parts = k.split(".")
    if kind == "fpn":
        block, i, sub, leaf = parts
        name = {"inner_blocks": "fpn_lateral", "layer_blocks": "fpn_output"}[block] + str(int(i) + 2)
    else:
        i, sub, leaf = parts
        name = f"conv{int(i) + 1}"
    return f"{name}.{'norm.' if sub == '1' else ''}{leaf}"


def _bundle(fpn: nn.Module, head: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {"fpn": {_d2_name("fpn", k): v for k, v in fpn.state_dict().items()},
            "box_head": {_d2_name("box_head", k): v for k, v in head.state_dict().items() if not k.startswith("5.")}}


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, nn.Module, nn.Module]:
    fpn, head = _tv_fpn_detector("resnet18")
    trunk = _trunk("resnet18")
    p = tmp_path_factory.mktemp("bundle") / "backbone.pth"
    save_backbone(p, trunk, {"arch": "resnet18", "method": "mcl", "epochs": 1, "exp": "bundle_test"},
                  parts=_bundle(fpn, head))
    return p, trunk, fpn, head


TINY = dict(min_size_train=[64], max_size=96, min_size_test=64, anchor_sizes=[16, 32, 64], rpn_batch_per_image=32,
            roi_batch_per_image=8, rpn_pre_nms_train=100, rpn_post_nms_train=16, rpn_pre_nms_test=50,
            rpn_post_nms_test=8, pooler_resolution=4, detections_per_img=5,
            fpn_anchor_sizes=[8, 16, 32, 64, 128], fpn_rpn_pre_nms_train=50, fpn_rpn_post_nms_train=16,
            fpn_rpn_pre_nms_test=50, fpn_rpn_post_nms_test=8, retinanet_anchor_sizes=[8, 16, 32, 64, 128],
            retinanet_topk_candidates=50)


def test_bundle_round_trip_into_torchvision_fpn_detectors(bundle_file, caplog: pytest.LogCaptureFixture) -> None:
    from eval_detection.tv_models import backbone_keys_report, build_model

    path, trunk, fpn, head = bundle_file
    bb = resolve_backbone(path, parts=("fpn", "box_head"))
    assert sorted(bb.parts) == ["box_head", "fpn"] and len(bb.parts["fpn"]) == 48 and len(bb.parts["box_head"]) == 24
    with caplog.at_level(logging.INFO, logger="eval_detection.tv_models"):
        model = build_model("fpn", bb, num_classes=3, mask=True, **TINY)
    # trunk + 4 levels x (lateral, output) x (conv + 5 BN tensors) + 4 convs x (conv + 5 BN tensors)
    assert model.transfer == {"trunk": len(trunk), "fpn": 48, "box_head": 24}
    assert backbone_keys_report(model, bb) == {"matched": len(trunk), "total": len(trunk)}
    own = model.state_dict()
    for k, v in fpn.state_dict().items():
        assert torch.equal(own[f"backbone.fpn.{k}"], v), k
    for k, v in head.state_dict().items():
        if not k.startswith("5."):  # fc1 is not in the bundle: it stays random
            assert torch.equal(own[f"roi_heads.box_head.{k}"], v), k
    assert not torch.equal(own["roi_heads.box_head.5.weight"], head.state_dict()["5.weight"])
    assert "part fpn -> FPN lateral / output convs of levels 2-5: 48 tensors loaded" in caplog.text
    assert "part box_head -> 4-conv box head" in caplog.text and "24 tensors loaded" in caplog.text

    # RetinaNet (MCL's protocol): the trunk and FPN levels 3-5; P2 unused; P6 / P7 and the subnets stay random
    bb = resolve_backbone(path, parts=("fpn",))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="eval_detection.tv_models"):
        ret = build_model("retinanet", bb, num_classes=3, mask=False, **TINY)
    assert ret.transfer == {"trunk": len(trunk), "fpn": 36}
    assert "36 tensors loaded (12 not used by this detector, e.g. fpn_lateral2" in caplog.text
    own = ret.state_dict()
    src = fpn.state_dict()
    for i in range(3):  # torchvision's level i of the RetinaNet FPN = res{i+3} = the source FPN's block i+1
        for block in ("inner_blocks", "layer_blocks"):
            for leaf in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
                assert torch.equal(own[f"backbone.fpn.{block}.{i}.{leaf}"], src[f"{block}.{i + 1}.{leaf}"])
    fresh = build_model("retinanet", resolve_backbone(path), num_classes=3, mask=False, **TINY)
    assert fresh.transfer == {"trunk": len(trunk)}  # --transfer trunk: the parts are not even read
    assert not torch.equal(fresh.state_dict()["backbone.fpn.inner_blocks.0.0.weight"], own["backbone.fpn.inner_blocks.0.0.weight"])


def test_mismatched_bundle_is_refused_naming_the_part(tmp_path: Path) -> None:
    from eval_detection.tv_models import build_model

    trunk = _trunk("resnet18")
    meta = {"arch": "resnet18", "method": "mcl", "epochs": 1}

    def bundle(parts: dict) -> Path:
        p = tmp_path / f"b{len(list(tmp_path.iterdir()))}.pth"
        save_backbone(p, trunk, meta, parts=parts)
        return p

    plain_fpn, plain_head = _tv_fpn_detector("resnet18", norm=False)  # an FPN without norm: conv biases
    p = bundle(_bundle(plain_fpn, plain_head))
    with pytest.raises(BackboneError, match=r"transfer part 'fpn' does not match the retinanet detector.*"
                                            r"no place in the detector \(first: fpn_lateral3.bias"):
        build_model("retinanet", resolve_backbone(p, parts=("fpn",)), 3, False, **TINY)
    with pytest.raises(BackboneError, match=r"transfer part 'box_head' does not match the fpn detector"):
        build_model("fpn", resolve_backbone(p, parts=("box_head",)), 3, True, **TINY)
    narrow_fpn, head = _tv_fpn_detector("resnet18", channels=128)
    p = bundle(_bundle(narrow_fpn, head))
    with pytest.raises(BackboneError, match=r"'fpn' does not match.*shape mismatches \(first: fpn_lateral3.weight: "
                                            r"\(128, 128, 1, 1\) vs \(256, 128, 1, 1\)"):
        build_model("retinanet", resolve_backbone(p, parts=("fpn",)), 3, False, **TINY)
    fpn, head = _tv_fpn_detector("resnet18")
    parts = _bundle(fpn, head)
    parts["fpn"] = {k: v for k, v in parts["fpn"].items() if not k.startswith("fpn_output5.")}
    p = bundle(parts)
    with pytest.raises(BackboneError, match=r"'fpn' does not match.*5 of the detector's 36 tensors missing from the "
                                            r"part \(first: backbone.fpn.layer_blocks.2.0.weight"):
        build_model("retinanet", resolve_backbone(p, parts=("fpn",)), 3, False, **TINY)
    parts = _bundle(fpn, head)
    parts["fpn"]["fpn_top.weight"] = torch.zeros(1)
    p = bundle(parts)
    with pytest.raises(BackboneError, match=r"1 tensor names this part cannot hold \(first: fpn_top.weight"):
        build_model("fpn", resolve_backbone(p, parts=("fpn",)), 3, True, **TINY)
    # a part the detector has no module for (C4), a checkpoint without the part, baselines without parts
    with pytest.raises(BackboneError, match=r"transfer part 'fpn' has no module in the c4 detector"):
        build_model("c4", resolve_backbone(p, parts=("fpn",)), 3, False, **TINY)
    q = tmp_path / "trunk_only.pth"
    save_backbone(q, trunk, meta)
    with pytest.raises(BackboneError, match=r"no transfer part 'fpn' \(this checkpoint carries the trunk only\)"):
        resolve_backbone(q, parts=("fpn",))
    with pytest.raises(BackboneError, match="random-init baseline has no transfer parts"):
        resolve_backbone("random:resnet18", parts=("fpn",))


def test_transfer_choice_per_detector() -> None:
    from eval_detection.protocol import CONFIG_DIR, TRANSFER_PARTS, transfer_parts
    from eval_detection.tv_models import BUILDERS, BUNDLE_TARGETS

    assert set(TRANSFER_PARTS) == set(BUILDERS) == set(BUNDLE_TARGETS)
    assert all(set(TRANSFER_PARTS[a]) == set(BUNDLE_TARGETS[a]) for a in BUILDERS)
    ret, fpn, c4 = (load_config(n, CONFIG_DIR) for n in ("coco_retinanet_1x", "coco_fpn_1x", "coco_c4_2x"))
    assert transfer_parts(ret, "bundle", "x") == ("fpn",) and transfer_parts(fpn, "bundle", "x") == ("fpn", "box_head")
    assert transfer_parts(c4, "trunk", "x") == () and transfer_parts(ret, "trunk", "x") == ()
    with pytest.raises(ConfigError, match=r"--transfer bundle with config coco_c4_2x \(arch c4\)"):
        transfer_parts(c4, "bundle", "config coco_c4_2x")
    with pytest.raises(ConfigError, match="expected one of trunk, bundle"):
        transfer_parts(ret, "neck", "x")


# ------------------------------------------------------------------------------------------------
# detectron2's names (what its DetectionCheckpointer matches), checked on the names, without detectron2
# ------------------------------------------------------------------------------------------------
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _d2_trunk_names(arch: str, prefix: str = "backbone.bottom_up.") -> list[str]:
    """detectron2's ResNet (BasicStem + res2-res5 of BottleneckBlock / BasicBlock, SyncBN / BN norms)."""
    names = [f"{prefix}stem.conv1.weight", *(f"{prefix}stem.conv1.norm.{b}" for b in _BN)]
    convs = 3 if arch == "resnet50" else 2
    for s, n in enumerate(BLOCKS[arch], start=2):
        for b in range(n):
            for c in range(1, convs + 1):
                names += [f"{prefix}res{s}.{b}.conv{c}.weight", *(f"{prefix}res{s}.{b}.conv{c}.norm.{x}" for x in _BN)]
            if b == 0 and (s > 2 or arch == "resnet50"):
                names += [f"{prefix}res{s}.0.shortcut.weight", *(f"{prefix}res{s}.0.shortcut.norm.{x}" for x in _BN)]
    return names


def _d2_retinanet_names(arch: str) -> list[str]:
    """detectron2's RetinaNet R-FPN (FPN.NORM SyncBN): backbone.fpn_lateral{3,4,5} / fpn_output{3,4,5} (+ .norm),
    backbone.top_block.p6 / p7, head.cls_subnet.{0,2,4,6}, head.bbox_subnet.*, head.cls_score, head.bbox_pred."""
    names = _d2_trunk_names(arch)
    for lvl in (3, 4, 5):
        for kind in ("lateral", "output"):
            names += [f"backbone.fpn_{kind}{lvl}.weight", *(f"backbone.fpn_{kind}{lvl}.norm.{b}" for b in _BN)]
    names += [f"backbone.top_block.p{i}.{w}" for i in (6, 7) for w in ("weight", "bias")]
    names += [f"head.{sub}.{i}.{w}" for sub in ("cls_subnet", "bbox_subnet") for i in (0, 2, 4, 6) for w in ("weight", "bias")]
    names += [f"head.{h}.{w}" for h in ("cls_score", "bbox_pred") for w in ("weight", "bias")]
    return names


def _d2_mask_rcnn_fpn_names(arch: str) -> list[str]:
    """detectron2's Mask R-CNN R-FPN (SyncBN FPN and heads): fpn_lateral{2..5} / fpn_output{2..5} (+ .norm),
    the 4conv1fc box head roi_heads.box_head.conv{1..4} (+ .norm) and fc1, the RPN, predictor and mask head."""
    names = _d2_trunk_names(arch)
    for lvl in (2, 3, 4, 5):
        for kind in ("lateral", "output"):
            names += [f"backbone.fpn_{kind}{lvl}.weight", *(f"backbone.fpn_{kind}{lvl}.norm.{b}" for b in _BN)]
    names += [f"proposal_generator.rpn_head.{m}.{w}" for m in ("conv", "objectness_logits", "anchor_deltas")
              for w in ("weight", "bias")]
    for k in range(1, 5):
        names += [f"roi_heads.box_head.conv{k}.weight", *(f"roi_heads.box_head.conv{k}.norm.{b}" for b in _BN)]
        names += [f"roi_heads.mask_head.mask_fcn{k}.weight", *(f"roi_heads.mask_head.mask_fcn{k}.norm.{b}" for b in _BN)]
    names += [f"roi_heads.box_head.fc1.{w}" for w in ("weight", "bias")]
    names += [f"roi_heads.box_predictor.{m}.{w}" for m in ("cls_score", "bbox_pred") for w in ("weight", "bias")]
    names += [f"roi_heads.mask_head.{m}.{w}" for m in ("deconv", "predictor") for w in ("weight", "bias")]
    return names


def _exported(path: Path, parts: tuple[str, ...]) -> tuple[dict, dict]:
    from lewel_bench.transfer.detectron2 import to_detectron2

    bb = resolve_backbone(path, parts=parts)
    obj = to_detectron2(bb, parts)
    part_of = {}
    for name in obj["model"]:
        part_of[name] = ("fpn" if name.startswith("fpn_") else "box_head" if name.startswith("box_head.") else "trunk")
    return {k: None for k in obj["model"]}, part_of


def test_bundle_export_matches_detectron2_module_names(bundle_file, tmp_path: Path) -> None:
    from eval_detection.detectron2_backend import d2_transfer_report
    from lewel_bench.transfer.detectron2 import convert

    path, trunk, fpn, head = bundle_file
    n_trunk = len(trunk)
    # the converted file holds the parts' tensors as they are, under detectron2's names (box head: its prefix)
    with open(convert(path, tmp_path / "bundle.pkl", parts=("fpn", "box_head")), "rb") as f:
        model = pickle.load(f)["model"]
    for k, v in fpn.state_dict().items():
        assert np.array_equal(model[_d2_name("fpn", k)], v.numpy()), k
    for k, v in head.state_dict().items():
        if not k.startswith("5."):
            assert np.array_equal(model["box_head." + _d2_name("box_head", k)], v.numpy()), k
    assert len(model) == n_trunk + 48 + 24
    ckpt, part_of = _exported(path, ("fpn",))
    ret = {k: None for k in _d2_retinanet_names("resnet18")}
    # the FPN levels 3-5 (12 tensors each), not level 2 (detectron2 leaves it unused, as MCL's protocol)
    assert d2_transfer_report(ret, ckpt, part_of, ("fpn",)) == {"trunk": n_trunk, "fpn": 36}
    ckpt, part_of = _exported(path, ("fpn", "box_head"))
    mask = {k: None for k in _d2_mask_rcnn_fpn_names("resnet18")}
    assert d2_transfer_report(mask, ckpt, part_of, ("fpn", "box_head")) == {"trunk": n_trunk, "fpn": 48, "box_head": 24}
    # the trunk alone into RetinaNet: every trunk tensor has its detectron2 module
    ckpt, part_of = _exported(path, ())
    assert d2_transfer_report(ret, ckpt, part_of, ()) == {"trunk": n_trunk}
    # refused: a bundle without norms (no .norm tensors, biases instead), shapes, a trunk that does not fit
    plain_fpn, plain_head = _tv_fpn_detector("resnet18", norm=False)
    p = tmp_path / "plain.pth"
    save_backbone(p, trunk, {"arch": "resnet18", "method": "mcl"}, parts=_bundle(plain_fpn, plain_head))
    ckpt, part_of = _exported(p, ("fpn", "box_head"))
    with pytest.raises(BackboneError, match=r"transfer part 'fpn' does not match the detectron2 model: 32 of its 40"):
        d2_transfer_report(mask, ckpt, part_of, ("fpn",))
    with pytest.raises(BackboneError, match=r"'box_head' does not match the detectron2 model: 16 of its 20"):
        d2_transfer_report(mask, ckpt, part_of, ("box_head",))
    ckpt, part_of = _exported(path, ("fpn",))
    shaped = {k: ((256, 64, 1, 1) if k == "backbone.fpn_lateral3.weight" else None) for k in ret}
    with pytest.raises(BackboneError, match=r"fpn tensor fpn_lateral3.weight has shape"):
        d2_transfer_report(shaped, {k: (256, 128, 1, 1) if k == "fpn_lateral3.weight" else None for k in ckpt},
                           part_of, ("fpn",))
    with pytest.raises(BackboneError, match=r"trunk tensors match no detectron2 tensor \(first: res5"):
        d2_transfer_report({k: None for k in ret if ".res5." not in k}, ckpt, part_of, ())


# ------------------------------------------------------------------------------------------------
# RetinaNet and C4 2x: build from a converted checkpoint (zero missing trunk keys) and train one step
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted_r50(tmp_path_factory: pytest.TempPathFactory):
    """A ResNet-50 backbone.pth converted to detectron2's .pkl and read back (what a detectron2 run loads)."""
    from lewel_bench.checkpoint import Backbone
    from lewel_bench.transfer.detectron2 import convert, load_detectron2_pkl

    d = tmp_path_factory.mktemp("r50")
    sd = _trunk("resnet50")
    save_backbone(d / "backbone.pth", sd, {"arch": "resnet50", "method": "mcl", "epochs": 1})
    pkl = convert(d / "backbone.pth", d / "bb.pkl")
    return sd, Backbone(state_dict=load_detectron2_pkl(pkl), arch="resnet50", path=str(pkl))


@pytest.mark.parametrize("config", ["coco_retinanet_1x", "coco_c4_2x"])
def test_new_protocols_build_from_converted_checkpoint_and_train_one_step(converted_r50, config: str) -> None:
    from eval_detection.protocol import CONFIG_DIR
    from eval_detection.tv_models import backbone_keys_report, build_model

    cfg = load_config(config, CONFIG_DIR)
    sd, bb = converted_r50
    torch.manual_seed(0)
    model = build_model(cfg["arch"], bb, num_classes=3, mask=cfg["mask"], **{**cfg["model"], **TINY})
    assert backbone_keys_report(model, bb) == {"matched": len(sd), "total": len(sd)}  # ZERO missing trunk tensors
    assert model.transfer == {"trunk": len(sd)}
    if cfg["arch"] == "retinanet":
        fpn = model.backbone.fpn
        assert [b[0].in_channels for b in fpn.inner_blocks] == [512, 1024, 2048]  # res3-res5
        assert all(isinstance(b[1], nn.BatchNorm2d) for b in fpn.inner_blocks)  # FPN.NORM
        assert fpn.extra_blocks.p6.in_channels == 2048 and not fpn.extra_blocks.use_P5  # P6 from C5 (detectron2)
        assert model.anchor_generator.num_anchors_per_location() == [9] * 5
        assert model.head.classification_head.num_classes == 3  # K sigmoid classes, no background
        bias = model.head.classification_head.cls_logits.bias
        assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01))
        assert model.head.regression_head._loss_type == "l1"
        assert not any(isinstance(x, (nn.GroupNorm, nn.BatchNorm2d)) for x in model.head.modules())  # NORM ""
        assert (model.proposal_matcher.low_threshold, model.proposal_matcher.high_threshold) == (0.4, 0.5)
        assert model.detections_per_img == 5 and model.topk_candidates == 50
    imgs, targets = tiny_detection_batch(cfg["mask"])
    model.train()
    losses = model(imgs, targets)
    expect = {"classification", "bbox_regression"} if cfg["arch"] == "retinanet" else \
        {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"}
    assert set(losses) == expect
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    before = model.backbone.body.conv1.weight.clone() if hasattr(model.backbone, "body") else model.backbone.conv1.weight.clone()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    after = model.backbone.body.conv1.weight if hasattr(model.backbone, "body") else model.backbone.conv1.weight
    assert not torch.equal(before, after)  # FREEZE_AT 0: the trunk is fine-tuned
    model.eval()
    with torch.no_grad():
        out = model(imgs)
    assert len(out) == 2 and all(set(o) >= {"boxes", "scores", "labels"} for o in out)
    assert all(((o["labels"] >= 1) & (o["labels"] <= 3)).all() for o in out)  # 1-based, as the R-CNN models


def test_retinanet_anchor_sizes_are_detectron2s() -> None:
    from eval_detection.tv_models import MODEL_DEFAULTS, retinanet_anchor_sizes

    sizes = retinanet_anchor_sizes(MODEL_DEFAULTS)
    want = [[x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in (32, 64, 128, 256, 512)]
    assert np.allclose(np.array(sizes), np.array(want))
    d2 = d2_cfg("coco_RetinaNet_R_50_FPN_1x.yaml")["MODEL"]["ANCHOR_GENERATOR"]["SIZES"]
    assert np.allclose(np.array(d2), np.array(want))


def test_retinanet_head_norm_option() -> None:
    from eval_detection.tv_models import build_model
    from lewel_bench.checkpoint import Backbone

    bb = Backbone(state_dict=build_backbone("resnet18").state_dict(), arch="resnet18", path="x")
    model = build_model("retinanet", bb, 3, False, **{**TINY, "retinanet_head_norm": "gn"})
    norms = [x for x in model.head.classification_head.conv.modules() if isinstance(x, nn.GroupNorm)]
    assert len(norms) == 4 and all(n.num_groups == 32 for n in norms)  # detectron2's RETINANET.NORM "GN"
    with pytest.raises(ConfigError, match="model.retinanet_head_norm 'bn'"):
        build_model("retinanet", bb, 3, False, **{**TINY, "retinanet_head_norm": "bn"})
    with pytest.raises(ConfigError, match="RetinaNet has no mask head"):
        build_model("retinanet", bb, 3, True, **TINY)


def test_max_size_train_applies_to_training_only() -> None:
    from eval_detection.tv_models import build_model, set_test_size
    from lewel_bench.checkpoint import Backbone

    bb = Backbone(state_dict=build_backbone("resnet18").state_dict(), arch="resnet18", path="x")
    model = build_model("c4", bb, 3, True, **{**TINY, "min_size_train": [64], "max_size": 96, "max_size_train": 80})
    set_test_size(model, training=True)
    assert model.transform.max_size == 80
    set_test_size(model, training=False)
    assert (model.transform.max_size, model.transform.min_size) == (96, (64,))


# ------------------------------------------------------------------------------------------------
# configs: detectron2 files, their torchvision mirrors, schedules
# ------------------------------------------------------------------------------------------------
def test_retinanet_detectron2_configs_follow_mcl() -> None:
    for name, iters, steps in (("coco_RetinaNet_R_50_FPN_1x.yaml", 90000, [60000, 80000]),
                               ("coco_RetinaNet_R_50_FPN_2x.yaml", 180000, [120000, 160000]),
                               ("coco_RetinaNet_R_50_FPN_6x.yaml", 540000, [360000, 480000])):
        c = d2_cfg(name)
        m = c["MODEL"]
        assert m["META_ARCHITECTURE"] == "RetinaNet" and m["BACKBONE"]["NAME"] == "build_retinanet_resnet_fpn_backbone"
        assert m["RESNETS"]["OUT_FEATURES"] == ["res3", "res4", "res5"] == m["FPN"]["IN_FEATURES"]
        assert m["RESNETS"]["NORM"] == "SyncBN" and m["FPN"]["NORM"] == "SyncBN" and m["BACKBONE"]["FREEZE_AT"] == 0
        assert m["RESNETS"]["STRIDE_IN_1X1"] is False and m["RESNETS"]["DEPTH"] == 50
        assert m["PIXEL_MEAN"] == [123.675, 116.28, 103.53] and m["PIXEL_STD"] == [58.395, 57.12, 57.375]
        assert c["INPUT"]["FORMAT"] == "RGB" and c["TEST"]["PRECISE_BN"]["ENABLED"] is True
        r = m["RETINANET"]
        assert r["IOU_THRESHOLDS"] == [0.4, 0.5] and r["IOU_LABELS"] == [0, -1, 1] and r["SMOOTH_L1_LOSS_BETA"] == 0.0
        assert m["ANCHOR_GENERATOR"]["ASPECT_RATIOS"] == [[0.5, 1.0, 2.0]]
        assert c["SOLVER"]["IMS_PER_BATCH"] == 16 and c["SOLVER"]["BASE_LR"] == 0.01
        assert c["SOLVER"]["MAX_ITER"] == iters and c["SOLVER"]["STEPS"] == steps
        assert c["INPUT"]["MIN_SIZE_TRAIN"] == [640, 672, 704, 736, 768, 800]
    c4 = d2_cfg("coco_R_50_C4_2x.yaml")
    assert c4["MODEL"]["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm" and c4["MODEL"]["MASK_ON"] is True
    assert c4["SOLVER"]["MAX_ITER"] == 180000 and c4["SOLVER"]["STEPS"] == [120000, 160000]


def test_new_detectron2_configs_merge_into_get_cfg() -> None:
    pytest.importorskip("detectron2", reason="detectron2 is not installed here (not on the package registries; "
                                            "see eval_detection/detectron2_backend.py); YAML checked by the tests above")
    from eval_detection.detectron2_backend import d2_model_shapes, setup_cfg

    for name in ("coco_R_50_C4_2x.yaml", "coco_RetinaNet_R_50_FPN_1x.yaml", "coco_RetinaNet_R_50_FPN_2x.yaml",
                 "coco_RetinaNet_R_50_FPN_6x.yaml"):
        cfg = setup_cfg(D2_CONFIGS / name, [])
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    names = set(d2_model_shapes(D2_CONFIGS / "coco_RetinaNet_R_50_FPN_1x.yaml", []))
    assert names == set(_d2_retinanet_names("resnet50"))
    assert set(d2_model_shapes(D2_CONFIGS / "coco_R_50_FPN_1x.yaml", [])) == set(_d2_mask_rcnn_fpn_names("resnet50"))


def test_new_torchvision_configs_mirror_detectron2_and_schedules_resolve() -> None:
    from eval_detection.protocol import CONFIG_DIR, resolve_steps

    pairs = {"coco_c4_2x": "coco_R_50_C4_2x.yaml", "coco_retinanet_1x": "coco_RetinaNet_R_50_FPN_1x.yaml",
             "coco_retinanet_2x": "coco_RetinaNet_R_50_FPN_2x.yaml", "coco_retinanet_6x": "coco_RetinaNet_R_50_FPN_6x.yaml"}
    for tv, d2 in pairs.items():
        c, d = load_config(tv, CONFIG_DIR), d2_cfg(d2)
        assert c["detectron2_config"] == d2
        assert c["solver"]["max_iter"] == d["SOLVER"]["MAX_ITER"]
        assert resolve_steps(c["solver"], tv) == list(d["SOLVER"]["STEPS"])
        assert c["solver"]["ims_per_batch"] == d["SOLVER"]["IMS_PER_BATCH"] and c["solver"]["base_lr"] == d["SOLVER"]["BASE_LR"]
        assert c["model"]["min_size_train"] == list(d["INPUT"]["MIN_SIZE_TRAIN"])
        assert c["mask"] == d["MODEL"].get("MASK_ON", False)
    ret = load_config("coco_retinanet_1x", CONFIG_DIR)
    assert (ret["arch"], ret["mask"], ret["model"]["fpn_norm"], ret["model"]["detections_per_img"]) == \
        ("retinanet", False, "bn", 100)
    # the step rules: 6x by the 1x fractions (the chosen rule), the model-zoo 3x rule on offer, explicit steps
    six = load_config("coco_retinanet_6x", CONFIG_DIR)
    assert six["solver"]["steps"] is None and six["solver"]["steps_rule"] == "scale_1x"
    assert resolve_steps(six["solver"], "6x") == [360000, 480000]
    assert resolve_steps({**six["solver"], "steps_rule": "last_60k_20k"}, "6x") == [480000, 520000]
    assert resolve_steps({"max_iter": 270000, "steps": None, "steps_rule": "last_60k_20k"}, "3x") == [210000, 250000]
    assert resolve_steps({"max_iter": 90000, "steps": None, "steps_rule": "scale_1x"}, "1x") == [60000, 80000]
    assert resolve_steps({"max_iter": 400, "steps": None, "steps_rule": "scale_1x"}, "mini") == [267, 356]
    assert resolve_steps(load_config("coco_retinanet_2x", CONFIG_DIR)["solver"], "2x") == [120000, 160000]
    for mini, full in (("mini_coco_retinanet_1x", "retinanet_1x"), ("mini_coco_retinanet_2x", "retinanet_2x"),
                       ("mini_coco_retinanet_6x", "retinanet_6x"), ("mini_coco_c4_2x", "c4_2x")):
        c = load_config(mini, CONFIG_DIR)
        assert c["dataset"] == "mini" and c["protocol"] == full
    assert resolve_steps(load_config("mini_coco_retinanet_6x", CONFIG_DIR)["solver"], "m") == [4000, 5333]
    with pytest.raises(ConfigError, match=r"solver.steps \[1, 2\] and solver.steps_rule scale_1x: give one"):
        resolve_steps({**six["solver"], "steps": [1, 2]}, "x")
    with pytest.raises(ConfigError, match="solver.steps is null and solver.steps_rule is explicit"):
        resolve_steps({"max_iter": 10, "steps": None}, "x")
    with pytest.raises(ConfigError, match="max_iter > 60000"):
        resolve_steps({"max_iter": 400, "steps": None, "steps_rule": "last_60k_20k"}, "x")
    with pytest.raises(ConfigError, match="solver.steps_rule"):
        load_config("coco_retinanet_6x", CONFIG_DIR, ["solver.steps_rule=cosine"])
    # MCL's C4 training size limit is a key of every COCO config, overridable (both backends)
    c = load_config("coco_c4_2x", CONFIG_DIR, ["model.max_size_train=1200"])
    assert c["model"]["max_size_train"] == 1200 and c["model"]["max_size"] == 1333


def test_detectron2_overrides_for_retinanet_and_max_size_train(tmp_path: Path) -> None:
    from eval_detection.detectron2_backend import d2_opts_for, depth_opts
    from eval_detection.protocol import CONFIG_DIR, resolve_steps

    assert depth_opts("resnet50") == ["MODEL.RESNETS.DEPTH", "50"]
    assert depth_opts("resnet18") == ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]

    cfg = load_config("mini_coco_retinanet_6x", CONFIG_DIR)
    cfg["solver"]["steps"] = resolve_steps(cfg["solver"], "mini_coco_retinanet_6x")
    opts = d2_opts_for(cfg, list("abc"), tmp_path / "w.pkl", tmp_path, 3)
    kv = dict(zip(opts[::2], opts[1::2]))
    assert kv["MODEL.RETINANET.NUM_CLASSES"] == "3" and "MODEL.ROI_HEADS.NUM_CLASSES" not in kv
    assert kv["SOLVER.MAX_ITER"] == "6000" and kv["SOLVER.STEPS"] == "(4000, 5333)"
    assert kv["MODEL.RETINANET.NORM"] == "GN"  # the mini configs' subnets (model.retinanet_head_norm: gn)
    assert ast.literal_eval(kv["MODEL.ANCHOR_GENERATOR.SIZES"])[0] == pytest.approx([16, 16 * 2 ** (1 / 3), 16 * 2 ** (2 / 3)])
    assert "MODEL.ROI_BOX_HEAD.NORM" not in kv and "MODEL.RPN.PRE_NMS_TOPK_TRAIN" not in kv  # no RoI head, no RPN
    if not torch.cuda.is_available():
        assert kv["MODEL.RESNETS.NORM"] == kv["MODEL.FPN.NORM"] == "BN"
    c4 = load_config("coco_c4_2x", CONFIG_DIR, ["model.max_size_train=1200"])
    kv = dict(zip(*[iter(d2_opts_for(c4, list("ab"), tmp_path / "w.pkl", tmp_path, 0))] * 2))
    assert kv["INPUT.MAX_SIZE_TRAIN"] == "1200" and kv["MODEL.ROI_HEADS.NUM_CLASSES"] == "2"
    assert kv["SOLVER.STEPS"] == "(120000, 160000)"
    assert kv["INPUT.MIN_SIZE_TRAIN"] == "(640, 672, 704, 736, 768, 800)"  # the paper's sizes, from the protocol config


# ------------------------------------------------------------------------------------------------
# the supervised baseline: a torchvision ImageNet classifier's weights the user provides
# ------------------------------------------------------------------------------------------------
def test_supervised_spec(tmp_path: Path) -> None:
    net = build_torchvision_resnet("resnet18")
    sd = _distinct(net.state_dict(), 5)
    f = tmp_path / "resnet18-imagenet.pth"
    torch.save(sd, f)
    bb = resolve_backbone(f"supervised:{f}")
    assert bb.meta["method"] == "supervised" and bb.meta["epochs"] is None and bb.arch == "resnet18"
    assert "fc.weight" not in bb.state_dict and torch.equal(bb.state_dict["layer4.1.conv2.weight"], sd["layer4.1.conv2.weight"])
    from lewel_bench.checkpoint import sha256_file
    from lewel_bench.records import record_for_backbone

    assert bb.sha256 == sha256_file(f)
    rec = record_for_backbone(bb, eval="coco", protocol="c4_1x", metrics={"bbox_AP": 1.0}, seed=0, config={},
                              start_time="t")
    assert (rec["method"], rec["pretrain_exp"], rec["pretrain_epochs"], rec["transfer"]) == \
        ("supervised", "supervised", None, {"trunk": len(bb.state_dict)})
    # under a prefix (a DataParallel save) too
    g = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, g)
    assert resolve_backbone(f"supervised:{g}").meta["method"] == "supervised"
    # refused: no classifier, a classifier of other classes, a lewel-bench pretraining output, parts
    h = tmp_path / "nofc.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("fc.")}, h)
    with pytest.raises(BackboneError, match=r"nofc.pth: expected a torchvision ImageNet classifier.*found no fc.weight"):
        resolve_backbone(f"supervised:{h}")
    torch.save(build_torchvision_resnet("resnet18", num_classes=10).state_dict(), h)
    with pytest.raises(BackboneError, match=r"found fc.weight of shape \(10, 512\)"):
        resolve_backbone(f"supervised:{h}")
    save_backbone(h, build_backbone("resnet18").state_dict(), {"arch": "resnet18", "method": "byol"})
    with pytest.raises(BackboneError, match=r"lewel-bench backbone checkpoint \(method 'byol'\), not supervised"):
        resolve_backbone(f"supervised:{h}")
    with pytest.raises(BackboneError, match="supervised baseline has no transfer parts"):
        resolve_backbone(f"supervised:{f}", parts=("fpn",))
    with pytest.raises(BackboneError, match="not found"):
        resolve_backbone(f"supervised:{tmp_path / 'missing.pth'}")


# ------------------------------------------------------------------------------------------------
# end to end: RetinaNet with --transfer bundle on the tiny COCO data, a record with the per-part counts
# ------------------------------------------------------------------------------------------------
def test_cli_retinanet_bundle_end_to_end(mini_data: Path, bundle_file, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_detection.cli import main
    from lewel_bench.records import load_records

    path, trunk, _, _ = bundle_file
    monkeypatch.setenv("LEWEL_RESULTS_DIR", str(tmp_path / "results"))
    opts = ["solver.max_iter=2", "solver.checkpoint_period=1", "model.min_size_train=[64]", "model.min_size_test=64",
            "model.max_size=96", "test.precise_bn_iters=1", "test.max_images=3"]
    base = ["--config", "mini_coco_retinanet_1x", "--ckpt", str(path), "--data", str(mini_data / "coco"),
            "--backend", "torchvision"]
    main([*base, "--out", str(tmp_path / "bundle"), "--transfer", "bundle", *opts])
    main([*base, "--out", str(tmp_path / "trunk"), *opts])
    recs = sorted(load_records(tmp_path / "results" / "records")[0], key=lambda r: len(r["transfer"]))
    assert [r["transfer"] for r in recs] == [{"trunk": len(trunk)}, {"trunk": len(trunk), "fpn": 36}]
    assert all((r["eval"], r["protocol"], r["method"], r["status"]) == ("coco", "retinanet_1x", "mcl", "ok") for r in recs)
    assert set(recs[0]["metrics"]) == {"bbox_AP", "bbox_AP50", "bbox_AP75"}
    assert recs[0]["run_id"] != recs[1]["run_id"] and recs[0]["group"] != recs[1]["group"]
    ident = json.loads((tmp_path / "bundle" / "identity.json").read_text())["identity"]
    assert ident["extra"] == {"backend": "torchvision", "transfer": "bundle"}
    assert json.loads((tmp_path / "trunk" / "identity.json").read_text())["identity"]["extra"] == {"backend": "torchvision"}
    assert json.loads((tmp_path / "bundle" / "metrics.json").read_text())["transfer"] == {"trunk": len(trunk), "fpn": 36}
    with pytest.raises(SystemExit, match=r"eval_detection: --transfer bundle with config mini_coco_c4_2x \(arch c4\)"):
        main(["--config", "mini_coco_c4_2x", "--ckpt", str(path), "--data", str(mini_data / "coco"),
              "--out", str(tmp_path / "c4"), "--transfer", "bundle"])


# ------------------------------------------------------------------------------------------------
# make targets (dry runs: which config runs, with which transfer; refused combinations)
# ------------------------------------------------------------------------------------------------
def _make_n(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LEWEL_RUNS_DIR"}
    return subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def test_make_eval_coco_dry_runs() -> None:
    for args, config, extra in ((("ARCH=retinanet", "SCHED=6x"), "mini_coco_retinanet_6x", "--transfer trunk"),
                                (("ARCH=retinanet", "SCHED=1x", "TRANSFER=bundle"), "mini_coco_retinanet_1x",
                                 "--transfer bundle"),
                                (("ARCH=c4", "SCHED=2x", "MAX_SIZE_TRAIN=1200"), "mini_coco_c4_2x",
                                 "model.max_size_train=1200"),
                                (("ARCH=c4", "SCHED=1x", "DATA=/coco"), "coco_c4_1x", "--data /coco"),
                                (("ARCH=retinanet", "SCHED=2x", "DATA=/coco", "CKPT=supervised:/w/r50.pth"),
                                 "coco_retinanet_2x", "--ckpt supervised:/w/r50.pth")):
        r = _make_n("eval-coco", "EXP=mcl", *args)
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.replace('"', "").splitlines() if "eval_detection" in ln)  # the recipes quote every path (a path may hold spaces): compared without the quotes
        assert f"config {config} " in line and f"--config {config} " in line and extra in line, line
    for args, msg in ((("ARCH=c4", "SCHED=6x"), "ARCH-SCHED must be one of"),
                      (("ARCH=retinanet", "SCHED=3x"), "got retinanet-3x"),
                      (("ARCH=fpn", "TRANSFER=neck"), "TRANSFER must be trunk or bundle, got 'neck'")):
        r = _make_n("eval-coco", *args)
        assert r.returncode != 0 and msg in r.stderr, r.stderr
