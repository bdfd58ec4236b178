"""VOC detection AP exactly as detectron2's ``PascalVOCDetectionEvaluator`` computes it.

detectron2 (``detectron2/evaluation/pascal_voc_evaluation.py``) evaluates each class at the IoU
thresholds 0.50, 0.55, ..., 0.95 with the py-faster-rcnn ``voc_eval`` port and reports, in percent,
``AP`` = the mean over the 10 thresholds of the class-mean AP, ``AP50`` and ``AP75``. For a 2007 split
(``voc_2007_test``, the paper's test set) it uses the **VOC07 11-point** interpolated AP
(``use_07_metric = meta.year == 2007``); for 2012 splits the area under the precision envelope.
Other details it keeps and we keep:

* boxes in the inclusive, 1-based pixel convention of the VOC XML: widths are ``x2 - x1 + 1``; the
  model works in 0-based continuous coordinates (``x1 - 1``, as detectron2's loader), so detections
  get ``+1`` on ``x1, y1`` before matching (the inverse of the loading logic);
* a detection is a true positive when its best IoU is strictly greater than the threshold
  (``ovmax > ovthresh``), the ground truth is not ``difficult`` and not matched yet; matches to a
  difficult ground truth are neither TP nor FP; ``npos`` counts non-difficult objects;
* a class with no ground truth gives ``nan`` recall, so its AP is 0 (as detectron2's ``voc_eval``);
* detection scores are rounded to 3 decimals as detectron2 writes them to its text files.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

IOU_THRESHOLDS = tuple(t / 100.0 for t in range(50, 100, 5))


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from a recall/precision curve: VOC07 11-point, or the area under the precision envelope."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = np.max(prec[rec >= t]) if np.sum(rec >= t) > 0 else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _class_ap(gt: Mapping[str, dict], dets: list[tuple[str, float, np.ndarray]], thresh: float,
              use_07_metric: bool) -> float:
    """One class at one IoU threshold (``gt``: image -> {'bbox' (N,4) 1-based, 'difficult' (N,)})."""
    npos = sum(int((~g["difficult"]).sum()) for g in gt.values())
    used = {k: np.zeros(len(g["bbox"]), bool) for k, g in gt.items()}
    order = np.argsort([-d[1] for d in dets], kind="stable")
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for n, j in enumerate(order):
        img, _, bb = dets[j]
        g = gt.get(img)
        ovmax, jmax = -np.inf, -1
        if g is not None and g["bbox"].size > 0:
            bbgt = g["bbox"]
            iw = np.maximum(np.minimum(bbgt[:, 2], bb[2]) - np.maximum(bbgt[:, 0], bb[0]) + 1.0, 0.0)
            ih = np.maximum(np.minimum(bbgt[:, 3], bb[3]) - np.maximum(bbgt[:, 1], bb[1]) + 1.0, 0.0)
            inter = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (bbgt[:, 2] - bbgt[:, 0] + 1.0) * (bbgt[:, 3] - bbgt[:, 1] + 1.0) - inter)
            ov = inter / uni
            ovmax, jmax = float(ov.max()), int(ov.argmax())
        if ovmax > thresh:
            if not g["difficult"][jmax]:
                if not used[img][jmax]:
                    tp[n] = 1.0
                    used[img][jmax] = True
                else:
                    fp[n] = 1.0
        else:
            fp[n] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07_metric)


def evaluate_voc(ground_truth: Mapping[str, Mapping[str, np.ndarray]],
                 detections: Mapping[str, Mapping[str, np.ndarray]],
                 class_names: Sequence[str], use_07_metric: bool = True) -> dict[str, float]:
    """detectron2's VOC metrics in percent: ``AP`` (mean over IoU .50:.05:.95), ``AP50``, ``AP75``.

    ``ground_truth[image_id]``: ``boxes`` (N,4) in the VOC XML's 1-based inclusive pixels, ``labels``
    (N,) class indices into ``class_names``, ``difficult`` (N,) bool. Every evaluated image must be a
    key (an image with no object has empty arrays). ``detections[image_id]``: ``boxes`` (M,4) 0-based
    continuous model coordinates, ``scores`` (M,), ``labels`` (M,) class indices. Also returns
    ``per_class_AP50`` under the key ``per_class_AP50`` (a dict).
    """
    unknown = [k for k in detections if k not in ground_truth]
    if unknown:
        raise KeyError(f"detections for {len(unknown)} images that are not in the ground truth (first: {unknown[:3]})")
    per_class_gt: list[dict[str, dict]] = [dict() for _ in class_names]
    for img, g in ground_truth.items():
        boxes = np.asarray(g["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(g["labels"], dtype=np.int64).reshape(-1)
        diff = np.asarray(g.get("difficult", np.zeros(len(labels), bool)), dtype=bool).reshape(-1)
        for c in range(len(class_names)):
            sel = labels == c
            per_class_gt[c][img] = {"bbox": boxes[sel], "difficult": diff[sel]}
    per_class_det: dict[int, list] = defaultdict(list)
    for img, d in detections.items():
        boxes = np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4).copy()
        boxes[:, :2] += 1.0  # back to the 1-based VOC convention (detectron2's evaluator does the same)
        boxes = np.round(boxes, 1)
        for b, s, c in zip(boxes, np.asarray(d["scores"]).reshape(-1), np.asarray(d["labels"]).reshape(-1)):
            per_class_det[int(c)].append((img, round(float(s), 3), b))
    aps: dict[float, list[float]] = defaultdict(list)
    for c in range(len(class_names)):
        for t in IOU_THRESHOLDS:
            aps[t].append(100.0 * _class_ap(per_class_gt[c], per_class_det.get(c, []), t, use_07_metric))
    m = {t: float(np.mean(v)) for t, v in aps.items()}
    return {"AP": float(np.mean(list(m.values()))), "AP50": m[0.5], "AP75": m[0.75],
            "per_class_AP50": {n: aps[0.5][i] for i, n in enumerate(class_names)}}
