"""COCO bbox / segm AP through pycocotools (what detectron2's ``COCOEvaluator`` reports), in percent."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def to_coco_results(image_id: int, pred: Mapping[str, Any], cat_ids: list[int], mask_thresh: float = 0.5) -> list[dict]:
    """One image's torchvision predictions (original-image coordinates) as COCO result dicts."""
    from pycocotools import mask as mask_util

    boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(pred["scores"]).reshape(-1)
    labels = np.asarray(pred["labels"]).reshape(-1)  # 0-based class indices
    masks = pred.get("masks")
    out = []
    for k in range(len(scores)):
        x1, y1, x2, y2 = boxes[k]
        r = {"image_id": int(image_id), "category_id": int(cat_ids[int(labels[k])]), "score": float(scores[k]),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
        if masks is not None:
            m = np.asarray(masks[k]).reshape(masks[k].shape[-2:]) > mask_thresh
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            r["segmentation"] = rle
        out.append(r)
    return out


def evaluate_coco(coco_gt: Any, results: list[dict], iou_types: Iterable[str] = ("bbox", "segm"),
                  image_ids: list[int] | None = None) -> dict[str, float]:
    """``bbox_AP``, ``bbox_AP50``, ``bbox_AP75`` (and ``segm_*``) in percent; 0 when there is no detection."""
    from pycocotools.cocoeval import COCOeval

    metrics: dict[str, float] = {}
    for t in iou_types:
        res = [r for r in results if t != "segm" or "segmentation" in r]
        if not res:
            log.warning("no %s detections: %s AP = 0", t, t)
            metrics.update({f"{t}_AP": 0.0, f"{t}_AP50": 0.0, f"{t}_AP75": 0.0})
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            dt = coco_gt.loadRes(copy.deepcopy(res))
            ev = COCOeval(coco_gt, dt, t)
            if image_ids is not None:
                ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        log.info("COCO %s evaluation:\n%s", t, buf.getvalue())
        s = [0.0 if v < 0 else 100.0 * float(v) for v in ev.stats[:3]]
        metrics.update({f"{t}_AP": s[0], f"{t}_AP50": s[1], f"{t}_AP75": s[2]})
    return metrics
