"""Data loaders that shard over ranks: training (``DistributedSampler``) and evaluation (every sample once)."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..dist import get_rank, get_world_size
from ..utils import default_num_workers

log = logging.getLogger(__name__)


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r gets indices r, r + W, r + 2W, ... (every sample once, no padding).

    ``DistributedSampler`` pads the last batch with repeated samples, which would bias the accuracy;
    this one does not, and the correct counts are summed over ranks.
    """

    def __init__(self, n: int, rank: int | None = None, world_size: int | None = None) -> None:
        self.n = n
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The config's batch size is the global one (as in the paper); each rank takes its share."""
    if global_batch % world_size:
        log.warning("batch size %d is not divisible by %d ranks; using %d per rank",
                    global_batch, world_size, global_batch // world_size)
    return max(1, global_batch // world_size)


def make_loader(dataset: Dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int | None = None,
                drop_last: bool = False) -> DataLoader:
    """A loader for this rank: shuffled ``DistributedSampler`` (call ``set_epoch``) or a :class:`ShardSampler`."""
    world, rank = get_world_size(), get_rank()
    bs = per_rank_batch(batch_size, world)
    if train and math.ceil(len(dataset) / world) % bs == 1:
        drop_last = True  # a last training batch of one image would break BatchNorm in train mode
    sampler: Sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
                        if train else ShardSampler(len(dataset), rank, world))
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(dataset, batch_size=bs, sampler=sampler,
                      num_workers=workers, pin_memory=torch.cuda.is_available(), drop_last=drop_last and train,
                      persistent_workers=workers > 0)


def num_classes_of(dataset: Dataset) -> int:
    """Number of classes of an ImageFolder-like dataset (``classes`` attribute) or from its targets."""
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(f"{type(dataset).__name__} has neither 'classes' nor 'targets'; cannot count classes")
    return int(max(targets)) + 1


def build_imagenet(root: str | Path, split: str, transform: Any, subset_file: str | Path | None = None) -> Dataset:
    """The ImageNet-layout reader of :mod:`lewel_bench.data` (one class list for every split)."""
    from ..data import ImageNetFolder

    return ImageNetFolder(root, split, transform=transform, subset_file=subset_file)
