"""Detection datasets for the torchvision backend: VOC (through ``lewel_bench.data.voc``) and COCO.

Both give :class:`DetSample` lists with boxes in 0-based continuous ``xyxy`` pixels (detectron2's
convention: a VOC box ``xmin=1 .. xmax=W`` covers the whole image and becomes ``0 .. W``) and
0-based class indices; the model adds 1 for torchvision's background-at-0 labels.

Bad-input policy (the same for both formats; counts are logged per split and returned in ``skips``;
VOC uses the shared reader :mod:`lewel_bench.data.voc`, whose counters are named ``clipped_box``,
``skipped_box_outside`` and ``skipped_unknown_class``):

* an image listed in the split (VOC ``ImageSets/Main/<split>.txt``) or in the COCO json whose file is
  missing: **error** naming the file and how many are missing (never a crash later in a worker);
* a box partly outside the image: **clipped** to the image and counted (``clipped``); a box that is
  empty after clipping (width or height < 1 px): **skipped** and counted (``empty_box``);
* an object whose class is not in the class list / not a COCO category: **skipped** and counted
  (``unknown_class``);
* COCO ``iscrowd`` objects: not trained on (as detectron2), counted (``crowd``); kept by pycocotools
  for the evaluation, where they are "ignore" regions;
* a training image left with no object: dropped from training (detectron2's
  ``FILTER_EMPTY_ANNOTATIONS``) and counted (``empty_image``); test images are always kept.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lewel_bench.data.imagenet import read_image
from lewel_bench.data.layout import DataError

log = logging.getLogger(__name__)

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


class DatasetError(DataError):
    """A detection dataset cannot be used as given (missing files, malformed annotations)."""


@dataclass
class DetSample:
    image_id: Any
    file: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32, 0-based continuous xyxy, clipped to the image
    labels: np.ndarray  # (N,) int64, 0-based class index
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    gt_boxes: np.ndarray | None = None  # VOC: the XML's 1-based inclusive boxes, for the evaluator

    @property
    def gt_labels(self) -> np.ndarray:
        return self.labels
    anns: list | None = None  # COCO: kept annotation dicts (segmentation for masks)


def resolve_class_names(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``voc`` -> the 20 VOC classes, ``mini`` -> the mini shapes, or an explicit list."""
    if isinstance(spec, str):
        if spec == "voc":
            return VOC_CLASSES
        if spec == "mini":
            from lewel_bench.data.mini import SHAPE_CLASSES
            return tuple(SHAPE_CLASSES)
        raise DatasetError(f"unknown class list {spec!r}; expected 'voc', 'mini' or a list of names")
    return tuple(spec)


def _check_files(samples: list[DetSample], what: str) -> None:
    missing = [s.file for s in samples if not s.file.is_file()]
    if missing:
        raise DatasetError(f"{what}: {len(missing)} of {len(samples)} listed images are missing "
                           f"(first: {', '.join(map(str, missing[:3]))})")


def _clip(boxes: np.ndarray, w: int, h: int, skips: Counter) -> tuple[np.ndarray, np.ndarray]:
    """Clip 0-based boxes to the image; returns (boxes, keep mask) and counts clipped / empty boxes."""
    if boxes.size == 0:
        return boxes.reshape(0, 4), np.zeros(0, bool)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    changed = (np.abs(clipped - boxes) > 1e-6).any(1)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
    for key, n in (("clipped", int((changed & keep).sum())), ("empty_box", int((~keep).sum()))):
        if n:
            skips[key] += n
    return clipped, keep


# ------------------------------------------------------------------------------------------------
# VOC
# ------------------------------------------------------------------------------------------------
def load_voc(root: str | Path, year: str, split: str, class_names: Sequence[str], train: bool) -> tuple[list[DetSample], Counter]:
    """``<root>/VOC<year>`` split ``split`` read by the shared :class:`lewel_bench.data.voc.VOCDetection`.

    Its policy (missing listed image -> error; box partly outside -> clipped; no overlap -> skipped;
    unknown class -> skipped; all counted and logged) is the one documented above. The evaluator's
    ground truth (``gt_boxes``) is the reader's box back in VOC's 1-based inclusive pixels
    (``x1 + 1, y1 + 1, x2, y2``), i.e. exactly the XML's integers for an unclipped box.
    """
    from lewel_bench.data.voc import VOCDetection

    ds = VOCDetection(root, year, split, class_names)
    skips = Counter({k: v for k, v in ds.stats.items() if k not in ("images", "objects")})
    out = []
    for r in ds.records:
        boxes = np.asarray(r["boxes"], np.float32).reshape(-1, 4)
        labels = np.asarray(r["labels"], np.int64)
        s = DetSample(image_id=f"{year}_{r['image_id']}", file=Path(r["file_name"]), width=int(r["width"]),
                      height=int(r["height"]), boxes=boxes, labels=labels,
                      difficult=np.asarray(r["difficult"], bool),
                      gt_boxes=boxes.astype(np.float64) + np.array([1.0, 1.0, 0.0, 0.0]))
        if train and len(labels) == 0:
            skips["empty_image"] += 1
            continue
        out.append(s)
    if skips.get("empty_image"):
        log.warning("VOC%s %s: %d training images without any usable object dropped", year, split, skips["empty_image"])
    return out, skips


def load_voc_splits(root: str | Path, splits: Sequence[Sequence[str]], class_names: Sequence[str],
                    train: bool) -> tuple[list[DetSample], Counter]:
    """Concatenate several ``[year, split]`` pairs (e.g. 07 trainval + 12 trainval)."""
    out, skips = [], Counter()
    for year, split in splits:
        s, k = load_voc(root, year, split, class_names, train)
        out.extend(s)
        skips.update(k)
    return out, skips


# ------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------
def load_coco(ann_file: str | Path, image_dir: str | Path, train: bool) -> tuple[list[DetSample], Counter, Any]:
    """A COCO json as :class:`DetSample` (+ the pycocotools ``COCO`` object and the skip counts).

    The file is checked first (:func:`lewel_bench.data.coco.read_coco_json`: malformed JSON, missing fields,
    unknown ids, non-finite boxes are an error naming the file and the entry)."""
    from lewel_bench.data.coco import coco_api, read_coco_json

    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file():
        raise DatasetError(f"COCO annotation file not found: {ann_file}")
    coco = coco_api(read_coco_json(ann_file))
    cat_ids = sorted(coco.getCatIds())
    if not cat_ids:
        raise DatasetError(f"{ann_file}: no categories")
    cat_to_label = {c: i for i, c in enumerate(cat_ids)}
    skips: Counter = Counter()
    samples = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        w, h = int(info["width"]), int(info["height"])
        kept, boxes, labels = [], [], []
        for a in coco.imgToAnns.get(img_id, []):
            if a.get("category_id") not in cat_to_label:
                skips["unknown_class"] += 1
                continue
            if a.get("iscrowd", 0):
                skips["crowd"] += 1
                continue
            x, y, bw, bh = (float(v) for v in a["bbox"])
            kept.append(a)
            boxes.append([x, y, x + bw, y + bh])
            labels.append(cat_to_label[a["category_id"]])
        boxes_np, keep = _clip(np.asarray(boxes, np.float32).reshape(-1, 4), w, h, skips)
        s = DetSample(image_id=img_id, file=image_dir / info["file_name"], width=w, height=h, boxes=boxes_np[keep],
                      labels=np.asarray(labels, np.int64)[keep], anns=[a for a, k in zip(kept, keep) if k])
        if train and len(s.labels) == 0:
            skips["empty_image"] += 1
            continue
        samples.append(s)
    _check_files(samples, f"COCO {ann_file.name} ({image_dir})")
    _log_skips(f"COCO {ann_file.name}", len(samples), skips)
    coco.lewel_cat_ids = cat_ids
    return samples, skips, coco


def coco_class_names(coco: Any) -> tuple[str, ...]:
    return tuple(coco.cats[c]["name"] for c in coco.lewel_cat_ids)


def _log_skips(what: str, n: int, skips: Counter) -> None:
    if skips:
        log.warning("%s: %d images; bad-input policy applied: %s", what, n,
                    ", ".join(f"{k}={v}" for k, v in sorted(skips.items())))
    else:
        log.info("%s: %d images, no bad input", what, n)


# ------------------------------------------------------------------------------------------------
# torch Dataset
# ------------------------------------------------------------------------------------------------
class DetectionDataset(torch.utils.data.Dataset):
    """Image (float RGB in [0, 1], CHW) and a torchvision detection target; horizontal flip in training."""

    def __init__(self, samples: list[DetSample], train: bool, masks: bool = False, coco: Any = None,
                 flip_prob: float = 0.5) -> None:
        if not samples:
            raise DatasetError("empty detection dataset")
        self.samples, self.train, self.masks, self.coco, self.flip_prob = samples, train, masks, coco, flip_prob
        if masks and coco is None:
            raise DatasetError("masks need COCO-format annotations")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.samples[i]
        img = np.asarray(read_image(s.file))
        if img.shape[:2] != (s.height, s.width):
            raise DatasetError(f"{s.file}: image is {img.shape[1]}x{img.shape[0]} but the annotation says "
                               f"{s.width}x{s.height}")
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float().div_(255.0)
        boxes = torch.from_numpy(s.boxes.astype(np.float32)).reshape(-1, 4)
        target = {"boxes": boxes, "labels": torch.from_numpy(s.labels + 1).long(), "index": torch.tensor(i)}
        if self.masks:
            m = [self.coco.annToMask(a) for a in s.anns]
            target["masks"] = (torch.from_numpy(np.stack(m)) if m else torch.zeros(0, s.height, s.width)).to(torch.uint8)
        if self.train and random.random() < self.flip_prob:
            x = x.flip(-1)
            b = target["boxes"].clone()
            target["boxes"] = torch.stack([s.width - b[:, 2], b[:, 1], s.width - b[:, 0], b[:, 3]], 1)
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return x, target


def collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]
