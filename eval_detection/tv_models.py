"""torchvision detection models in detectron2's layouts, initialised from a lewel-bench backbone.

* ``c4`` (Faster R-CNN, optionally Mask R-CNN), detectron2's R50-C4 with ``Res5ROIHeadsExtraNorm``:
  the backbone is the res2-res4 trunk (``conv1``..``layer3``, stride 16, 1024 channels); RPN on that
  single map; RoIAlign (aligned, 14x14) of each proposal; res5 (a copy of ``layer4`` with its stride 2,
  torchvision's stride-in-3x3 = detectron2's ``STRIDE_IN_1X1 False``) as the box head, followed by the
  extra BatchNorm of MoCo's ``Res5ROIHeadsExtraNorm`` and average pooling. The C4 mask head (detectron2's
  ``MaskRCNNConvUpsampleHead`` with 0 convs) sits on the same res5 output: 2x2 deconv to 256, ReLU,
  1x1 conv per class, 14x14 masks.
* ``fpn`` (Mask R-CNN R50-FPN): torchvision's ``resnet_fpn_backbone`` built from our weights with
  trainable BatchNorm (``FREEZE_AT 0``, all layers trainable) and, as the SyncBN FPN protocol of
  MoCo/DenseCL, normalised 4conv1fc box head and normalised 4-conv mask head.

Every BatchNorm is a plain ``nn.BatchNorm2d`` (trainable, batch statistics); with several processes
:func:`build_model` callers convert them to SyncBN. Input normalisation is torchvision's RGB mean/std
(= detectron2 ``PIXEL_MEAN [123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]``).
Loading the backbone checks that ZERO backbone tensors are missing (:class:`BackboneError` otherwise).

Known differences from detectron2 (so numbers are close, not identical, to the detectron2 backend):
the C4 mask branch re-runs the shared res5 on the foreground RoIs (detectron2 reuses the box branch's
res5 features); torchvision's box-regression loss is smooth-L1 with beta 1/9 (detectron2: L1, beta 0)
and RPN/ROI sampling follow torchvision's implementation; no aspect-ratio grouping of batches;
SyncBN is torch's ``SyncBatchNorm`` (detectron2's C4 config uses its "naive" SyncBN).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, roi_align

from lewel_bench.checkpoint import Backbone, BackboneError
from lewel_bench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from lewel_bench.models import FEATURE_DIMS, build_backbone

log = logging.getLogger(__name__)

IMAGE_MEAN, IMAGE_STD = list(IMAGENET_MEAN), list(IMAGENET_STD)

# detectron2 defaults the torchvision backend follows (overridable from the config's ``model`` section).
MODEL_DEFAULTS: dict[str, Any] = dict(
    min_size_train=[480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800], max_size=1333, min_size_test=800,
    anchor_sizes=[32, 64, 128, 256, 512], aspect_ratios=[0.5, 1.0, 2.0],
    rpn_pre_nms_train=12000, rpn_post_nms_train=2000, rpn_pre_nms_test=6000, rpn_post_nms_test=1000,
    rpn_batch_per_image=256, roi_batch_per_image=512, pooler_resolution=14,
    box_score_thresh=0.05, box_nms_thresh=0.5, detections_per_img=100,
)


def _out_channels(layer: nn.Sequential) -> int:
    """Output channels of a ResNet stage (bottleneck: conv3, basic block: conv2)."""
    last = layer[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels


class ResNetC4Trunk(nn.Module):
    """res2-res4 of a torchvision ResNet (stem + ``layer1..3``), keys named as torchvision's."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.out_channels = _out_channels(resnet.layer3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return {"res4": self.layer3(self.layer2(self.layer1(x)))}


class Res5ExtraNorm(nn.Module):
    """res5 (``layer4``, stride 2) followed by the extra BatchNorm of ``Res5ROIHeadsExtraNorm``."""

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.res5 = layer4
        self.out_channels = _out_channels(layer4)
        self.norm = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.res5(x))


class PooledHead(nn.Module):
    """Box head of C4: res5 + extra norm, then global average pooling -> (N, 2048)."""

    def __init__(self, res5: Res5ExtraNorm) -> None:
        super().__init__()
        self.res5 = res5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res5(x).mean(dim=(2, 3))


class C4RoIAlign(MultiScaleRoIAlign):
    """RoIAlign on the single stride-16 map with ``aligned=True`` (detectron2's ``ROIAlignV2``).

    Subclasses ``MultiScaleRoIAlign`` only to satisfy torchvision's type check; the level mapping is unused.
    """

    def __init__(self, output_size: int = 14, stride: int = 16, sampling_ratio: int = 0) -> None:
        super().__init__(["res4"], output_size, sampling_ratio)
        self.output_size, self.scale = (output_size, output_size), 1.0 / stride

    def forward(self, features: Mapping[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = features["res4"]
        return roi_align(x, [p.to(x.dtype) for p in proposals], self.output_size, spatial_scale=self.scale,
                         sampling_ratio=self.sampling_ratio, aligned=True)


def _load_into(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> int:
    """Load ``sd`` into ``module`` strictly (every backbone tensor must be there); returns the tensor count."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    if missing or extra:
        raise BackboneError(f"{what}: {len(missing)} backbone tensors missing (first: {missing[:5]}), "
                            f"{len(extra)} unexpected (first: {extra[:5]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        raise BackboneError(f"{what}: shape mismatch for {bad[:5]}")
    module.load_state_dict({k: sd[k] for k in own}, strict=True)
    return len(own)


def _check_arch(bb: Backbone) -> None:
    if bb.arch not in FEATURE_DIMS:
        raise BackboneError(f"detection transfer needs a torchvision ResNet, got {bb.arch!r}")
    if bb.arch != "resnet50":
        log.warning("the paper's detection protocol uses ResNet-50; this run uses %s (not comparable)", bb.arch)


def _resnet_from(bb: Backbone) -> nn.Module:
    _check_arch(bb)
    net = build_backbone(bb.arch)
    _load_into(net, {k: v for k, v in bb.state_dict.items() if not k.startswith("fc.")}, f"{bb.path} -> {bb.arch}")
    return net


def _common_kwargs(m: Mapping[str, Any]) -> dict[str, Any]:
    return dict(min_size=tuple(m["min_size_train"]), max_size=m["max_size"], image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
                rpn_pre_nms_top_n_train=m["rpn_pre_nms_train"], rpn_post_nms_top_n_train=m["rpn_post_nms_train"],
                rpn_pre_nms_top_n_test=m["rpn_pre_nms_test"], rpn_post_nms_top_n_test=m["rpn_post_nms_test"],
                rpn_batch_size_per_image=m["rpn_batch_per_image"], box_batch_size_per_image=m["roi_batch_per_image"],
                box_score_thresh=m["box_score_thresh"], box_nms_thresh=m["box_nms_thresh"],
                box_detections_per_img=m["detections_per_img"])


def build_c4(bb: Backbone, num_classes: int, mask: bool = False, **cfg: Any) -> nn.Module:
    """Faster / Mask R-CNN R50-C4 (+ extra norm after res5); ``num_classes`` excludes background."""
    m = {**MODEL_DEFAULTS, **cfg}
    net = _resnet_from(bb)
    trunk = ResNetC4Trunk(net)
    res5 = Res5ExtraNorm(net.layer4)  # layer4 keeps its stride 2 (as detectron2's res5 in the C4 ROI head)
    anchors = AnchorGenerator(sizes=(tuple(m["anchor_sizes"]),), aspect_ratios=(tuple(m["aspect_ratios"]),))
    rpn_head = RPNHead(trunk.out_channels, anchors.num_anchors_per_location()[0])
    pool = C4RoIAlign(m["pooler_resolution"], stride=16)
    kw = dict(_common_kwargs(m), rpn_anchor_generator=anchors, rpn_head=rpn_head, box_roi_pool=pool,
              box_head=PooledHead(res5), box_predictor=FastRCNNPredictor(res5.out_channels, num_classes + 1))
    if mask:
        # the mask branch re-runs the shared res5 (+norm) on the foreground RoIs: 7x7 -> deconv -> 14x14
        model = MaskRCNN(trunk, num_classes=None, mask_roi_pool=C4RoIAlign(m["pooler_resolution"], stride=16),
                         mask_head=res5, mask_predictor=MaskRCNNPredictor(res5.out_channels, 256, num_classes + 1), **kw)
    else:
        model = FasterRCNN(trunk, num_classes=None, **kw)
    model.min_size_test = m["min_size_test"]
    return model


def build_fpn(bb: Backbone, num_classes: int, mask: bool = True, **cfg: Any) -> nn.Module:
    """Mask (or Faster) R-CNN R50-FPN from our weights, BN everywhere (SyncBN with several processes)."""
    m = {**MODEL_DEFAULTS, **cfg}
    _check_arch(bb)
    backbone = resnet_fpn_backbone(backbone_name=bb.arch, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5)
    n = _load_into(backbone.body, {k: v for k, v in bb.state_dict.items() if not k.startswith("fc.")},
                   f"{bb.path} -> FPN body")
    log.info("FPN body: %d backbone tensors loaded, 0 missing", n)
    sizes = tuple((s,) for s in m.get("fpn_anchor_sizes", [32, 64, 128, 256, 512]))
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(m["aspect_ratios"]),) * len(sizes))
    fpn_kw = {**m, "rpn_pre_nms_train": m.get("fpn_rpn_pre_nms_train", 2000),
              "rpn_post_nms_train": m.get("fpn_rpn_post_nms_train", 1000),
              "rpn_pre_nms_test": m.get("fpn_rpn_pre_nms_test", 1000),
              "rpn_post_nms_test": m.get("fpn_rpn_post_nms_test", 1000)}
    kw = dict(_common_kwargs(fpn_kw), rpn_anchor_generator=anchors,
              rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
              box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=0),
              box_head=FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024],
                                          norm_layer=nn.BatchNorm2d),
              box_predictor=FastRCNNPredictor(1024, num_classes + 1))
    if mask:
        model = MaskRCNN(backbone, num_classes=None,
                         mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, sampling_ratio=0),
                         mask_head=MaskRCNNHeads(backbone.out_channels, [256, 256, 256, 256], 1,
                                                 norm_layer=nn.BatchNorm2d),
                         mask_predictor=MaskRCNNPredictor(256, 256, num_classes + 1), **kw)
    else:
        model = FasterRCNN(backbone, num_classes=None, **kw)
    model.min_size_test = m["min_size_test"]
    return model


BUILDERS = {"c4": build_c4, "fpn": build_fpn}


def build_model(arch: str, bb: Backbone, num_classes: int, mask: bool, **cfg: Any) -> nn.Module:
    """``arch`` is ``c4`` or ``fpn``; ``cfg`` overrides :data:`MODEL_DEFAULTS`."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown detection arch {arch!r}; expected one of {sorted(BUILDERS)}")
    return BUILDERS[arch](bb, num_classes, mask=mask, **cfg)


def set_test_size(model: nn.Module, training: bool) -> None:
    """torchvision picks a random ``min_size`` in training; test uses ``min_size_test`` only."""
    t = model.transform
    if not hasattr(model, "_train_min_size"):
        model._train_min_size = t.min_size
    t.min_size = model._train_min_size if training else (model.min_size_test,)


def backbone_keys_report(model: nn.Module, bb: Backbone) -> dict[str, int]:
    """How many backbone tensors in ``model`` equal ``bb``'s (for tests / logs): {'matched', 'total'}."""
    if hasattr(model.backbone, "body"):
        own = model.backbone.body.state_dict()
        pairs = {k: k for k in own}
    else:
        own = {**{k: v for k, v in model.backbone.state_dict().items()},
               **{f"layer4.{k[len('res5.'):]}": v for k, v in model.roi_heads.box_head.res5.state_dict().items()
                  if k.startswith("res5.")}}
        pairs = {k: k for k in own}
    ref = {k: v for k, v in bb.state_dict.items() if not k.startswith("fc.")}
    matched = sum(1 for k in ref if k in pairs and torch.equal(own[pairs[k]].cpu(), ref[k].cpu()))
    return {"matched": matched, "total": len(ref)}


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Naive SyncBN across processes (the protocol's SyncBN); a no-op for one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
