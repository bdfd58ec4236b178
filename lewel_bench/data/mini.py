"""Embedded mini benchmark: a procedural "shapes" dataset in the ImageNet, VOC and COCO layouts.

Every image is rendered from ``numpy.random.default_rng([seed, stream, index])``, so the output is a
pure function of the seed and the sizes (byte-identical files for the same seed, on the same
numpy/Pillow build), and any image can be rendered on its own.

What makes it need *learned* features, and what self-supervised pretraining can learn from it:
    * 10 shape classes (:data:`SHAPE_CLASSES`) drawn at random size, position and rotation, so the
      class is the object's *shape*: a linear probe on raw pixels stays near chance (``tests/test_data.py``);
    * each object is uniformly lighter or darker than its background (random sign and contrast, pixel
      noise) on a smooth low-contrast grey background, and the whole image gets a random tint.
    The nuisances (grey level, contrast, tint, position, scale) are ones the SSL augmentations (colour
    jitter, grayscale, random resized crops) teach invariance to, and what two views of an image share is
    the shape and its orientation. An earlier version painted every object and background with its own
    random colours and textures: cross-view SSL then learnt those per-image colour/texture codes, which
    carry no class, and its features did not beat a random-init network's in a mini-sized run.

Layouts written under ``out`` (the conventions in ``docs/CONVENTIONS.md``):
    imagenet/{train,val}/<wnid>/<wnid>_<i>.JPEG, imagenet/{1percent,10percent}.txt, imagenet/classes.txt
    VOCdevkit/VOC2007/{Annotations,JPEGImages,SegmentationClass,ImageSets/{Main,Segmentation}}
    VOCdevkit/VOC2012/... + SegmentationClassAug and ImageSets/Segmentation/aug.txt
    coco/annotations/instances_{train,val}2017.json, coco/{train,val}2017/*.jpg
    .complete   JSON {seed, sizes, version}, written last and atomically.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lewel_bench.errors import LewelError
from lewel_bench.io import atomic_write_json

from .layout import DataError


class ForeignFolderError(LewelError, FileExistsError):
    """The output folder of the generator holds files it did not make."""

log = logging.getLogger(__name__)

GENERATOR_VERSION = 4
#: Background: smooth grey blobs scaled by this around mid-grey, plus pixel noise of this sigma.
BG_CONTRAST = 0.25
BG_NOISE = 8.0
#: Object grey level: the local background mean +- U(OBJECT_CONTRAST) (random sign), pixel noise sigma.
OBJECT_CONTRAST = (50.0, 100.0)
OBJECT_NOISE = 15.0
#: Per-image tint: each RGB channel scaled by U(1 - TINT, 1 + TINT).
TINT = 0.15

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "hexagon", "ellipse", "diamond", "heart",
)
#: ImageNet-style synset ids of the shape classes (sorted order == class index order).
WNIDS: tuple[str, ...] = tuple(f"n9{i + 1:07d}" for i in range(len(SHAPE_CLASSES)))

#: Default sizes (``generate_mini(out, seed, **sizes)`` accepts any subset of these keys).
DEFAULT_SIZES: dict[str, int] = {
    "imagenet_train_per_class": 300,  # must be a multiple of 100 (1% subset is class-balanced)
    "imagenet_val_per_class": 50,
    "imagenet_size": 96,
    "voc07_trainval": 600,  # split in half into train / val
    "voc07_test": 300,
    "voc12_train": 300,  # segmentation train (also Main/train)
    "voc12_val": 200,  # segmentation val (also Main/val)
    "voc12_aug": 600,  # extra images only in SegmentationClassAug, Main/train and aug.txt
    "coco_train": 800,
    "coco_val": 200,
    "det_min_size": 160,
    "det_max_size": 224,
    "max_objects": 4,
}

#: Small sizes for tests (the ``mini_data`` pytest fixture): about 1.5 s to generate on one core.
TEST_SIZES: dict[str, int] = {
    "imagenet_train_per_class": 100,  # 1000 train images (1% subset: 1 per class, 10%: 10 per class)
    "imagenet_val_per_class": 20,  # 200 val images
    "imagenet_size": 64,
    "voc07_trainval": 20,  # VOC2007: 10 train + 10 val, 10 test
    "voc07_test": 10,
    "voc12_train": 10,  # VOC2012: 10 train + 10 val (SegmentationClass), 10 extra aug
    "voc12_val": 10,
    "voc12_aug": 10,
    "coco_train": 20,  # COCO: 20 train, 10 val images
    "coco_val": 10,
    "det_min_size": 96,  # detection images 96..128 px, 1..4 objects
    "det_max_size": 128,
    "max_objects": 4,
}

JPEG_QUALITY = 90
_STREAMS = {"imagenet_train": 1, "imagenet_val": 2, "voc2007": 3, "voc2012": 4, "coco_train": 5,
            "coco_val": 6, "subsets": 7}
_OWNED = ("imagenet", "VOCdevkit", "coco")  # sub-folders of ``out`` that generate_mini owns


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------
def _circle_pts(n: int, rx: float = 1.0, ry: float = 1.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], 1)


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star() -> np.ndarray:
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cross(a: float = 0.33) -> np.ndarray:
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
                     [-1, a], [-1, -a], [-a, -a]], dtype=np.float64)


def _ring(inner: float = 0.55, n: int = 40) -> np.ndarray:
    """A ring as ONE polygon: the outer circle, a zero-width slit, the inner circle reversed."""
    outer = _circle_pts(n)
    inner_pts = _circle_pts(n) * inner
    inner_rev = np.concatenate([inner_pts[:1], inner_pts[:0:-1], inner_pts[:1]])
    return np.concatenate([outer, outer[:1], inner_rev])


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = np.stack([x, y], 1)
    p -= (p.max(0) + p.min(0)) / 2
    return p / np.abs(p).max()


#: Unit polygons (vertices in [-1, 1]^2) per class. Square vs diamond and circle vs ellipse differ in
#: shape (aspect / angles), not just rotation, because every object is rotated at random.
_UNIT_SHAPES: dict[str, np.ndarray] = {
    "circle": _circle_pts(48),
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.8,
    "triangle": _regular(3),
    "star": _star(),
    "cross": _cross(),
    "ring": _ring(),
    "hexagon": _regular(6),
    "ellipse": _circle_pts(48, 1.0, 0.5),
    "diamond": np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]], dtype=np.float64),
    "heart": _heart(),
}
assert tuple(_UNIT_SHAPES) == SHAPE_CLASSES


def shape_polygon(cls: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) in PIL pixel coordinates of class ``cls`` with diameter ``size``."""
    p = _UNIT_SHAPES[SHAPE_CLASSES[cls]]
    c, s = np.cos(angle), np.sin(angle)
    rot = p @ np.array([[c, s], [-s, c]])
    return rot * (size / 2.0) + np.array([cx, cy])


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------
def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float32 grey background: smooth random blobs at :data:`BG_CONTRAST` around mid-grey, plus
    pixel noise (sigma :data:`BG_NOISE`)."""
    k = int(rng.integers(2, 5))
    low = rng.integers(0, 256, size=(k, k), dtype=np.uint8)
    bg = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR), dtype=np.float32)
    noise = rng.standard_normal(size=(h, w), dtype=np.float32) * np.float32(BG_NOISE)
    return np.float32(128.0) + (bg - np.float32(128.0)) * np.float32(BG_CONTRAST) + noise


def colourise(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8: the grey scene under a random tint (each channel scaled by 1 +- :data:`TINT`)."""
    tint = rng.uniform(1.0 - TINT, 1.0 + TINT, size=3).astype(np.float32)
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)


@dataclass
class ShapeObject:
    """One rendered object: class index, polygon (PIL pixel coords), full-image bool mask, tight box."""

    cls: int
    polygon: np.ndarray
    mask: np.ndarray  # (H, W) bool
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive 0-based pixel indices


def _extent(poly: np.ndarray) -> np.ndarray:
    return np.concatenate([poly.min(0), poly.max(0)])  # x0, y0, x1, y1


def paint_object(img: np.ndarray, rng: np.random.Generator, cls: int, poly: np.ndarray) -> ShapeObject:
    """Rasterise ``poly`` (PIL polygon fill) into the grey scene ``img``, in place.

    The object is uniformly lighter or darker (random sign, the same rule for every class) than the mean
    of the background around it by U(:data:`OBJECT_CONTRAST`), with pixel noise :data:`OBJECT_NOISE`.
    """
    h, w = img.shape[:2]
    ex = _extent(poly)
    x0, y0 = max(int(np.floor(ex[0])) - 1, 0), max(int(np.floor(ex[1])) - 1, 0)
    x1, y1 = min(int(np.ceil(ex[2])) + 2, w), min(int(np.ceil(ex[3])) + 2, h)
    crop = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(crop).polygon([(float(x) - x0, float(y) - y0) for x, y in poly], fill=255)
    m = np.asarray(crop) > 0
    region = img[y0:y1, x0:x1]
    mb = float((region[~m] if (~m).any() else region).mean())
    level = mb + (1.0 if rng.random() < 0.5 else -1.0) * rng.uniform(*OBJECT_CONTRAST)
    region[m] = np.float32(level) + rng.standard_normal(size=int(m.sum()), dtype=np.float32) * np.float32(OBJECT_NOISE)
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = m
    ys, xs = np.nonzero(m)
    box = (int(xs.min()) + x0, int(ys.min()) + y0, int(xs.max()) + x0, int(ys.max()) + y0)
    return ShapeObject(cls, poly, mask, box)


def render_classification(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """A (size, size, 3) uint8 image with one object of class ``cls`` (60-95 % of the image wide)."""
    img = background(rng, size, size)
    diam = rng.uniform(0.6, 0.95) * size
    poly = shape_polygon(cls, 0.0, 0.0, diam, rng.uniform(0.0, 2.0 * np.pi))
    ex = _extent(poly)
    lo, hi = -ex[:2] + 1, size - 2 - ex[2:]
    off = np.where(hi > lo, rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi)), (lo + hi) / 2)
    paint_object(img, rng, cls, poly + off)
    return colourise(rng, img)


def render_detection(rng: np.random.Generator, min_size: int, max_size: int, max_objects: int,
                     margin: int = 6) -> tuple[np.ndarray, list[ShapeObject]]:
    """A variable-size scene with 1..max_objects non-overlapping objects (boxes ``margin`` px apart)."""
    w, h = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    img = background(rng, h, w)
    n = int(rng.integers(1, max_objects + 1))
    placed: list[np.ndarray] = []
    objects: list[ShapeObject] = []
    for _ in range(n):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        for _try in range(30):
            diam = rng.uniform(0.18, 0.5) * min(h, w)
            poly = shape_polygon(cls, 0.0, 0.0, diam, rng.uniform(0.0, 2.0 * np.pi))
            ex = _extent(poly)
            lo, hi = -ex[:2] + margin, np.array([w, h]) - margin - ex[2:]
            if np.any(hi <= lo):
                continue
            poly = poly + rng.uniform(lo, hi)
            ex = _extent(poly)
            if all(ex[0] > p[2] + margin or ex[2] + margin < p[0] or ex[1] > p[3] + margin
                   or ex[3] + margin < p[1] for p in placed):
                placed.append(ex)
                objects.append(paint_object(img, rng, cls, poly))
                break
    return colourise(rng, img), objects


# ----------------------------------------------------------------------------------------------
# Encoders (deterministic bytes: no timestamps, no metadata)
# ----------------------------------------------------------------------------------------------
def voc_palette() -> list[int]:
    """The standard 256-colour Pascal VOC palette (flat list of 768 ints)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


_PALETTE = voc_palette()


def _save_jpeg(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="JPEG", quality=JPEG_QUALITY)


def _save_png(arr: np.ndarray, path: Path, palette: bool) -> None:
    """Single-channel PNG: mode "P" with the VOC palette, or plain "L" (class indices)."""
    im = Image.frombytes("P" if palette else "L", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    if palette:
        im.putpalette(_PALETTE)
    im.save(path, format="PNG")


def segmentation_maps(h: int, w: int, objects: list[ShapeObject]) -> tuple[np.ndarray, np.ndarray]:
    """(class map with 255 borders like VOC's SegmentationClass, plain class map like SBD's aug set).

    Class index = 1 + shape index, 0 = background. The 255 band is the object outline dilated and
    eroded by 2 px (about 5 px wide, inside and outside the object, as in real VOC).
    """
    plain = np.zeros((h, w), np.uint8)
    for o in objects:
        plain[o.mask] = o.cls + 1
    bordered = plain.copy()
    for o in objects:
        x0, y0, x1, y1 = max(o.box[0] - 3, 0), max(o.box[1] - 3, 0), min(o.box[2] + 4, w), min(o.box[3] + 4, h)
        crop = Image.fromarray(o.mask[y0:y1, x0:x1].astype(np.uint8) * 255)
        dil = np.asarray(crop.filter(ImageFilter.MaxFilter(5))) > 0
        ero = np.asarray(crop.filter(ImageFilter.MinFilter(5))) > 0
        bordered[y0:y1, x0:x1][dil & ~ero] = 255
    return bordered, plain


def voc_xml(folder: str, filename: str, w: int, h: int, objects: list[ShapeObject]) -> str:
    """A Pascal VOC annotation (1-based inclusive pixel boxes)."""
    lines = ["<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{filename}</filename>",
             "\t<source>", "\t\t<database>lewel-bench mini shapes</database>",
             "\t\t<annotation>procedural</annotation>", "\t\t<image>procedural</image>", "\t</source>",
             "\t<size>", f"\t\t<width>{w}</width>", f"\t\t<height>{h}</height>", "\t\t<depth>3</depth>",
             "\t</size>", "\t<segmented>1</segmented>"]
    for o in objects:
        x0, y0, x1, y1 = o.box
        lines += ["\t<object>", f"\t\t<name>{SHAPE_CLASSES[o.cls]}</name>", "\t\t<pose>Unspecified</pose>",
                  "\t\t<truncated>0</truncated>", "\t\t<difficult>0</difficult>", "\t\t<bndbox>",
                  f"\t\t\t<xmin>{x0 + 1}</xmin>", f"\t\t\t<ymin>{y0 + 1}</ymin>",
                  f"\t\t\t<xmax>{x1 + 1}</xmax>", f"\t\t\t<ymax>{y1 + 1}</ymax>", "\t\t</bndbox>", "\t</object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def coco_annotation(ann_id: int, image_id: int, o: ShapeObject) -> dict[str, Any]:
    """COCO instance: polygon in COCO's continuous coordinates (PIL pixel centre + 0.5), tight xywh box."""
    x0, y0, x1, y1 = o.box
    poly = [round(float(v), 2) for v in (o.polygon + 0.5).reshape(-1)]
    return {"id": ann_id, "image_id": image_id, "category_id": o.cls + 1, "segmentation": [poly],
            "area": float(o.mask.sum()), "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
            "iscrowd": 0}


def coco_categories() -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------
def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


def _progress(it, desc: str, total: int):
    try:
        from tqdm import tqdm

        return tqdm(it, desc=desc, total=total, leave=False, mininterval=2.0, disable=None)
    except ImportError:  # pragma: no cover
        return it


def _run(fn: Callable, tasks: list[tuple], workers: int, desc: str) -> list:
    """``[fn(*t) for t in tasks]`` in task order, over ``workers`` processes when > 1.

    Each task renders from its own ``(seed, stream, index)`` generator, so the output does not depend
    on ``workers``.
    """
    if workers <= 1 or len(tasks) < 32:
        return [fn(*t) for t in _progress(tasks, desc, len(tasks))]
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        return list(_progress(pool.imap(_star_call, [(fn, t) for t in tasks], chunksize=16), desc, len(tasks)))


def _star_call(job: tuple[Callable, tuple]) -> Any:
    fn, args = job
    return fn(*args)


def _imagenet_item(path: Path, seed: int, stream: str, k: int, cls: int, size: int) -> None:
    _save_jpeg(render_classification(_rng(seed, stream, k), cls, size), path)


def write_imagenet(root: Path, seed: int, train_per_class: int, val_per_class: int, size: int,
                   workers: int = 1) -> None:
    """ImageNet folder layout plus SimCLR-style class-balanced 1% / 10% subset files."""
    if train_per_class % 100 != 0:
        raise DataError(f"imagenet_train_per_class={train_per_class}: must be a multiple of 100 so the "
                         "1% subset is exactly 1% and class-balanced")
    n_cls = len(SHAPE_CLASSES)
    for split, per_class, stream in (("train", train_per_class, "imagenet_train"),
                                     ("val", val_per_class, "imagenet_val")):
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
        tasks = []
        for k in range(per_class * n_cls):
            c, i = k % n_cls, k // n_cls
            tasks.append((root / split / WNIDS[c] / f"{WNIDS[c]}_{i}.JPEG", seed, stream, k, c, size))
        _run(_imagenet_item, tasks, workers, f"imagenet/{split}")
    rng = _rng(seed, "subsets", 0)
    for pct, name in ((1, "1percent.txt"), (10, "10percent.txt")):
        k = train_per_class * pct // 100
        lines = []
        for wnid in WNIDS:
            idx = np.sort(rng.choice(train_per_class, size=k, replace=False))
            lines += [f"{wnid}_{i}.JPEG" for i in idx]
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, SHAPE_CLASSES)))


def _write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def _voc_item(root: Path, year: int, img_id: str, seed: int, k: int, class_png: bool,
              det: dict[str, int]) -> None:
    arr, objs = render_detection(_rng(seed, f"voc{year}", k), det["det_min_size"], det["det_max_size"],
                                 det["max_objects"])
    h, w = arr.shape[:2]
    _save_jpeg(arr, root / "JPEGImages" / f"{img_id}.jpg")
    (root / "Annotations" / f"{img_id}.xml").write_text(voc_xml(f"VOC{year}", f"{img_id}.jpg", w, h, objs))
    bordered, plain = segmentation_maps(h, w, objs)
    if class_png:
        _save_png(bordered, root / "SegmentationClass" / f"{img_id}.png", palette=True)
    if year == 2012:
        _save_png(plain, root / "SegmentationClassAug" / f"{img_id}.png", palette=False)


def write_voc(root: Path, year: int, seed: int, splits: dict[str, int], det: dict[str, int],
              workers: int = 1) -> None:
    """One VOC year under ``root`` (= VOCdevkit/VOC<year>).

    VOC2007: ``splits`` = {train, val, test}; every image has XML + SegmentationClass; Main and
    Segmentation lists train/val/trainval/test.
    VOC2012: ``splits`` = {train, val, aug}; all images have XML and SegmentationClassAug (plain class
    indices, no 255 borders, like the SBD-derived aug set), train/val also SegmentationClass.
    Segmentation lists: train, val, trainval, aug (= train + aug, excluding val, like the
    10,582-image list); Main lists: train (= train + aug), val, trainval.
    """
    for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if year == 2012:
        (root / "SegmentationClassAug").mkdir(exist_ok=True)
    ids: dict[str, list[str]] = {}
    tasks = []
    k = 0
    for split, n in splits.items():
        ids[split] = []
        for _ in range(n):
            img_id = f"{k + 1:06d}" if year == 2007 else f"{year}_{k + 1:06d}"
            tasks.append((root, year, img_id, seed, k, year == 2007 or split in ("train", "val"), det))
            ids[split].append(img_id)
            k += 1
    _run(_voc_item, tasks, workers, f"VOC{year}")
    main, seg = root / "ImageSets" / "Main", root / "ImageSets" / "Segmentation"
    if year == 2007:
        for d in (main, seg):
            _write_list(d / "train.txt", ids["train"])
            _write_list(d / "val.txt", ids["val"])
            _write_list(d / "trainval.txt", ids["train"] + ids["val"])
            _write_list(d / "test.txt", ids["test"])
    else:
        _write_list(main / "train.txt", ids["train"] + ids["aug"])
        _write_list(main / "val.txt", ids["val"])
        _write_list(main / "trainval.txt", sorted(ids["train"] + ids["aug"] + ids["val"]))
        _write_list(seg / "train.txt", ids["train"])
        _write_list(seg / "val.txt", ids["val"])
        _write_list(seg / "trainval.txt", ids["train"] + ids["val"])
        _write_list(seg / "aug.txt", ids["train"] + ids["aug"])


def _coco_item(img_dir: Path, seed: int, stream: str, k: int, image_id: int,
               det: dict[str, int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    arr, objs = render_detection(_rng(seed, stream, k), det["det_min_size"], det["det_max_size"],
                                 det["max_objects"])
    h, w = arr.shape[:2]
    fname = f"{image_id:012d}.jpg"
    _save_jpeg(arr, img_dir / fname)
    return ({"id": image_id, "file_name": fname, "width": w, "height": h},
            [coco_annotation(0, image_id, o) for o in objs])


def write_coco(root: Path, seed: int, n_train: int, n_val: int, det: dict[str, int], workers: int = 1) -> None:
    """COCO 2017 layout: instances json with polygon masks; image and annotation ids unique across splits."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    image_id, ann_id = 1, 1
    for split, n, stream in (("train", n_train, "coco_train"), ("val", n_val, "coco_val")):
        img_dir = root / f"{split}2017"
        img_dir.mkdir(exist_ok=True)
        tasks = [(img_dir, seed, stream, k, image_id + k, det) for k in range(n)]
        image_id += n
        images, anns = [], []
        for img, img_anns in _run(_coco_item, tasks, workers, f"coco/{split}"):
            images.append(img)
            for a in img_anns:
                a["id"] = ann_id
                ann_id += 1
                anns.append(a)
        doc = {"info": {"description": "lewel-bench mini shapes (procedural)", "version": str(GENERATOR_VERSION),
                        "seed": seed},
               "licenses": [], "images": images, "annotations": anns, "categories": coco_categories()}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc, separators=(",", ":")))


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def resolve_sizes(**sizes: int) -> dict[str, int]:
    """DEFAULT_SIZES updated with ``sizes``, checked before anything is written (a :class:`DataError` naming the
    key: unknown keys, negative counts, ``imagenet_train_per_class`` not a multiple of 100, detection sizes)."""
    unknown = sorted(set(sizes) - set(DEFAULT_SIZES))
    if unknown:
        raise DataError(f"unknown mini-data size key(s) {unknown}; valid: {sorted(DEFAULT_SIZES)}")
    out = dict(DEFAULT_SIZES)
    out.update({k: int(v) for k, v in sizes.items()})
    negative = [f"{k}={v}" for k, v in out.items() if v < 0]
    if negative:
        raise DataError(f"mini-data sizes must be >= 0, got {', '.join(negative)}")
    if out["imagenet_train_per_class"] % 100 != 0:
        raise DataError(f"imagenet_train_per_class={out['imagenet_train_per_class']}: must be a multiple of 100 so the "
                        "1% subset is exactly 1% and class-balanced")
    if out["det_min_size"] < 64 or out["det_max_size"] < out["det_min_size"]:
        raise DataError(f"det_min_size/det_max_size: need 64 <= min <= max, got {out['det_min_size']}/"
                        f"{out['det_max_size']}")
    if out["max_objects"] < 1:
        raise DataError(f"max_objects must be >= 1, got {out['max_objects']}")
    return out


def is_complete(out: Path, seed: int, sizes: dict[str, int]) -> bool:
    """True when ``out/.complete`` records exactly this seed, these sizes and this generator version."""
    marker = Path(out) / ".complete"
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("seed") == seed and info.get("sizes") == sizes and info.get("version") == GENERATOR_VERSION


def generate_mini(out: Path | str, seed: int = 0, force: bool = False, workers: int | None = None,
                 **sizes: int) -> Path:
    """Render the mini benchmark under ``out`` and return ``out``.

    Does nothing when ``out/.complete`` already records the same seed and sizes (unless ``force``).
    Otherwise removes this generator's own sub-folders (imagenet, VOCdevkit, coco) and renders them
    again, so an interrupted run is redone. ``.complete`` is written last, atomically.
    ``sizes``: any keys of :data:`DEFAULT_SIZES`. ``workers``: rendering processes (default: up to 2
    of the available cores); the files do not depend on it.
    """
    out = Path(out)
    sz = resolve_sizes(**sizes)
    if not force and is_complete(out, seed, sz):
        log.info("mini data in %s is complete (seed %d); nothing to do", out, seed)
        return out
    marker, started = out / ".complete", out / ".generating"
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWNED + (".complete", ".generating")) \
        if out.is_dir() else []
    if foreign:
        raise ForeignFolderError(f"{out}: not made by generate_mini (it holds {foreign[:5]}, expected only "
                              f"{list(_OWNED)}); choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps({"seed": seed, "sizes": sz}))
    marker.unlink(missing_ok=True)
    for name in _OWNED:
        shutil.rmtree(out / name, ignore_errors=True)
    if workers is None:
        workers = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    log.info("generating mini data in %s (seed %d, %d worker(s), sizes %s)", out, seed, workers, sz)
    write_imagenet(out / "imagenet", seed, sz["imagenet_train_per_class"], sz["imagenet_val_per_class"],
                   sz["imagenet_size"], workers)
    write_voc(out / "VOCdevkit" / "VOC2007", 2007, seed,
              {"train": sz["voc07_trainval"] // 2, "val": sz["voc07_trainval"] - sz["voc07_trainval"] // 2,
               "test": sz["voc07_test"]}, sz, workers)
    write_voc(out / "VOCdevkit" / "VOC2012", 2012, seed,
              {"train": sz["voc12_train"], "val": sz["voc12_val"], "aug": sz["voc12_aug"]}, sz, workers)
    write_coco(out / "coco", seed, sz["coco_train"], sz["coco_val"], sz, workers)
    atomic_write_json(marker, {"seed": seed, "sizes": sz, "version": GENERATOR_VERSION,
                               "classes": list(SHAPE_CLASSES), "wnids": list(WNIDS)})
    started.unlink(missing_ok=True)
    log.info("mini data complete: %s", out)
    return out
