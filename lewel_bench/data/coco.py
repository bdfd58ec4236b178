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
