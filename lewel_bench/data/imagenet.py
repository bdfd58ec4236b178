"""ImageNet in the torchvision ``ImageFolder`` layout, with SimCLR-style subset files.

Layout (the real ILSVRC-2012 after the usual val re-foldering, and the mini benchmark alike)::

    <root>/train/<wnid>/<name>.JPEG
    <root>/val/<wnid>/<name>.JPEG
    <root>/1percent.txt, <root>/10percent.txt   (optional; one train file name per line)

One class list serves every split (:func:`class_list`): the class folders of ``train`` and ``val`` must be
the same and none may be empty, else a :class:`DataLayoutError` names the classes that differ. (Per-split
class lists would silently shift the labels of one split when a class folder is missing or empty.)
An image that cannot be decoded raises :class:`BadImageError` naming the file (:func:`read_image`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ..errors import LewelError
from .layout import DataError, DataLayoutError, require_file, require_layout

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
#: ImageNet channel mean / std (RGB, [0, 1]): the normalisation of every stage (torchvision's, detectron2's
#: PIXEL_MEAN / PIXEL_STD x 255 in the RGB configs)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")
_SHOW = 8


class BadImageError(LewelError, OSError):
    """An image file is empty, truncated or not an image; the message names it."""


#: Modes with an alpha band: the colour bands are the image (alpha dropped, as torchvision's and OpenCV's readers do).
_ALPHA = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "RGB"}
#: Modes PIL converts to RGB itself, correctly: grayscale, 1-bit, CMYK (JPEG's inverted CMYK included), YCbCr.
_DIRECT = ("L", "1", "CMYK", "YCbCr", "RGBX")


def _high_depth_to_rgb(im: Image.Image, path: str | Path) -> Image.Image:
    """A 16-bit / 32-bit integer or float grayscale image scaled to 8 bits by its depth (``I;16*``: 65535 is white;
    ``I`` / ``F``: by the range the values are in: 0..1 (``F``), 0..255, 0..65535), never clipped to white."""
    import numpy as np

    a = np.asarray(im)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise BadImageError(f"image {path}: mode {im.mode} with NaN or inf pixels")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16"):
        full = 65535.0
    else:
        full = next((f for f in ((1.0,) if im.mode == "F" else ()) + (255.0, 65535.0) if hi <= f), None)
    if lo < 0 or full is None:
        raise BadImageError(f"image {path}: mode {im.mode} with values {lo:g}..{hi:g}: no known range to read it as "
                            f"8-bit RGB (expected 0..255 or 0..65535); convert it to an 8-bit RGB image")
    out = np.clip(np.rint(a.astype(np.float64) * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L").convert("RGB")


def to_rgb(im: Image.Image, path: str | Path) -> Image.Image:
    """``im`` as an 8-bit RGB image, for every mode real datasets hold (see :func:`read_image`); another mode is a
    :class:`BadImageError` naming the file and the mode."""
    mode = im.mode
    if mode == "RGB":
        return im.convert("RGB")  # a copy detached from the file
    if mode in _DIRECT:
        return im.convert("RGB")
    if mode == "P":  # palette: its colours (a transparent index keeps its colour, as the alpha modes)
        return im.convert("RGBA").convert("RGB") if "transparency" in im.info else im.convert("RGB")
    if mode in _ALPHA:
        return (im.convert("RGBA") if mode in ("PA", "RGBa", "La") else im).convert(_ALPHA[mode]).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(im, path)
    raise BadImageError(f"image {path}: mode {mode} cannot be read as RGB (expected RGB, grayscale, palette, CMYK, "
                        f"an alpha variant of these, or 16-bit grayscale); convert it to an RGB image")


def read_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, fully decoded; :class:`BadImageError` naming the file if it cannot be.

    Every mode real datasets hold is converted to 8-bit RGB (:func:`to_rgb`): grayscale (``L``, ``1``), palette
    (``P``), ``CMYK``, ``YCbCr``, the alpha modes (``RGBA``, ``LA``, ``PA``: the colour bands, alpha dropped),
    16-bit grayscale (``I;16``: scaled by 65535, never clipped to a white image) and 32-bit ``I`` / ``F``
    (scaled by the range their values are in); any other mode is refused naming the file.
    """
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            return to_rgb(im, path)
    except BadImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else None
        what = "empty (0 bytes)" if size == 0 else f"unreadable ({type(e).__name__}: {e})"
        raise BadImageError(f"image {path} is {what}") from None


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _class_folders(split_dir: Path) -> tuple[list[str], list[str]]:
    """(class folders with at least one image, class folders without any) of a split, sorted."""
    full, empty = [], []
    for e in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if e.is_dir():
            with os.scandir(e.path) as it:
                (full if any(x.is_file() and _is_image(x.name) for x in it) else empty).append(e.name)
    return full, empty


def _names(items: list[str]) -> str:
    return ", ".join(items[:_SHOW]) + (f" ... ({len(items)} in all)" if len(items) > _SHOW else "")


def class_list(root: str | Path, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """The sorted class folders shared by every split of ``splits`` present under ``root``.

    Refuses (``DataLayoutError`` naming them) a class folder without images and classes present in one
    split but not another, so that class index ``i`` means the same class in every split.
    """
    root = Path(root)
    found: dict[str, list[str]] = {}
    for split in splits:
        d = root / split
        if not d.is_dir():
            continue
        full, empty = _class_folders(d)
        if empty:
            raise DataLayoutError(f"ImageNet root '{root}': class folder(s) without images in {split}/: "
                                  f"{_names(empty)} (every class needs images in every split; remove the "
                                  f"class from all splits or restore its images)")
        found[split] = full
    if not found:
        raise DataLayoutError(f"ImageNet root '{root}' has none of {', '.join(f'{s}/' for s in splits)}")
    ref_split, ref = next(iter(found.items()))
    for split, classes in found.items():
        if classes != ref:
            only_ref, only = sorted(set(ref) - set(classes)), sorted(set(classes) - set(ref))
            parts = [f"in {ref_split}/ but not {split}/: {_names(only_ref)}" if only_ref else "",
                     f"in {split}/ but not {ref_split}/: {_names(only)}" if only else ""]
            raise DataLayoutError(f"ImageNet root '{root}': {split}/ and {ref_split}/ have different classes "
                                  f"({'; '.join(p for p in parts if p)}); the labels would not match")
    return ref


def parse_subset_file(path: str | Path, with_lines: bool = False) -> list[str] | list[tuple[int, str]]:
    """File names listed in a SimCLR subset file (``1percent.txt``: one name per line).

    Blank lines are skipped; a leading folder (``n01440764/n01440764_10026.JPEG``) is dropped. With
    ``with_lines`` returns ``(line_number, name)`` pairs (1-based line numbers) for error messages.
    """
    path = require_file(path, "subset file")
    out: list[tuple[int, str]] = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            name = line.strip()
            if name:
                out.append((i, os.path.basename(name)))
    return out if with_lines else [n for _, n in out]


def scan_split(root: str | Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes of :func:`class_list`, sorted ``(path, class index)`` of ``<root>/<split>/<class>/*``)."""
    classes = class_list(root, tuple(dict.fromkeys((split, *SPLITS))))
    split_dir = Path(root) / split
    samples: list[tuple[str, int]] = []
    for idx, wnid in enumerate(classes):
        names = sorted(e.name for e in os.scandir(split_dir / wnid) if e.is_file() and _is_image(e.name))
        samples += [(str(split_dir / wnid / n), idx) for n in names]
    return classes, samples


class ImageNetFolder(Dataset):
    """``(image, class_index)`` pairs of ``<root>/<split>/<wnid>/*.JPEG``; classes = sorted wnid folders.

    ``subset_file``: keep only the train images it names (SimCLR 1% / 10% files); a name that is not
    an image of this split raises ``ValueError`` naming the subset file, the line and the name.
    Attributes: ``classes`` (wnids), ``class_to_idx``, ``samples`` (path, index), ``targets``.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None,
                 subset_file: str | Path | None = None) -> None:
        expected = {f"{split}/*/*": f"{split}/<wnid>/*.JPEG"}
        self.root = require_layout(root, "ImageNet", expected)
        self.split, self.transform = split, transform
        self.classes, samples = scan_split(self.root, split)
        if not samples:
            raise DataLayoutError(f"ImageNet root '{self.root}' is malformed: no images "
                                  f"({'/'.join(IMG_EXTENSIONS)}) under <root>/{split}/<wnid>/; "
                                  f"expected <root>/{split}/<wnid>/*.JPEG")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if subset_file is not None:
            samples = self._select(samples, Path(subset_file))
        self.samples = samples
        self.targets = [t for _, t in samples]
        log.info("ImageNet %s: %d images, %d classes%s", split, len(samples), len(self.classes),
                 f" (subset {subset_file})" if subset_file else "")

    def _select(self, samples: list[tuple[str, int]], subset_file: Path) -> list[tuple[str, int]]:
        by_name = {os.path.basename(p): (p, t) for p, t in samples}
        chosen, seen = [], {}
        for line, name in parse_subset_file(subset_file, with_lines=True):
            if name not in by_name:
                raise DataError(f"{subset_file}:{line}: '{name}' is not an image of "
                                 f"{self.root / self.split} (expected a file name of <root>/{self.split}/<wnid>/)")
            if name in seen:
                raise DataError(f"{subset_file}:{line}: '{name}' is listed twice (first on line {seen[name]})")
            seen[name] = line
            chosen.append(by_name[name])
        if not chosen:
            raise DataError(f"subset file '{subset_file}' lists no images")
        return sorted(chosen, key=lambda s: (s[1], s[0]))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, target = self.samples[i]
        img = read_image(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, target
