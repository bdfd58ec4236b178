"""COCO 2017 instances (real COCO and the mini benchmark alike).

Layout::

    <root>/annotations/instances_<split>2017.json
    <root>/<split>2017/*.jpg
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .layout import DataError, require_file, require_layout

log = logging.getLogger(__name__)


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of ``split`` ("train", "val", "train2017", ...), validated."""
    s = split if split.endswith("2017") else f"{split}2017"
    root = require_layout(root, "COCO", {f"annotations/instances_{s}.json": f"annotations/instances_{s}.json",
                                         f"{s}/*": f"{s}/*.jpg"})
    return root / "annotations" / f"instances_{s}.json", root / s


def _finite_numbers(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, (list, tuple)) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """A COCO instances file, parsed and checked; :class:`DataError` naming the file and the first problem.

    Checked: valid JSON holding ``images``, ``annotations`` and ``categories`` lists; every image has an
    ``id``, ``file_name``, and positive ``width`` / ``height``; ids are unique; every annotation names a
    known image and has a ``bbox`` of 4 finite numbers with non-negative width and height (an annotation of
    an unknown category is the readers' to skip and count).
    """
    path = require_file(path, "COCO annotation file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: a COCO instances file is a JSON object, got {type(doc).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{path}: '{key}' must be a list (a COCO instances file has images, annotations "
                            f"and categories)")
    image_ids = set()
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "width", "height"} <= set(im):
            raise DataError(f"{path}: images[{i}] needs id, file_name, width and height")
        if not _finite_numbers([im["width"], im["height"]]) or min(im["width"], im["height"]) <= 0:
            raise DataError(f"{path}: images[{i}] (id {im['id']}): width / height must be positive numbers, "
                            f"got {im['width']!r} x {im['height']!r}")
        if im["id"] in image_ids:
            raise DataError(f"{path}: images[{i}]: image id {im['id']!r} is used twice")
        image_ids.add(im["id"])
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{path}: categories[{i}] needs id and name")
    for i, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict):
            raise DataError(f"{path}: annotations[{i}] is not an object")
        if a.get("image_id") not in image_ids:
            raise DataError(f"{path}: annotations[{i}] (id {a.get('id')!r}): image_id {a.get('image_id')!r} is "
                            f"not an image of this file")
        b = a.get("bbox")
        if not _finite_numbers(b, 4) or b[2] < 0 or b[3] < 0:
            raise DataError(f"{path}: annotations[{i}] (id {a.get('id')!r}): bbox must be 4 finite numbers "
                            f"[x, y, width, height] with width, height >= 0, got {b!r}")
    return doc


def coco_api(doc: dict[str, Any]):
    """A ``pycocotools.coco.COCO`` index over an already read (and checked) instances dict."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(root: str | Path, split: str):
    """A ``pycocotools.coco.COCO`` of ``split``, from the checked file (:func:`read_coco_json`)."""
    ann, _ = coco_paths(root, split)
    return coco_api(read_coco_json(ann))


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
        doc = read_coco_json(self.ann_file)
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        images, anns = doc["images"], doc["annotations"]
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
