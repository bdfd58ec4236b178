"""Pascal VOC detection annotations (real VOC2007/2012 and the mini benchmark alike).

Layout::

    <root>/VOC<year>/ImageSets/Main/<split>.txt     image ids, one per line
    <root>/VOC<year>/Annotations/<id>.xml
    <root>/VOC<year>/JPEGImages/<id>.jpg

``root`` is the ``VOCdevkit`` folder; ``VOC<year>`` itself is accepted too.

Policy for bad input (so a half-broken copy of VOC fails loudly or is cleaned visibly):
    * a listed image whose XML or JPEG is missing -> ``DataLayoutError`` naming the file;
    * an unparsable XML, or a size / box coordinate that is missing, not a number or not finite
      (``nan``, ``inf``) -> :class:`DataError` naming the file, the object and the tag (a NaN box is never kept);
    * a box partly outside the image -> clipped to the image (counted, logged);
    * a box with no overlap with the image, or empty after clipping -> skipped (counted, logged);
    * an object whose class is not in ``class_names`` -> skipped (counted, logged).
    The counts are in ``dataset.stats``; one warning summarises them with a few examples.
"""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .layout import DataError, DataLayoutError, require_file, require_layout

log = logging.getLogger(__name__)


def voc_year_dir(root: str | Path, year: int | str) -> Path:
    """``<root>/VOC<year>`` (or ``root`` itself when it already is ``VOC<year>``), validated."""
    root = Path(root).expanduser()
    if root.name == f"VOC{year}" and not (root / f"VOC{year}").is_dir():
        root = root.parent
    require_layout(root, f"VOC{year}", {f"VOC{year}/ImageSets/Main/*.txt": f"VOC{year}/ImageSets/Main/<split>.txt",
                                        f"VOC{year}/Annotations/*.xml": f"VOC{year}/Annotations/<id>.xml",
                                        f"VOC{year}/JPEGImages/*": f"VOC{year}/JPEGImages/<id>.jpg"})
    return root / f"VOC{year}"


def read_image_ids(list_file: str | Path) -> list[str]:
    """Ids in a VOC ``ImageSets`` list (first column; blank lines skipped)."""
    path = require_file(list_file, "VOC image list")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _number(node: ET.Element | None, tag: str, xml: Path, where: str) -> float:
    """The finite number in ``<tag>`` under ``node``; :class:`DataError` naming file, element and tag."""
    el = node.find(tag) if node is not None else None
    if el is None or el.text is None or not el.text.strip():
        raise DataError(f"{xml}: {where}: missing <{tag}>")
    try:
        v = float(el.text)
    except ValueError:
        raise DataError(f"{xml}: {where}: <{tag}> is {el.text.strip()!r}, expected a number") from None
    if not math.isfinite(v):
        raise DataError(f"{xml}: {where}: <{tag}> is {el.text.strip()!r}, expected a finite number")
    return v


class VOCDetection:
    """Detection records of ``VOC<year>/ImageSets/Main/<split>.txt``.

    ``dataset[i]`` is a dict: ``file_name`` (image path), ``image_id``, ``height``, ``width``,
    ``boxes`` float32 (N, 4) absolute XYXY in continuous pixel coordinates (``xmin - 1, ymin - 1,
    xmax, ymax`` from VOC's 1-based inclusive pixels, as detectron2 reads VOC), ``labels`` int64 (N,)
    indices into ``class_names``, ``difficult`` bool (N,).
    """

    def __init__(self, root: str | Path, year: int | str, split: str, class_names: Sequence[str]) -> None:
        self.dir = voc_year_dir(root, year)
        self.year, self.split, self.class_names = str(year), split, list(class_names)
        self.cls_index = {n: i for i, n in enumerate(self.class_names)}
        ids = read_image_ids(self.dir / "ImageSets" / "Main" / f"{split}.txt")
        self.stats: Counter[str] = Counter()
        self._examples: list[str] = []
        self.records = [self._parse(i) for i in ids]
        self.stats["images"], self.stats["objects"] = len(self.records), sum(len(r["labels"]) for r in self.records)
        bad = {k: v for k, v in self.stats.items() if k not in ("images", "objects")}
        if bad:
            log.warning("VOC%s %s: %s (e.g. %s)", year, split, dict(sorted(bad.items())), "; ".join(self._examples[:3]))
        log.info("VOC%s %s: %d images, %d objects", year, split, self.stats["images"], self.stats["objects"])

    def _note(self, kind: str, msg: str) -> None:
        self.stats[kind] += 1
        if len(self._examples) < 10:
            self._examples.append(msg)

    def _parse(self, image_id: str) -> dict[str, Any]:
        xml = require_file(self.dir / "Annotations" / f"{image_id}.xml", f"VOC{self.year} annotation of listed image")
        img = self.dir / "JPEGImages" / f"{image_id}.jpg"
        require_file(img, f"VOC{self.year} image listed in {self.split}.txt")
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise DataError(f"{xml}: not a valid VOC annotation XML ({e})") from None
        size = tree.find("size")
        w, h = int(_number(size, "width", xml, "<size>")), int(_number(size, "height", xml, "<size>"))
        if w <= 0 or h <= 0:
            from PIL import Image

            with Image.open(img) as im:
                w, h = im.size
        boxes, labels, difficult = [], [], []
        for n_obj, obj in enumerate(tree.findall("object"), 1):
            name = (obj.findtext("name") or "").strip()
            if name not in self.cls_index:
                self._note("skipped_unknown_class", f"{xml.name}: class '{name}'")
                continue
            bb = obj.find("bndbox")
            raw = [_number(bb, k, xml, f"object {n_obj} ({name}) <bndbox>") for k in ("xmin", "ymin", "xmax", "ymax")]
            x0, y0, x1, y1 = raw[0] - 1.0, raw[1] - 1.0, raw[2], raw[3]
            cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
            if cx1 <= cx0 or cy1 <= cy0:
                self._note("skipped_box_outside", f"{xml.name}: box {[f'{v:g}' for v in raw]} outside {w}x{h}")
                continue
            if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                self._note("clipped_box", f"{xml.name}: box {[f'{v:g}' for v in raw]} clipped to {w}x{h}")
            boxes.append([cx0, cy0, cx1, cy1])
            labels.append(self.cls_index[name])
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
        return {"file_name": str(img), "image_id": image_id, "height": h, "width": w,
                "boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
                "difficult": np.asarray(difficult, bool)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.records[i]


def voc_segmentation_pairs(root: str | Path, year: int | str, split: str,
                           ann_dir: str = "SegmentationClass") -> list[tuple[Path, Path]]:
    """``(JPEGImages/<id>.jpg, <ann_dir>/<id>.png)`` for ``ImageSets/Segmentation/<split>.txt``.

    ``split="aug"`` with ``ann_dir="SegmentationClassAug"`` gives the VOC12 aug set. A listed id with a
    missing image or mask raises ``DataLayoutError`` naming it.
    """
    d = voc_year_dir(root, year)
    ids = read_image_ids(d / "ImageSets" / "Segmentation" / f"{split}.txt")
    out = []
    for i in ids:
        img = require_file(d / "JPEGImages" / f"{i}.jpg", f"VOC{year} image listed in Segmentation/{split}.txt")
        ann = require_file(d / ann_dir / f"{i}.png", f"VOC{year} mask listed in Segmentation/{split}.txt")
        out.append((img, ann))
    if not out:
        raise DataLayoutError(f"VOC{year} list '{d / 'ImageSets' / 'Segmentation' / f'{split}.txt'}' is empty")
    return out


# --------------------------------------------------------------------------------------------------
# segmentation masks
# --------------------------------------------------------------------------------------------------
def mask_array(raw: Any, path: str | Path, image_hw: tuple[int, int] | None = None,
               image_path: str | Path | None = None) -> np.ndarray:
    """A decoded segmentation mask (``raw``: as read, unchanged) as a 2-D ``uint8`` array of class indices.

    Refused (:class:`DataError` naming the file): an undecodable mask, a colour mask (3 or 4 channels: the class
    indices are one channel, a palette or grayscale PNG), values that do not fit 0..255 (a 16-bit mask would wrap
    around), a size that is not the image's (``image_hw``: its height and width)."""
    if raw is None:
        raise DataError(f"mask {path} cannot be decoded (not an image)")
    a = np.asarray(raw)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        what = f"{a.shape[2]} channels (a colour mask?)" if a.ndim == 3 else f"shape {tuple(a.shape)}"
        raise DataError(f"mask {path} has {what}; expected one channel of class indices (a palette or grayscale PNG)")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "iub":
            raise DataError(f"mask {path} holds {a.dtype} values; expected integer class indices")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise DataError(f"mask {path} holds labels {lo}..{hi} ({a.dtype}); class indices are 0..255 "
                            f"(255 = ignore)")
        a = a.astype(np.uint8)
    if image_hw is not None and tuple(a.shape) != tuple(int(x) for x in image_hw[:2]):
        (h, w), (ih, iw) = a.shape, image_hw[:2]
        raise DataError(f"mask {path} is {w}x{h} but its image {image_path or ''} is {iw}x{ih} (width x height); a "
                        f"mask has its image's size")
    return a


def check_mask_labels(mask: np.ndarray, path: str | Path, num_classes: int, ignore_index: int = 255,
                      note: str = "") -> None:
    """Every label of ``mask`` (2-D ``uint8``) is a class (0..``num_classes``-1) or ``ignore_index``, else a
    :class:`DataError` naming the file and the labels (``note``: how they were read, e.g. reduce_zero_label)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    bad = [int(v) for v in np.flatnonzero(counts) if v >= num_classes and v != ignore_index]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" ... ({len(bad)} labels)" if len(bad) > 10 else "")
        raise DataError(f"mask {path}: labels {shown} are outside 0..{num_classes - 1} and {ignore_index} (ignore)"
                        f"{note}; the config has {num_classes} classes")
