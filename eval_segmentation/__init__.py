"""Segmentation transfer (the LEWEL paper's VOC12 mIoU, Table 3) through mmsegmentation's own Runner.

``python -m eval_segmentation --config mini --ckpt ... [--out DIR]`` (see :mod:`eval_segmentation.cli`); configs in
``configs/`` (mmseg's Python format); :mod:`lewel_bench.transfer.mmcv_ops` lets mmseg import under
``mmcv-lite``; :mod:`eval_segmentation.mmseg_ext` is what the configs import (shim + per-class IoU metric).
"""
