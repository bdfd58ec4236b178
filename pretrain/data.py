"""Pretraining data: an image-folder reader, a two-view dataset and a resumable, deterministic sampler.

Layout read: ``<root>/<split>/<class>/<image>`` (ImageNet / the mini benchmark). The two views of
sample ``index`` in ``epoch`` are drawn from a generator seeded by (seed, epoch, index), and the
epoch's permutation from (seed, epoch), so the batches and views of any iteration are a pure
function of the config: a run resumed mid-epoch (``start_iter``) sees exactly what an unbroken run saw,
whatever the number of loader workers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .augment import seeded

log = logging.getLogger(__name__)
IMG_EXT = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


class DataError(ValueError):
    """The data root or split is missing or empty."""


class ImageFolderList(Dataset):
    """``<root>/<split>/<class>/*`` images with integer labels (classes sorted by name).

    ``cache=True`` keeps decoded images in memory (the mini benchmark: a few thousand small images).
    ``max_images`` keeps an evenly spaced subset (e.g. the kNN monitor's memory bank on ImageNet).
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None, cache: bool = False,
                 max_images: int | None = None) -> None:
        d = Path(root) / split
        if not d.is_dir():
            raise DataError(f"data split not found: {d} (expected <root>/{split}/<class>/<images>)")
        self.classes = sorted(p.name for p in d.iterdir() if p.is_dir())
        self.samples = [(str(f), ci) for ci, c in enumerate(self.classes) for f in sorted((d / c).iterdir())
                        if f.suffix.lower() in IMG_EXT]
        if not self.samples:
            raise DataError(f"no images under {d}/<class>/ (extensions {', '.join(IMG_EXT)})")
        if max_images and len(self.samples) > max_images:
            step = len(self.samples) / max_images
            self.samples = [self.samples[int(i * step)] for i in range(max_images)]
        self.targets = [y for _, y in self.samples]
        self.transform = transform
        self._cache: list | None = [self._read(p) for p, _ in self.samples] if cache else None
        log.info("%s: %d images in %d classes%s", d, len(self.samples), len(self.classes), " (cached)" if cache else "")

    @staticmethod
    def _read(path: str) -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGB")

    def image(self, i: int) -> Image.Image:
        return self._cache[i] if self._cache is not None else self._read(self.samples[i][0])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img = self.image(i)
        return (self.transform(img) if self.transform else img), self.samples[i][1]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


class TwoViewDataset(Dataset):
    """Items are ``(epoch, index)`` keys; returns the pair of views drawn with seed (seed, epoch, index)."""

    def __init__(self, base: ImageFolderList, pair: Sequence[Callable], seed: int) -> None:
        self.base, self.pair, self.seed = base, pair, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        img = self.base.image(i)
        return seeded(lambda: (self.pair[0](img), self.pair[1](img)), sample_seed(self.seed, epoch, i))


class EpochBatchSampler(Sampler):
    """Batches of ``(epoch, index)`` for one epoch; this rank's slice of each global batch (drop last).

    The permutation is ``torch.randperm`` seeded with (seed, epoch); iteration ``start_iter`` onwards.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start_iter: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.n, self.b, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start, self.rank, self.world = start_iter, rank, world_size
        self.iters = n // (batch_size * world_size)
        if self.iters == 0:
            raise DataError(f"{n} training images is fewer than one global batch of {batch_size * world_size}")

    def __len__(self) -> int:
        return self.iters - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0x5EED))
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.b * self.world
        for it in range(self.start, self.iters):
            chunk = perm[it * gb:(it + 1) * gb][self.rank * self.b:(self.rank + 1) * self.b]
            yield [(self.epoch, i) for i in chunk]
