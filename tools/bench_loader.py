"""Pretraining data-loader throughput: a method's augmented views per image, images/s by worker count.

    python -m tools.bench_loader --data /imagenet --workers 4 8 16
    python -m tools.bench_loader --synthetic 2048 --workers 8 15        # ImageNet-sized JPEGs in a temp dir

Runs the training loop's own loader (``ImageFolderList`` without cache, ``MultiViewDataset``, the views of
the config ``--aug``, ``EpochBatchSampler``, pinned memory when CUDA is present) and reports images/s
(one image = all its views), for each ``--modes``: ``pil`` (every op in the workers, ``aug.batched=false``),
``batched`` (workers decode, crop and flip; the photometric ops run per batch in the main process on
``--device``, included in the time, as ``aug.batched=true`` does in the training loop) and
``batched-workers`` (the same workers, views left unfinished: what the CPU side delivers on its own).
Compare with the images/s of ``tools.bench_pretrain`` on the same machine divided by the number of
GPUs the loader's cores feed: the loader must deliver more, or the GPU waits.
``--bench-record DIR`` also writes the table as a benchmark record (``docs/benchmarks.md``).
Synthetic images are smooth noise plus texture saved as quality-90 JPEGs of ImageNet's mean size
(500 x 375), so decoding costs what it costs on ImageNet.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lewel_bench.args import COUNT, NON_NEGATIVE, ArgumentParser, PathArg
from lewel_bench.benchmarks import Table, add_record_args, record_from_args
from lewel_bench.config import load_config
from lewel_bench.data.layout import DataError
from lewel_bench.stage import cli_entry
from lewel_bench.utils import setup_logging
from pretrain.augment import build_views, view_specs, views_to_device
from pretrain.data import EpochBatchSampler, ImageFolderList, MultiViewDataset
from pretrain.experiments import CONFIG_DIR

log = logging.getLogger("tools.bench_loader")


def write_synthetic_jpegs(root: Path, n: int, size: tuple[int, int] = (500, 375), classes: int = 8,
                          seed: int = 0) -> Path:
    """``n`` JPEGs under ``root/train/<class>/``: low-frequency colour fields plus pixel noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        d = root / "train" / f"n{i % classes:08d}"
        d.mkdir(parents=True, exist_ok=True)
        low = rng.uniform(0, 255, (h // 25 + 1, w // 25 + 1, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.float32)
        img += rng.normal(0, 20, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"img_{i:06d}.JPEG", quality=90)
    return root


def data_or_synthetic(data: str | None, n: int, tmp: Path) -> Path:
    """``data`` if given, else ``n`` synthetic ImageNet-sized JPEGs written under ``tmp`` (timed in the log)."""
    if data is not None:
        return Path(data)
    t = time.perf_counter()
    root = write_synthetic_jpegs(tmp, n)
    log.info("wrote %d synthetic JPEGs in %.1f s", n, time.perf_counter() - t)
    return root


def images_needed(batch: int, batches: int, workers: int) -> int:
    """Images one measurement reads: ``batches`` timed batches after one warm-up batch per worker."""
    return batch * (batches + max(workers, 1))


def measure(root: Path, workers: int, batch: int, exp: str, size: int, batches: int, batched: bool,
            device: torch.device, finish: bool = True) -> float:
    """Images/s of the loader of config ``exp``'s views (at ``size`` px), finished on ``device``, over
    ``batches`` batches after one warm-up batch per worker."""
    aug = load_config(exp, CONFIG_DIR, [f"aug.size={size}"])["aug"]
    ds = MultiViewDataset(ImageFolderList(root, "train"), build_views(view_specs(aug), batched), seed=0)
    if len(ds) < images_needed(batch, batches, workers):
        raise DataError(f"{root}: {len(ds)} training images give {len(ds) // batch} batches of --batch {batch}; "
                        f"--batches {batches} after one warm-up batch per worker (--workers {workers}) need "
                        f"{images_needed(batch, batches, workers)} images")
    sampler = EpochBatchSampler(len(ds), batch, seed=0, epoch=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, pin_memory=torch.cuda.is_available(),
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    loader_it = iter(loader)

    def step(it=loader_it):
        views = next(it)
        if finish:
            moved = [views_to_device(v, device, batched) for v in views]  # every view, as a training step does
            return moved[0].shape[0]
        return len(views[0][0] if batched else views[0])

    for _ in range(max(workers, 1)):  # let every worker start and fill its first batch
        step()
    sync()
    t = time.perf_counter()
    n = sum(step() for _ in range(batches))
    sync()
    dt = time.perf_counter() - t
    del step  # the iterator and its workers go with it
    return n / dt


@cli_entry("bench_loader")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.bench_loader", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=PathArg("dir"), help="ImageNet-style root (reads <root>/train/<class>/*)")
    src.add_argument("--synthetic", type=COUNT, metavar="N", help="write N ImageNet-sized JPEGs to a temp dir")
    p.add_argument("--workers", type=NON_NEGATIVE, nargs="+", default=[4, 8])
    p.add_argument("--batch", type=COUNT, default=128, help="per-process batch")
    p.add_argument("--batches", type=COUNT, default=10, help="timed batches per worker count")
    p.add_argument("--aug", default="byol", help="the pretraining config whose aug.views the loader draws "
                                                 "(byol: BYOL's pair, mocov2: MoCo v2's, any pretrain/configs name)")
    p.add_argument("--size", type=COUNT, default=224)
    p.add_argument("--threads", type=COUNT, default=1, help="torch threads in the main process")
    p.add_argument("--modes", nargs="+", default=["pil", "batched-workers", "batched"],
                   choices=("pil", "batched", "batched-workers"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where batched photometric ops run (and where views are moved)")
    add_record_args(p)
    args = p.parse_args(argv)
    need = images_needed(args.batch, args.batches, max(args.workers))
    if args.synthetic is not None and args.synthetic < need:
        p.error(f"--synthetic {args.synthetic} is too few: --batch {args.batch} x (--batches {args.batches} + one "
                f"warm-up batch per worker, up to {max(max(args.workers), 1)}) needs {need} images")
    setup_logging()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = data_or_synthetic(args.data, args.synthetic, Path(tmp))
        print(f"# loader of {args.aug}'s views, {args.size} px, batch {args.batch}, {root}", flush=True)
        print("| mode | workers | images/s | images/s per worker |\n|---|---|---|---|", flush=True)
        for mode in args.modes:
            for w in args.workers:
                ips = measure(root, w, args.batch, args.aug, args.size, args.batches, mode != "pil",
                              torch.device(args.device), finish=mode != "batched-workers")
                print(f"| {mode} | {w} | {ips:.0f} | {ips / max(w, 1):.0f} |", flush=True)
                rows.append([mode, w, f"{ips:.0f}", f"{ips / max(w, 1):.0f}"])
    record_from_args(args, tool="tools.bench_loader", argv=argv, device=torch.device(args.device),
                     tables=[Table(f"loader of {args.aug}'s views, {args.size} px, batch {args.batch}, "
                                   f"{'synthetic ImageNet-sized JPEGs' if args.data is None else 'a data root'}",
                                   ["mode", "workers", "images/s", "images/s per worker"], rows)])


if __name__ == "__main__":
    main()
