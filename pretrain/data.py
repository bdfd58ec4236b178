"""Pretraining data: an image-folder reader, a multi-view dataset and a resumable, deterministic sampler.

Layout read: ``<root>/<split>/<class>/<image>`` (ImageNet / the mini benchmark), through the shared
reader's scan (:func:`lewel_bench.data.scan_split`: one class list for every split). An image that cannot
be decoded stops the run naming the file (``data.bad_images: error``), or, with ``replace``, is replaced
by the next readable image of the split (logged with its name; the same replacement on every run). The views of
sample ``index`` in ``epoch`` are drawn from a generator seeded by (seed, epoch, index), and the
epoch's permutation from (seed, epoch), so the batches and views of any iteration are a pure
function of the config: a run resumed mid-epoch (``start_iter``) sees exactly what an unbroken run saw,
whatever the number of loader workers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from lewel_bench.data import BadImageError, read_image, scan_split
from lewel_bench.data.imagenet import IMG_EXTENSIONS
from lewel_bench.data.layout import DataLayoutError
from lewel_bench.utils import default_num_workers

from .augment import seeded

log = logging.getLogger(__name__)
BAD_IMAGE_POLICIES = ("error", "replace")


class ImageFolderList(Dataset):
    """``<root>/<split>/<class>/*`` images with integer labels (the shared class list of every split).

    ``cache=True`` keeps decoded images in memory (the mini benchmark: a few thousand small images).
    ``max_images`` keeps an evenly spaced subset (e.g. the kNN monitor's memory bank on ImageNet).
    ``bad_images``: ``error`` or ``replace`` (see the module docstring).
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None, cache: bool = False,
                 max_images: int | None = None, bad_images: str = "error") -> None:
        d = Path(root) / split
        if not d.is_dir():
            raise DataLayoutError(f"data split not found: {d} (expected <root>/{split}/<class>/<images>)")
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
        self.classes, self.samples = scan_split(root, split)
        if not self.samples:
            raise DataLayoutError(f"no images under {d}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)})")
        if max_images and len(self.samples) > max_images:
            step = len(self.samples) / max_images
            self.samples = [self.samples[int(i * step)] for i in range(max_images)]
        self.targets = [y for _, y in self.samples]
        self.transform, self.bad_images = transform, bad_images
        self._cache: list | None = None
        if cache:
            decoded = [self._try_read(p) for p, _ in self.samples]
            self._cache = [decoded[self._readable(decoded, i)] for i in range(len(decoded))]
            n_bad = sum(im is None for im in decoded)
            if n_bad:
                log.warning("%s: %d unreadable image(s) replaced by the next readable one (data.bad_images: replace)",
                            d, n_bad)
        log.info("%s: %d images in %d classes%s", d, len(self.samples), len(self.classes), " (cached)" if cache else "")

    def _try_read(self, path: str) -> Image.Image | None:
        """The image, or None when it is unreadable and the policy is ``replace`` (logged)."""
        try:
            return read_image(path)
        except BadImageError as e:
            if self.bad_images == "error":
                raise BadImageError(f"{e} (data.bad_images=replace uses the next readable image instead)") from None
            log.warning("%s: replaced by the next readable image of the split", e)
            return None

    def _readable(self, decoded: list, i: int) -> int:
        n = len(decoded)
        for j in range(i, i + n):
            if decoded[j % n] is not None:
                return j % n
        raise BadImageError(f"no readable image in {Path(self.samples[0][0]).parent.parent}")

    def image(self, i: int) -> Image.Image:
        if self._cache is not None:
            return self._cache[i]
        n = len(self.samples)
        for j in range(i, i + n):
            img = self._try_read(self.samples[j % n][0])
            if img is not None:
                return img
        raise BadImageError(f"no readable image among the {n} of the split")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img = self.image(i)
        return (self.transform(img) if self.transform else img), self.samples[i][1]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


class MultiViewDataset(Dataset):
    """Items are ``(epoch, index)`` keys; returns the tuple of the views (one per transform, in order) drawn
    one after the other from the seed (seed, epoch, index)."""

    def __init__(self, base: ImageFolderList, views: Sequence[Callable], seed: int) -> None:
        self.base, self.views, self.seed = base, list(views), seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        img = self.base.image(i)
        return seeded(lambda: tuple(v(img) for v in self.views), sample_seed(self.seed, epoch, i))


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
            raise DataLayoutError(f"{n} training images is fewer than one global batch of {batch_size * world_size}")

    def __len__(self) -> int:
        return self.iters - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0x5EED))
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.b * self.world
        for it in range(self.start, self.iters):
            chunk = perm[it * gb:(it + 1) * gb][self.rank * self.b:(self.rank + 1) * self.b]
            yield [(self.epoch, i) for i in chunk]


def loader_workers(cfg: dict) -> int:
    """``data.num_workers``: auto = the machine's default (:func:`lewel_bench.utils.default_num_workers`)."""
    n = cfg["data"].get("num_workers", "auto")
    return default_num_workers() if n in (None, "auto") else int(n)
