"""torchvision detection models in detectron2's layouts, initialised from a lewel-bench backbone.

* ``c4`` (Faster R-CNN, optionally Mask R-CNN), detectron2's R50-C4 with ``Res5ROIHeadsExtraNorm``:
  the backbone is the res2-res4 trunk (``conv1``..``layer3``, stride 16, 1024 channels); RPN on that
  single map; RoIAlign (aligned, 14x14) of each proposal; res5 (a copy of ``layer4`` with its stride 2,
  torchvision's stride-in-3x3 = detectron2's ``STRIDE_IN_1X1 False``) as the box head, followed by the
  extra BatchNorm of MoCo's ``Res5ROIHeadsExtraNorm`` and average pooling. The C4 mask head (detectron2's
  ``MaskRCNNConvUpsampleHead`` with 0 convs) sits on the same res5 output: 2x2 deconv to 256, ReLU,
  1x1 conv per class, 14x14 masks.
* ``fpn`` (Mask R-CNN R50-FPN): the ResNet with an FPN on res2-res5 (+ max-pooled P6 for the RPN) with
  trainable BatchNorm (``FREEZE_AT 0``, all layers trainable), BatchNorm in the FPN's lateral and output
  convs (``model.fpn_norm: bn``, detectron2's ``FPN.NORM``) and, as the SyncBN FPN protocol of
  MoCo/DenseCL, normalised 4conv1fc box head and normalised 4-conv mask head.
* ``retinanet`` (RetinaNet R50-FPN, MCL's protocol on detectron2's ``Base-RetinaNet``): FPN on res3-res5
  (P3-P5, ``fpn_norm``), P6 = 3x3 stride-2 conv of **res5** (C5, as detectron2; torchvision's own
  ``retinanet_resnet50_fpn`` v1 takes P5), P7 = the same on ReLU(P6); class and box subnets of 4 x (3x3
  conv 256 + ReLU), no norm, N(0, 0.01) init, class prior 0.01; 3 anchor sizes per octave x 3 aspect
  ratios, IoU < 0.4 negative, >= 0.5 positive, in between ignored, the best anchor of every object
  positive; sigmoid focal loss (alpha 0.25, gamma 2) and L1 box loss; test: score > 0.05, top 1000 per
  level, NMS 0.5, 100 detections per image. K sigmoid classes, as detectron2 (:class:`D2RetinaNet`).

Every BatchNorm is a plain ``nn.BatchNorm2d`` (trainable, batch statistics); with several processes
:func:`build_model` callers convert them to SyncBN. Input normalisation is torchvision's RGB mean/std
(= detectron2 ``PIXEL_MEAN [123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]``).
Loading the backbone checks that ZERO backbone tensors are missing (:class:`BackboneError` otherwise).
A transfer bundle (``--transfer bundle``: the FPN and the box head a method such as MCL pretrains, named as
detectron2 names them) goes into the FPN detectors' own modules (:func:`load_bundle`); ``model.transfer``
counts what each detector took: ``{"trunk": n, <part>: n}``.

The R-CNN detectors (C4 and FPN) take detectron2's losses where torchvision's differ (:class:`D2RPN`,
:class:`D2RoIHeads`): box regression smooth-L1 with ``model.smooth_l1_beta`` (detectron2's ``RPN.SMOOTH_L1_BETA``
and ``ROI_BOX_HEAD.SMOOTH_L1_BETA``, both 0: L1; torchvision's own: 1/9), the RPN's losses divided by
``rpn_batch_per_image`` x images (torchvision: by the anchors sampled). Known differences from detectron2 that
remain (so numbers are close, not identical, to the detectron2 backend; eval_detection/README.md): the C4
mask branch re-runs the shared res5 on the foreground RoIs (detectron2 reuses the box branch's res5
features); RPN/ROI sampling follow torchvision's implementation; no aspect-ratio grouping of batches;
SyncBN is torch's ``SyncBatchNorm`` (detectron2's C4 config uses its "naive" SyncBN). RetinaNet:
torchvision normalises the focal and box losses by each image's number of positive anchors and averages
over the images (detectron2: the batch's sum over an exponential moving average of the number of
positives, momentum 0.9); torchvision rounds its base anchors to whole pixels (detectron2 keeps
``x * 2**(1/3)`` exact); detectron2's ``SMOOTH_L1_LOSS_BETA 0`` is torchvision's ``l1`` box loss
(``model.retinanet_box_loss``; torchvision's RetinaNet v2 uses GIoU and GroupNorm heads, not used here).
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from lewel_bench.checkpoint import Backbone, BackboneError
from lewel_bench.config import ConfigError
from lewel_bench.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from lewel_bench.models import FEATURE_DIMS, build_backbone, feature_dim

log = logging.getLogger(__name__)

IMAGE_MEAN, IMAGE_STD = list(IMAGENET_MEAN), list(IMAGENET_STD)

# detectron2 defaults the torchvision backend follows (overridable from the config's ``model`` section).
MODEL_DEFAULTS: dict[str, Any] = dict(
    min_size_train=[480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800], max_size=1333, min_size_test=800,
    anchor_sizes=[32, 64, 128, 256, 512], aspect_ratios=[0.5, 1.0, 2.0],
    rpn_pre_nms_train=12000, rpn_post_nms_train=2000, rpn_pre_nms_test=6000, rpn_post_nms_test=1000,
    rpn_batch_per_image=256, roi_batch_per_image=512, pooler_resolution=14,
    box_score_thresh=0.05, box_nms_thresh=0.5, detections_per_img=100,
    max_size_train=None, fpn_norm="bn", smooth_l1_beta=0.0,
    retinanet_anchor_sizes=[32, 64, 128, 256, 512], retinanet_scales_per_octave=3,
    retinanet_iou_thresholds=[0.4, 0.5], retinanet_topk_candidates=1000, retinanet_prior_prob=0.01,
    retinanet_box_loss="l1", retinanet_head_norm="none",
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


def _trunk_sd(bb: Backbone) -> dict[str, torch.Tensor]:
    return {k: v for k, v in bb.state_dict.items() if not k.startswith("fc.")}


def _resnet_from(bb: Backbone) -> tuple[nn.Module, int]:
    """A torchvision ResNet holding ``bb``'s trunk and how many tensors it took."""
    _check_arch(bb)
    net = build_backbone(bb.arch)
    n = _load_into(net, _trunk_sd(bb), f"{bb.path} -> {bb.arch}")
    return net, n


def _max_size_train(m: Mapping[str, Any]) -> int:
    """detectron2's ``INPUT.MAX_SIZE_TRAIN``: ``max_size_train`` when set, else ``max_size`` (also the test size)."""
    return int(m.get("max_size_train") or m["max_size"])


def _common_kwargs(m: Mapping[str, Any]) -> dict[str, Any]:
    return dict(min_size=tuple(m["min_size_train"]), max_size=_max_size_train(m), image_mean=IMAGE_MEAN,
                image_std=IMAGE_STD,
                rpn_pre_nms_top_n_train=m["rpn_pre_nms_train"], rpn_post_nms_top_n_train=m["rpn_post_nms_train"],
                rpn_pre_nms_top_n_test=m["rpn_pre_nms_test"], rpn_post_nms_top_n_test=m["rpn_post_nms_test"],
                rpn_batch_size_per_image=m["rpn_batch_per_image"], box_batch_size_per_image=m["roi_batch_per_image"],
                box_score_thresh=m["box_score_thresh"], box_nms_thresh=m["box_nms_thresh"],
                box_detections_per_img=m["detections_per_img"])


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Sum of the smooth-L1 losses of the box deltas with threshold ``beta`` (0: the L1 loss), detectron2's
    ``smooth_l1_loss(..., reduction="sum")``."""
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")


class D2RPN(RegionProposalNetwork):
    """torchvision's RPN with detectron2's losses (its ``RPN.losses``): over the anchors the sampler draws (at most
    ``batch_size_per_image`` per image, half positive), the objectness BCE and, on the positive anchors, the box
    regression loss (smooth-L1 with ``smooth_l1_beta``: 0, L1, is detectron2's default), both summed and divided
    by ``batch_size_per_image`` x the number of images. torchvision's own: smooth-L1 with beta 1/9, divided by
    the number of anchors drawn (the same when every image has enough anchors)."""

    smooth_l1_beta: float = 0.0

    def compute_loss(self, objectness: torch.Tensor, pred_bbox_deltas: torch.Tensor, labels: list[torch.Tensor],
                     regression_targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pos, neg = (torch.where(torch.cat(masks))[0] for masks in self.fg_bg_sampler(labels))
        drawn = torch.cat([pos, neg])
        normalizer = self.fg_bg_sampler.batch_size_per_image * len(labels)
        all_labels, targets = torch.cat(labels), torch.cat(regression_targets)
        box = box_regression_loss(pred_bbox_deltas[pos], targets[pos], self.smooth_l1_beta) / normalizer
        obj = F.binary_cross_entropy_with_logits(objectness.flatten()[drawn], all_labels[drawn], reduction="sum")
        return obj / normalizer, box


class D2RoIHeads(RoIHeads):
    """torchvision's box head with detectron2's box-regression loss (``FastRCNNOutputLayers.box_reg_loss``):
    smooth-L1 with ``smooth_l1_beta`` (0: L1, detectron2's default; torchvision's own: 1/9) of the class-specific
    deltas of the foreground RoIs, summed and divided by the number of RoIs sampled (as torchvision). In
    training it keeps the sampled labels and regression targets (:meth:`select_training_samples`) and the box
    predictor's deltas, and replaces torchvision's ``loss_box_reg`` with this one; everything else is
    torchvision's."""

    smooth_l1_beta: float = 0.0

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self._sampled = (labels, regression_targets)
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        deltas: list[torch.Tensor] = []
        hook = self.box_predictor.register_forward_hook(lambda mod, inp, out: deltas.append(out[1]))
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            labels, regression_targets = self._sampled
        finally:
            hook.remove()
            self._sampled = None
        labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)
        fg = torch.where(labels > 0)[0]
        pred = deltas[0].reshape(deltas[0].shape[0], -1, 4)[fg, labels[fg]]
        losses["loss_box_reg"] = box_regression_loss(pred, regression_targets[fg], self.smooth_l1_beta) / labels.numel()
        return result, losses


def _detectron2_losses(model: nn.Module, beta: float) -> None:
    """Give an R-CNN model built by torchvision detectron2's RPN and box-regression losses: its ``rpn`` and
    ``roi_heads`` become :class:`D2RPN` / :class:`D2RoIHeads` (subclasses that only replace the loss, so the
    modules built by torchvision keep every setting and parameter) with ``smooth_l1_beta`` = ``beta``."""
    if float(beta) < 0:
        raise ConfigError(f"model.smooth_l1_beta {beta}: expected a number >= 0 (0: the L1 loss)")
    for attr, cls in (("rpn", D2RPN), ("roi_heads", D2RoIHeads)):
        module = getattr(model, attr)
        if type(module) is not cls.__base__:
            raise TypeError(f"{attr}: expected torchvision's {cls.__base__.__name__}, got {type(module).__name__}")
        module.__class__ = cls
        module.smooth_l1_beta = float(beta)


def _finish(model: nn.Module, m: Mapping[str, Any], transfer: dict[str, int]) -> nn.Module:
    """Test sizes (``min_size_test``, ``max_size``) and what the model took from the checkpoint (``transfer``)."""
    model.min_size_test = m["min_size_test"]
    model.max_size_test = int(m["max_size"])
    model.transfer = dict(transfer)
    return model


def build_c4(bb: Backbone, num_classes: int, mask: bool = False, **cfg: Any) -> nn.Module:
    """Faster / Mask R-CNN R50-C4 (+ extra norm after res5); ``num_classes`` excludes background."""
    m = {**MODEL_DEFAULTS, **cfg}
    net, n = _resnet_from(bb)
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
    _detectron2_losses(model, m["smooth_l1_beta"])
    return _finish(model, m, {"trunk": n})


#: ``model.fpn_norm``: the FPN's lateral / output convs without a norm (bias), or with BatchNorm (detectron2's
#: ``FPN.NORM`` SyncBN / BN: no bias, a norm layer; SyncBN with several processes, see :func:`convert_sync_bn`).
FPN_NORMS: dict[str, type[nn.Module] | None] = {"none": None, "bn": nn.BatchNorm2d}
FPN_CHANNELS = 256


def _fpn_backbone(bb: Backbone, levels: tuple[int, ...], extra_blocks: nn.Module,
                  fpn_norm: str) -> tuple[BackboneWithFPN, int]:
    """ResNet (``bb``'s trunk, trainable BatchNorm everywhere: ``FREEZE_AT 0``) + FPN on ``res<level>``."""
    _check_arch(bb)
    if fpn_norm not in FPN_NORMS:
        raise ConfigError(f"model.fpn_norm {fpn_norm!r}: expected one of {', '.join(FPN_NORMS)}")
    net = build_backbone(bb.arch)
    returned = {f"layer{lvl - 1}": str(i) for i, lvl in enumerate(levels)}
    channels = [feature_dim(bb.arch, f"res{lvl}") for lvl in levels]
    backbone = BackboneWithFPN(net, returned, channels, FPN_CHANNELS, extra_blocks=extra_blocks,
                               norm_layer=FPN_NORMS[fpn_norm])
    n = _load_into(backbone.body, _trunk_sd(bb), f"{bb.path} -> FPN body")
    log.info("FPN body: %d backbone tensors loaded, 0 missing", n)
    return backbone, n


def build_fpn(bb: Backbone, num_classes: int, mask: bool = True, **cfg: Any) -> nn.Module:
    """Mask (or Faster) R-CNN R50-FPN from our weights, BN everywhere (SyncBN with several processes)."""
    m = {**MODEL_DEFAULTS, **cfg}
    backbone, n = _fpn_backbone(bb, (2, 3, 4, 5), LastLevelMaxPool(), m["fpn_norm"])
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
    _detectron2_losses(model, m["smooth_l1_beta"])
    return _finish(model, m, {"trunk": n})


class D2RetinaNet(RetinaNet):
    """torchvision's RetinaNet with detectron2's K sigmoid classes (no background channel).

    The datasets give labels 1..K (background at 0, as the R-CNN models expect); this model trains on 0..K-1
    and returns 1..K again, so the engine treats every detector alike.
    """

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        if targets is not None:
            targets = [{**t, "labels": t["labels"] - 1} for t in targets]
        out = super().forward(images, targets)
        if self.training:
            return out
        return [{**d, "labels": d["labels"] + 1} for d in out]


#: ``model.retinanet_box_loss``: torchvision's regression losses (detectron2's Base-RetinaNet: L1, its
#: ``SMOOTH_L1_LOSS_BETA 0``)
RETINANET_BOX_LOSSES = ("l1", "smooth_l1", "giou")
#: ``model.retinanet_head_norm``: detectron2's ``RETINANET.NORM`` in the subnets' convs: none (its default, MCL's
#: protocol) or GroupNorm with 32 groups ("GN")
RETINANET_HEAD_NORMS: dict[str, Callable[..., nn.Module] | None] = {"none": None, "gn": partial(nn.GroupNorm, 32)}


def retinanet_anchor_sizes(m: Mapping[str, Any]) -> tuple[tuple[float, ...], ...]:
    """Per level P3..P7: ``x * 2 ** (i / n)`` for ``i < n`` (``n = retinanet_scales_per_octave``), ``x`` the
    level's base size (detectron2: ``[[x, x * 2**(1/3), x * 2**(2/3)] for x in [32, 64, 128, 256, 512]]``)."""
    n = int(m["retinanet_scales_per_octave"])
    return tuple(tuple(float(x) * 2 ** (i / n) for i in range(n)) for x in m["retinanet_anchor_sizes"])


def build_retinanet(bb: Backbone, num_classes: int, mask: bool = False, **cfg: Any) -> nn.Module:
    """RetinaNet R50-FPN in detectron2's layout (MCL's protocol): FPN on res3-res5 (``fpn_norm``), P6 from
    res5 (C5) and P7 from P6, 4-conv class / box subnets without norm, prior 0.01; see the module docstring."""
    m = {**MODEL_DEFAULTS, **cfg}
    if mask:
        raise ConfigError("RetinaNet has no mask head: its configs set mask: false")
    if m["retinanet_box_loss"] not in RETINANET_BOX_LOSSES:
        raise ConfigError(f"model.retinanet_box_loss {m['retinanet_box_loss']!r}: expected one of "
                          f"{', '.join(RETINANET_BOX_LOSSES)}")
    if m["retinanet_head_norm"] not in RETINANET_HEAD_NORMS:
        raise ConfigError(f"model.retinanet_head_norm {m['retinanet_head_norm']!r}: expected one of "
                          f"{', '.join(RETINANET_HEAD_NORMS)}")
    _check_arch(bb)
    c5 = feature_dim(bb.arch, "res5")
    # LastLevelP6P7 takes C5 when its input channels differ from the FPN's (detectron2: "res5");
    # torchvision's own retinanet_resnet50_fpn (v1) builds it with 256 inputs, i.e. from P5
    backbone, n = _fpn_backbone(bb, (3, 4, 5), LastLevelP6P7(c5, FPN_CHANNELS), m["fpn_norm"])
    sizes = retinanet_anchor_sizes(m)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(m["aspect_ratios"]),) * len(sizes))
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=RETINANET_HEAD_NORMS[m["retinanet_head_norm"]])
    p = float(m["retinanet_prior_prob"])
    nn.init.constant_(head.classification_head.cls_logits.bias, -math.log((1 - p) / p))
    head.regression_head._loss_type = m["retinanet_box_loss"]
    bg, fg = (float(t) for t in m["retinanet_iou_thresholds"])
    model = D2RetinaNet(backbone, num_classes, min_size=tuple(m["min_size_train"]), max_size=_max_size_train(m),
                        image_mean=IMAGE_MEAN, image_std=IMAGE_STD, anchor_generator=anchors, head=head,
                        score_thresh=m["box_score_thresh"], nms_thresh=m["box_nms_thresh"],
                        detections_per_img=m["detections_per_img"], fg_iou_thresh=fg, bg_iou_thresh=bg,
                        topk_candidates=m["retinanet_topk_candidates"])
    return _finish(model, m, {"trunk": n})


BUILDERS = {"c4": build_c4, "fpn": build_fpn, "retinanet": build_retinanet}


# ------------------------------------------------------------------------------------------------
# transfer bundle: a checkpoint's FPN / box head (detectron2 names) into the torchvision modules
# ------------------------------------------------------------------------------------------------
_FPN_TENSOR = re.compile(r"fpn_(lateral|output)(\d+)\.(norm\.)?(\w+)")
_BOX_HEAD_TENSOR = re.compile(r"conv(\d+)\.(norm\.)?(\w+)")


@dataclass(frozen=True)
class PartTarget:
    """Where a transfer part goes in a torchvision detector.

    ``prefixes``: the model tensors the part must fill, all of them; ``rename``: a part tensor's name (detectron2's
    inside the part, :mod:`lewel_bench.transfer`) -> the model key, ``None`` for a tensor this detector has no
    module for (RetinaNet has no P2: ``fpn_lateral2`` / ``fpn_output2`` are not used, as in detectron2), a
    ``ValueError`` for a name the part cannot hold; ``what``: the modules, for the log and the errors.
    """

    prefixes: tuple[str, ...]
    rename: Callable[[str], str | None]
    what: str


def _fpn_target(levels: tuple[int, ...]) -> PartTarget:
    """detectron2's ``fpn_lateral<L>`` / ``fpn_output<L>`` (``.norm.*``) -> torchvision's
    ``backbone.fpn.inner_blocks.<i>`` / ``layer_blocks.<i>`` (``.0`` the conv, ``.1`` the norm), ``i`` the index of
    level ``L`` among ``levels``."""
    def rename(name: str) -> str | None:
        m = _FPN_TENSOR.fullmatch(name)
        if m is None:
            raise ValueError(name)
        kind, level, norm, leaf = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if level not in levels:
            return None
        block = "inner_blocks" if kind == "lateral" else "layer_blocks"
        return f"backbone.fpn.{block}.{levels.index(level)}.{1 if norm else 0}.{leaf}"

    return PartTarget(("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks."), rename,
                      f"FPN lateral / output convs of levels {levels[0]}-{levels[-1]}")


def _rename_box_head(name: str) -> str | None:
    """detectron2's ``conv<k>`` (``.norm.*``) of the 4conv1fc box head -> ``roi_heads.box_head.<k-1>.{0,1}``."""
    m = _BOX_HEAD_TENSOR.fullmatch(name)
    if m is None or not 1 <= int(m.group(1)) <= 4:
        raise ValueError(name)
    return f"roi_heads.box_head.{int(m.group(1)) - 1}.{1 if m.group(2) else 0}.{m.group(3)}"


#: detector -> part -> target (the parts each detector loads: :data:`eval_detection.protocol.TRANSFER_PARTS`)
BUNDLE_TARGETS: dict[str, dict[str, PartTarget]] = {
    "c4": {},
    "fpn": {"fpn": _fpn_target((2, 3, 4, 5)),
            "box_head": PartTarget(tuple(f"roi_heads.box_head.{i}." for i in range(4)), _rename_box_head,
                                   "4-conv box head (conv1-conv4 and their norms; fc1 stays random)")},
    "retinanet": {"fpn": _fpn_target((3, 4, 5))},
}
_OPTIONAL = ("num_batches_tracked",)


def load_bundle(model: nn.Module, arch: str, bb: Backbone) -> dict[str, int]:
    """Load ``bb.parts`` into ``model`` (a :data:`BUILDERS` ``arch`` detector); returns the tensor count per part.

    Every tensor of the modules a part targets must come from the part (``num_batches_tracked`` may be absent),
    with the model's shape; a part the detector has no module for, a tensor name the part cannot hold, or a
    tensor with no place in the detector (e.g. conv biases for an FPN with BatchNorm) is a
    :class:`BackboneError` naming the part.
    """
    targets = BUNDLE_TARGETS[arch]
    own = model.state_dict()
    counts: dict[str, int] = {}
    for part, sd in sorted(bb.parts.items()):
        if part not in targets:
            raise BackboneError(f"{bb.path}: transfer part {part!r} has no module in the {arch} detector (it takes "
                                f"{', '.join(sorted(targets)) or 'no part'})")
        t = targets[part]
        mapped: dict[str, tuple[str, torch.Tensor]] = {}
        unused, malformed = [], []
        for k, v in sd.items():
            try:
                dst = t.rename(k)
            except ValueError:
                malformed.append(k)
                continue
            if dst is None:
                unused.append(k)
            else:
                mapped[dst] = (k, v)
        problems = []
        if malformed:
            problems.append(f"{len(malformed)} tensor names this part cannot hold (first: {', '.join(malformed[:3])})")
        homeless = [f"{src} -> {dst}" for dst, (src, _) in mapped.items() if dst not in own]
        if homeless:
            problems.append(f"{len(homeless)} tensors with no place in the detector (first: {'; '.join(homeless[:3])})")
        need = [k for k in own if k.startswith(t.prefixes)]
        missing = [k for k in need if k not in mapped and not k.endswith(_OPTIONAL)]
        if missing:
            problems.append(f"{len(missing)} of the detector's {len(need)} tensors missing from the part "
                            f"(first: {', '.join(missing[:3])})")
        shapes = [f"{src}: {tuple(v.shape)} vs {tuple(own[dst].shape)}" for dst, (src, v) in mapped.items()
                  if dst in own and tuple(v.shape) != tuple(own[dst].shape)]
        if shapes:
            problems.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
        if problems:
            raise BackboneError(f"{bb.path}: transfer part {part!r} does not match the {arch} detector's {t.what}: "
                                + "; ".join(problems))
        model.load_state_dict({dst: v for dst, (_, v) in mapped.items()}, strict=False)
        counts[part] = len(mapped)
        log.info("transfer bundle: part %s -> %s: %d tensors loaded%s", part, t.what, len(mapped),
                 f" ({len(unused)} not used by this detector, e.g. {unused[0]})" if unused else "")
    return counts


def build_model(arch: str, bb: Backbone, num_classes: int, mask: bool, **cfg: Any) -> nn.Module:
    """``arch`` is ``c4``, ``fpn`` or ``retinanet``; ``cfg`` overrides :data:`MODEL_DEFAULTS`. The trunk always
    comes from ``bb``, and ``bb.parts`` (a transfer bundle read with ``--transfer bundle``) go into the modules
    they match (:func:`load_bundle`); ``model.transfer`` counts the tensors taken, per part."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown detection arch {arch!r}; expected one of {sorted(BUILDERS)}")
    model = BUILDERS[arch](bb, num_classes, mask=mask, **cfg)
    if bb.parts:
        model.transfer.update(load_bundle(model, arch, bb))
    return model


def set_test_size(model: nn.Module, training: bool) -> None:
    """torchvision picks a random ``min_size`` in training; test uses ``min_size_test`` only, and ``max_size`` (the
    training images may have another limit, ``max_size_train``: detectron2's ``INPUT.MAX_SIZE_TRAIN``)."""
    t = model.transform
    if not hasattr(model, "_train_min_size"):
        model._train_min_size, model._train_max_size = t.min_size, t.max_size
    t.min_size = model._train_min_size if training else (model.min_size_test,)
    t.max_size = model._train_max_size if training else getattr(model, "max_size_test", model._train_max_size)


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
