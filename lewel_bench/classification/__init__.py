"""Image-classification evaluation shared by ``eval_linear``, ``eval_semisup`` and ``eval_knn``.

Modules: :mod:`.transforms`, :mod:`.loaders`, :mod:`.models`, :mod:`.loops`, :mod:`.run`; everything is
re-exported here (``from lewel_bench import classification as C``).

One copy of every piece the three stages share:

* models: :class:`LinearProbe` (frozen backbone in eval mode + a linear classifier, Sec. 4.1, on the
  features of :data:`PROBE_FEATURES`: GAP, or CGH's hypercolumn) and
  :func:`build_finetune_model` (the whole torchvision ResNet trained, Sec. 4.2), both built from a
  validated :class:`lewel_bench.checkpoint.Backbone`;
* transforms: RandomResizedCrop + flip (train) and resize + center crop (val), sizes from the config;
* data loaders that shard over ranks (train: ``DistributedSampler``; eval: every sample exactly once);
* the train / eval loops (top-1 / top-5 from correct counts all-reduced over ranks), feature extraction
  for kNN over ranks (per shard by :func:`lewel_bench.knn.extract_features`); optimisers and the per-epoch
  lr schedules come from :mod:`lewel_bench.optim`;
* resumable run state: an atomic ``checkpoint.pth`` in the run's output folder;
* the stage set-up of the three (config, checkpoint intake, ImageNet root), on the contract of
  :mod:`lewel_bench.stage` (identity, output folder, record).
"""
from __future__ import annotations

from ..checkpoint import Backbone
from ..optim import build_optimizer, param_groups, schedule_from_config, set_lr
from ..stage import Stage
from .loaders import (
    ShardSampler,
    build_imagenet,
    make_loader,
    num_classes_of,
    per_rank_batch,
)
from .loops import (
    evaluate,
    extract_features_all_ranks,
    gather_variable,
    topk_accuracy,
    topk_correct,
    train_one_epoch,
)
from .models import (
    PROBE_FEATURES,
    LinearProbe,
    ProbeFeature,
    ProbeHead,
    build_feature_extractor,
    build_finetune_model,
    wrap_ddp,
)
from .run import CHECKPOINT, IMAGENET_PARTS, RunState, fit, restore, setup_stage
from .transforms import train_transform, transforms_from_config, val_transform

__all__ = [
    "CHECKPOINT",
    "IMAGENET_PARTS",
    "PROBE_FEATURES",
    "Backbone",
    "LinearProbe",
    "ProbeFeature",
    "ProbeHead",
    "RunState",
    "ShardSampler",
    "Stage",
    "build_feature_extractor",
    "build_finetune_model",
    "build_imagenet",
    "build_optimizer",
    "evaluate",
    "extract_features_all_ranks",
    "fit",
    "gather_variable",
    "make_loader",
    "num_classes_of",
    "param_groups",
    "per_rank_batch",
    "restore",
    "schedule_from_config",
    "set_lr",
    "setup_stage",
    "topk_accuracy",
    "topk_correct",
    "train_one_epoch",
    "train_transform",
    "transforms_from_config",
    "val_transform",
    "wrap_ddp",
]
