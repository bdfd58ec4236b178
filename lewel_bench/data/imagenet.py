"""ImageNet in the torchvision ``ImageFolder`` layout, with SimCLR-style subset files.

Layout (the real ILSVRC-2012 after the usual val re-foldering, and the mini benchmark alike)::

    <root>/train/<wnid>/<name>.JPEG
    <root>/val/<wnid>/<name>.JPEG
    <root>/1percent.txt, <root>/10percent.txt   (optional; one train file name per line)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from torch.utils.data import Dataset

from .layout import DataLayoutError, require_file, require_layout

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpeg", ".jpg", ".png")


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


def _scan(split_dir: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    samples: list[tuple[str, int]] = []
    for idx, wnid in enumerate(classes):
        names = sorted(e.name for e in os.scandir(split_dir / wnid)
                       if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
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
        self.classes, samples = _scan(self.root / split)
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
                raise ValueError(f"{subset_file}:{line}: '{name}' is not an image of "
                                 f"{self.root / self.split} (expected a file name of <root>/{self.split}/<wnid>/)")
            if name in seen:
                raise ValueError(f"{subset_file}:{line}: '{name}' is listed twice (first on line {seen[name]})")
            seen[name] = line
            chosen.append(by_name[name])
        if not chosen:
            raise ValueError(f"subset file '{subset_file}' lists no images")
        return sorted(chosen, key=lambda s: (s[1], s[0]))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, target = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, target
