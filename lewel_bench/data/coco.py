"""COCO 2017 instances (real COCO and the mini benchmark alike).

Layout::

    <root>/annotations/instances_<split>2017.json
    <root>/<split>2017/*.jpg
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .layout import require_file, require_layout

log = logging.getLogger(__name__)


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of ``split`` ("train", "val", "train2017", ...), validated."""
    s = split if split.endswith("2017") else f"{split}2017"
    root = require_layout(root, "COCO", {f"annotations/instances_{s}.json": f"annotations/instances_{s}.json",
                                         f"{s}/*": f"{s}/*.jpg"})
    return root / "annotations" / f"instances_{s}.json", root / s


def load_coco(root: str | Path, split: str):
    """A ``pycocotools.coco.COCO`` of ``split`` (imported lazily)."""
    from pycocotools.coco import COCO

    ann, _ = coco_paths(root, split)
    return COCO(str(ann))


class COCODetection:
    """Per-image records of a COCO instances file (crowd annotations kept and flagged).

    ``dataset[i]`` is a dict: ``file_name`` (image path), ``image_id``, ``height``, ``width``,
    ``boxes`` float32 (N, 4) absolute XYXY, ``labels`` int64 (N,) contiguous 0-based class indices
    (sorted category ids), ``category_ids`` (N,), ``segmentations`` (list of COCO polygons / RLE),
    ``iscrowd`` bool (N,). ``class_names`` / ``category_ids`` map indices to COCO categories.
    Images without annotations are kept (``keep_empty=True``) as COCO evaluation expects.
    """

    def __init__(self, root: str | Path, split: str, keep_empty: bool = True) -> None:
        self.ann_file, self.image_dir = coco_paths(root, split)
        try:
            doc = json.loads(self.ann_file.read_text())
            cats = sorted(doc["categories"], key=lambda c: c["id"])
            images, anns = doc["images"], doc["annotations"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.ann_file}: not a COCO instances file (needs images, annotations, "
                             f"categories): {e!r}") from e
        self.category_ids = [c["id"] for c in cats]
        self.class_names = [c["name"] for c in cats]
        cat_index = {c: i for i, c in enumerate(self.category_ids)}
        per_image: dict[int, list[dict]] = {}
        for a in anns:
            per_image.setdefault(a["image_id"], []).append(a)
        self.records: list[dict[str, Any]] = []
        for img in sorted(images, key=lambda im: im["id"]):
            objs = per_image.get(img["id"], [])
            if not objs and not keep_empty:
                continue
            xywh = np.asarray([a["bbox"] for a in objs], np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            self.records.append({
                "file_name": str(self.image_dir / img["file_name"]), "image_id": img["id"],
                "height": img["height"], "width": img["width"], "boxes": boxes,
                "labels": np.asarray([cat_index[a["category_id"]] for a in objs], np.int64),
                "category_ids": np.asarray([a["category_id"] for a in objs], np.int64),
                "segmentations": [a.get("segmentation") for a in objs],
                "iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a in objs], bool)})
        if self.records:
            require_file(self.records[0]["file_name"], f"COCO image of {self.ann_file.name}")
        log.info("COCO %s: %d images, %d annotations, %d categories", split, len(self.records), len(anns), len(cats))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.records[i]
