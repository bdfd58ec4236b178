"""Segmentation transfer: the mmseg converter and FCN runs through mmseg's real Runner.

Everything here is real mmsegmentation / mmengine code on a tiny VOC2012-layout set rendered with the
mini generator (no mocks, no downloads): the converted checkpoint loads into the model built from our
config by mmseg's registry; one training iteration, the test, the record, the no-op re-run and the
mmengine resume; the deep-stem and empty / partial refusals.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from eval_segmentation import cli
from lewel_bench.checkpoint import BackboneError, save_backbone, sha256_file
from lewel_bench.data.mini import DEFAULT_SIZES, SHAPE_CLASSES, write_voc
from lewel_bench.models import build_backbone
from lewel_bench.transfer.mmseg import (
    ConversionError,
    convert_state_dict,
    convert_to_mmseg,
)

MINI_CFG = cli.CONFIG_DIR / cli.CONFIGS["mini"][50]
FULL_CFG = cli.CONFIG_DIR / cli.CONFIGS["voc12aug"][50]


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    """A VOCdevkit with 3 train, 2 val, 2 aug images (64-96 px) in the mini generator's VOC2012 layout."""
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    sizes = {**DEFAULT_SIZES, "det_min_size": 64, "det_max_size": 96, "max_objects": 2}
    write_voc(root / "VOC2012", 2012, seed=0, splits={"train": 3, "val": 2, "aug": 2}, det=sizes)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A backbone.pth as pretraining writes it (seeded weights, non-trivial BN statistics)."""
    torch.manual_seed(1)
    net = build_backbone("resnet50")
    sd = net.state_dict()
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var")):
            v.copy_(torch.rand_like(v) + 0.5)
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    save_backbone(path, sd, {"method": "byol", "exp": "unit_byol", "epochs": 3, "arch": "resnet50"})
    return path


TINY_CFG = """
# the mini config at 64 px (1/8 of the protocol's sizes) so a Runner iteration is cheap on a CPU
_base_ = [{mini!r}]
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
_tiny = dict(type='BaseSegDataset', data_root='unset', metainfo={{{{_base_.metainfo}}}}, img_suffix='.jpg',
             seg_map_suffix='.png', data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
             ann_file='ImageSets/Segmentation/aug.txt')
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(type='ConcatDataset', datasets=[dict(**_tiny, pipeline=train_pipeline)], _delete_=True))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
"""


def build_model_from_config(cfg_path: Path, checkpoint: Path):
    """mmseg's EncoderDecoder built from our config file by mmseg's registry, weights initialised."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(cfg_path))
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(checkpoint))
    init_default_scope("mmseg")
    from mmseg.registry import MODELS

    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def test_configs_follow_the_protocol():
    from mmengine.config import Config

    full = Config.fromfile(str(FULL_CFG))
    bb = full.model.backbone
    assert bb.type == "ResNet" and bb.depth == 50 and full.model.pretrained is None
    assert tuple(bb.dilations) == (1, 1, 2, 4) and tuple(bb.strides) == (1, 2, 1, 1)
    assert bb.init_cfg["type"] == "Pretrained" and bb.norm_cfg["type"] == "SyncBN"
    assert full.total_batch_size == 16 and full.train_cfg.max_iters == 20000
    assert tuple(full.crop_size) == (512, 512)
    assert full.optim_wrapper.optimizer == dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005)
    assert full.param_scheduler[0]["type"] == "PolyLR" and full.param_scheduler[0]["end"] == 20000
    assert full.model.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert full.model.data_preprocessor.std == [58.395, 57.12, 57.375] and full.model.data_preprocessor.bgr_to_rgb
    seg_maps = [d.data_prefix["seg_map_path"] for d in full.train_dataloader.dataset.datasets]
    assert seg_maps == ["SegmentationClass", "SegmentationClassAug"]  # train + aug
    assert full.test_evaluator["type"] == "PerClassIoUMetric"
    mini = Config.fromfile(str(MINI_CFG))
    assert mini.lewel_protocol == "fcn_d8_20k" and mini.lewel_dataset == "mini"
    assert tuple(mini.train_dataloader.dataset.datasets[0].metainfo["classes"]) == ("background",) + SHAPE_CLASSES
    assert tuple(mini.test_dataloader.dataset.metainfo["classes"]) == ("background",) + SHAPE_CLASSES
    assert mini.model.decode_head.num_classes == 11 == mini.model.auxiliary_head.num_classes
    assert mini.model.backbone.type == "ResNet" and mini.model.backbone.norm_cfg["type"] == "BN"


def test_converted_checkpoint_loads_into_mmseg_model(pretrained, tmp_path, monkeypatch):
    # the converted file is plain tensors + JSON-able meta: loads under torch's weights-only default
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    out, _bb = convert_to_mmseg(pretrained, tmp_path / "backbone_mmseg.pth")
    converted = torch.load(out, map_location="cpu")
    assert converted["meta"]["method"] == "byol" and converted["meta"]["source_sha256"] == sha256_file(pretrained)
    _, model = build_model_from_config(FULL_CFG, out)
    target = model.backbone.state_dict()
    assert set(target) == set(converted["state_dict"])  # zero missing, zero unexpected backbone keys
    source = torch.load(pretrained, map_location="cpu")["state_dict"]
    for k, v in target.items():
        ref = source.get(k, converted["state_dict"][k])  # num_batches_tracked may be absent in the source
        assert torch.equal(v, ref), k
    assert not torch.equal(model.backbone.conv1.weight, build_backbone("resnet50").conv1.weight)


def test_mini_config_follows_the_backbone_depth(tmp_path):
    """`--config mini` picks the ResNet-18 variant for the mini pretraining's backbones; it loads with zero
    missing keys, and a config whose depth does not match the checkpoint is refused by name."""
    assert cli.config_path("mini", 18).name == "fcn_r18-d8_mini.py"
    assert cli.config_path("mini", 50) == MINI_CFG
    with pytest.raises(cli.SegmentationError, match="no ResNet-18 variant"):
        cli.config_path("voc12aug", 18)
    torch.manual_seed(2)
    src = tmp_path / "r18.pth"
    save_backbone(src, build_backbone("resnet18").state_dict(), {"method": "lewel_m", "arch": "resnet18"})
    out, _ = convert_to_mmseg(src, tmp_path / "r18_mmseg.pth")
    assert torch.load(out, map_location="cpu")["meta"]["depth"] == 18
    cfg, model = build_model_from_config(cli.config_path("mini", 18), out)
    assert cfg.model.backbone.depth == 18
    converted = torch.load(out, map_location="cpu")["state_dict"]
    assert set(model.backbone.state_dict()) == set(converted)
    assert all(torch.equal(v, converted[k]) for k, v in model.backbone.state_dict().items())


def test_deep_stem_checkpoint_is_refused(tmp_path):
    from lewel_bench.transfer.mmcv_ops import install

    install()
    from mmseg.models.backbones import ResNetV1c

    path = tmp_path / "resnet50_v1c.pth"
    torch.save({"state_dict": ResNetV1c(depth=50).state_dict(), "meta": {}}, path)
    with pytest.raises(ConversionError, match=r"deep-stem.*ResNetV1c.*7x7") as e:
        convert_to_mmseg(path, tmp_path / "out.pth")
    assert "stem.0.weight" in str(e.value)
    assert not (tmp_path / "out.pth").exists()
    with pytest.raises(SystemExit, match="deep-stem"):  # the evaluation refuses it before any training
        cli.main(["--ckpt", str(path), "--out", str(tmp_path / "w"), "--config", "mini"])
    assert not (tmp_path / "w").exists()


def test_empty_or_partial_checkpoint_is_refused(pretrained, tmp_path):
    sd = torch.load(pretrained, map_location="cpu")["state_dict"]
    partial = {k: v for k, v in sd.items() if not k.startswith("layer4.")}
    cases = {"empty.pth": {}, "empty_sd.pth": {"state_dict": {}}, "partial.pth": partial}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(BackboneError):
            convert_to_mmseg(tmp_path / name, tmp_path / f"out_{name}")
        assert not (tmp_path / f"out_{name}").exists(), name
    with pytest.raises(ConversionError, match=r"partial.*layer4\.0\.conv1\.weight"):
        convert_state_dict(partial, "resnet50")
    with pytest.raises(ConversionError, match="empty"):
        convert_state_dict({}, "resnet50")
    bad = dict(sd, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(ConversionError, match="shape"):
        convert_state_dict(bad, "resnet50")


@pytest.mark.slow
def test_runner_trains_tests_writes_record_and_resumes(tiny_voc, pretrained, tmp_path):
    work, records = tmp_path / "work", tmp_path / "records"
    tiny = tmp_path / "fcn_r50-d8_tiny.py"
    tiny.write_text(TINY_CFG.format(mini=str(MINI_CFG)))
    argv = ["--ckpt", str(pretrained), "--out", str(work), "--config", str(tiny), "--data", str(tiny_voc),
            "--records-dir", str(records), "total_batch_size=2",
            "default_hooks.checkpoint.interval=1", "default_hooks.logger.interval=1"]
    cli.main(argv + ["train_cfg.max_iters=1"])

    recs = sorted(records.glob("*.json"))
    assert len(recs) == 1
    rec = json.loads(recs[0].read_text())
    assert (rec["eval"], rec["protocol"], rec["dataset"], rec["status"]) == ("voc_seg", "fcn_d8_20k", "VOC2012", "ok")
    assert (rec["method"], rec["pretrain_exp"], rec["pretrain_epochs"]) == ("byol", "unit_byol", 3)
    assert rec["checkpoint_sha256"] == sha256_file(pretrained)
    assert set(rec["metrics"]) == {"mIoU", "aAcc"}
    assert all(0.0 <= v <= 100.0 for v in rec["metrics"].values())
    assert set(rec["per_class_iou"]) == {"background", *SHAPE_CLASSES}
    ious = [v for v in rec["per_class_iou"].values() if v is not None]
    assert rec["metrics"]["mIoU"] == pytest.approx(sum(ious) / len(ious), abs=0.01)
    summary = rec["config"]["lewel_summary"]
    assert summary["max_iters"] == 1 and summary["backbone_type"] == "ResNet"
    assert summary["total_batch_size"] == 2 and summary["crop_size"] == [64, 64]
    assert rec["config"]["train_cfg"]["max_iters"] == 1  # the resolved mmseg config that ran
    assert (work / "iter_1.pth").is_file() and (work / cli.CONVERTED).is_file()

    cli.main(argv + ["train_cfg.max_iters=1"])  # same arguments again: already done, no new record
    assert len(list(records.glob("*.json"))) == 1

    # another schedule is another run: refused in this folder, naming the difference
    with pytest.raises(SystemExit, match=r"holds another run .*train_cfg\.max_iters: 1 -> 2"):
        cli.main(argv + ["train_cfg.max_iters=2"])
    with pytest.raises(SystemExit, match=r"unknown key 'train_cfg\.max_itrs' in override 'train_cfg\.max_itrs=2'.*"
                                         r"Close matches: train_cfg\.max_iters"):
        cli.main(argv + ["train_cfg.max_itrs=2"])
    with pytest.raises(SystemExit, match=r"train_cfg\.max_iters is int .*got str"):
        cli.main(argv + ["train_cfg.max_iters=many"])
    assert len(list(records.glob("*.json"))) == 1

    # interrupted after training, before its record: the same run resumes from mmengine's last checkpoint
    (work / "result.json").unlink()
    cli.main(argv + ["train_cfg.max_iters=1"])
    logs = sorted(work.glob("*/*.log"))
    assert re.search(r"resumed epoch: \d+, iter: 1\b", logs[-1].read_text()), logs[-1]
    assert len(list(records.glob("*.json"))) == 2
