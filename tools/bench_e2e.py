"""End-to-end pretraining throughput: the real loader feeding the real training step, per method.

    python -m tools.bench_e2e --synthetic 4096 --batch 128 --iters 300            # on a GPU node
    python -m tools.bench_e2e --data /imagenet --methods byol lewel_b --batched on off
    make bench-e2e [BENCH_E2E_ARGS="--iters 300 --workers 15"]

Each (method, ``aug.batched``) pair runs the method's IN-1K config (``--arch``, ``--size``, ``--batch``
override it) exactly as the pretraining loop does: ``ImageFolderList`` without cache -> ``MultiViewDataset``
(the config's views) -> ``EpochBatchSampler`` -> ``DataLoader`` (``--workers``, default: the loop's default,
every core but one) with pinned memory on CUDA -> the loop's own step (``pretrain.loop.train_step``: views on
the device (``aug.batched``: the photometric ops there), forward, backward, optimiser and EMA steps in the
loop's precision, AMP and channels_last on CUDA).
After ``--warmup`` steps it times ``--iters`` steps and reports images/s, the loader wait (time blocked on
the next batch, as a share of the wall time), the device busy share (CUDA events around each step),
milliseconds per step and the peak device memory, then the end-to-end ratios LEWEL_B / BYOL and
LEWEL_M / MoCo v2 of the same run. The goal: loader wait under 5 % of the step (the loader never starves
the model) and, where both are loader-bound, LEWEL_B / BYOL within the paper's 1.044 (Table 9).
Synthetic images (``--synthetic N``) are ImageNet-sized quality-90 JPEGs (``tools.bench_loader``), so
decoding costs what it costs on ImageNet. ``--json FILE`` writes the rows and ratios (``make report BENCH=``), ``--bench-record DIR`` a benchmark
record (``docs/benchmarks.md``).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lewel_bench.args import COUNT, NON_NEGATIVE, ArgumentParser, PathArg
from lewel_bench.benchmarks import Table, add_record_args, record_from_args
from lewel_bench.config import load_config
from lewel_bench.data.layout import DataError
from lewel_bench.io import atomic_write_json
from lewel_bench.stage import cli_entry
from lewel_bench.utils import channels_last_default, default_num_workers, setup_logging
from pretrain.augment import build_views, view_specs
from pretrain.data import EpochBatchSampler, ImageFolderList, MultiViewDataset
from pretrain.experiments import CONFIG_DIR
from pretrain.loop import build_step, train_step
from pretrain.train import build_method
from tools.bench_loader import data_or_synthetic

log = logging.getLogger("tools.bench_e2e")

#: Iterations per "epoch" of the lr schedule and the methods' own per-iteration schedules.
STEPS_PER_EPOCH = 1000


def pairs() -> list[tuple[str, str, float]]:
    """(method, baseline, the paper's time-per-epoch ratio) of the methods' declared cost baselines that a paper
    table of time per epoch gives (LEWEL Table 9: 8 V100, AMP, loader included)."""
    from lewel_bench.declare import paper_of
    from lewel_bench.report.cost import paper_time_ratios
    from lewel_bench.utils import REPO_ROOT
    from pretrain.experiments import method_configs

    declared = [(m, t.baseline) for m, cfg in method_configs().items() for t in paper_of(cfg, m).cost]
    ratios, _ = paper_time_ratios(REPO_ROOT / "results" / "paper", declared)
    return [(a, b, round(ratios[f"{a} / {b}"], 3)) for a, b in declared if f"{a} / {b}" in ratios]


class Epochs:
    """Batches of successive epochs of :class:`EpochBatchSampler` in one sampler (one set of workers)."""

    def __init__(self, n: int, batch: int, seed: int = 0) -> None:
        self.n, self.batch, self.seed = n, batch, seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in itertools.count():
            yield from EpochBatchSampler(self.n, self.batch, self.seed, epoch)


def run(method_name: str, root: Path, args: argparse.Namespace, batched: bool, device: torch.device) -> dict[str, Any]:
    """One (method, batched) measurement (see the module docstring)."""
    cuda = device.type == "cuda"
    cfg = load_config(method_name, CONFIG_DIR, [f"arch={args.arch}", f"aug.size={args.size}",
                                               f"batch_size={args.batch}", f"aug.batched={str(batched).lower()}"])
    ds = MultiViewDataset(ImageFolderList(root, "train"), build_views(view_specs(cfg["aug"]), batched), seed=0)
    if len(ds) < args.batch:  # an epoch of no batch: the sampler of successive epochs would never yield
        raise DataError(f"{root}: {len(ds)} training images make no batch of --batch {args.batch}")
    workers = default_num_workers() if args.workers is None else args.workers
    loader = DataLoader(ds, batch_sampler=Epochs(len(ds), args.batch), num_workers=workers, pin_memory=cuda,
                        prefetch_factor=4 if workers else None, persistent_workers=bool(workers))
    amp = cuda if args.amp == "auto" else args.amp == "on"
    channels_last = (channels_last_default(device.type, args.size) if args.channels_last == "auto"
                     else args.channels_last == "on")
    method = build_method(cfg, device, 1, channels_last, STEPS_PER_EPOCH)
    state = build_step(method, cfg, device, args.warmup + args.iters, STEPS_PER_EPOCH, amp, channels_last, batched)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    method.train()
    waits, busy, steps = [], [], []
    batches = iter(loader)
    t_start = None
    for it in range(args.warmup + args.iters):
        if it == args.warmup:
            if cuda:
                torch.cuda.synchronize(device)
            t_start = time.perf_counter()
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else None
        if ev:
            ev[0].record()
        train_step(state, batch, it)  # the loop's own step
        if ev:
            ev[1].record()
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        if it >= args.warmup:
            waits.append(t1 - t0)
            steps.append(t2 - t1)
            busy.append(ev[0].elapsed_time(ev[1]) / 1000 if ev else t2 - t1)
    wall = time.perf_counter() - t_start
    del batches, loader
    return {"method": method_name, "batched": batched, "workers": workers, "batch": args.batch,
            "images_per_s": round(args.iters * args.batch / wall, 1),
            "loader_wait_share": round(sum(waits) / wall, 4), "device_busy_share": round(sum(busy) / wall, 4),
            "step_ms": round(1000 * statistics.median(steps), 1), "wait_ms": round(1000 * statistics.median(waits), 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if cuda else None}


def ratios(rows: list[dict]) -> list[dict]:
    """End-to-end time per image of each method over its declared baseline, per ``batched`` setting (the pairs the
    paper timed)."""
    out = []
    for a, b, paper in pairs():
        for batched in (True, False):
            ra = [r for r in rows if r["method"] == a and r["batched"] == batched]
            rb = [r for r in rows if r["method"] == b and r["batched"] == batched]
            if ra and rb:
                out.append({"ratio": f"{a} / {b}", "batched": batched, "time": round(rb[0]["images_per_s"]
                            / ra[0]["images_per_s"], 3), "paper": paper})
    return out


@cli_entry("bench_e2e")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.bench_e2e", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=PathArg("dir"), help="ImageNet-style root (reads <root>/train/<class>/*)")
    src.add_argument("--synthetic", type=COUNT, metavar="N", help="write N ImageNet-sized JPEGs to a temp dir")
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: the methods the paper timed against their baselines, each after its baseline")
    p.add_argument("--batched", nargs="+", choices=("on", "off"), default=["on", "off"], help="aug.batched settings")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=COUNT, default=224)
    p.add_argument("--batch", type=COUNT, default=128, help="per-process batch")
    p.add_argument("--iters", type=COUNT, default=200, help="timed steps per run")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=20)
    p.add_argument("--workers", type=NON_NEGATIVE, default=None, help="loader workers (default: every core but one)")
    p.add_argument("--threads", type=COUNT, default=None, help="torch threads in the main process (default: torch's)")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=PathArg("out_file"), default=None, help="also write the rows and ratios to this JSON file")
    add_record_args(p)
    args = p.parse_args(argv)
    if args.synthetic is not None and args.synthetic < args.batch:
        p.error(f"--synthetic {args.synthetic} is too few: one batch (--batch {args.batch}) needs {args.batch} images")
    if args.methods is None:
        args.methods = list(dict.fromkeys(m for a, b, _ in pairs() for m in (b, a)))
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = data_or_synthetic(args.data, args.synthetic, Path(tmp))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"# end to end on {name}: {args.arch}, {args.size} px, batch {args.batch}, {args.iters} steps after "
              f"{args.warmup}, data {root}", flush=True)
        print("| method | aug.batched | workers | images/s | loader wait | device busy | step ms | wait ms | "
              "peak GiB |\n|---|---|---|---|---|---|---|---|---|", flush=True)
        rows = []
        for batched in (b == "on" for b in args.batched):
            for m in args.methods:
                r = run(m, root, args, batched, device)
                rows.append(r)
                print(f"| {m} | {str(batched).lower()} | {r['workers']} | {r['images_per_s']} | "
                      f"{100 * r['loader_wait_share']:.1f} % | {100 * r['device_busy_share']:.1f} % | {r['step_ms']} | "
                      f"{r['wait_ms']} | {r['peak_memory_gib'] if r['peak_memory_gib'] is not None else '-'} |",
                      flush=True)
    rat = ratios(rows)
    if rat:
        print("\n| ratio | aug.batched | time per image | paper (Table 9) |\n|---|---|---|---|")
        for r in rat:
            print(f"| {r['ratio']} | {str(r['batched']).lower()} | {r['time']} | {r['paper']} |")
    starved = [r for r in rows if r["loader_wait_share"] > 0.05]
    names = ", ".join(f"{r['method']} (aug.batched {str(r['batched']).lower()})" for r in starved)
    print(f"\nloader wait over 5 % of the wall time: {names}" if starved
          else "\nloader wait under 5 % of the wall time in every run")
    cols = ["method", "aug.batched", "workers", "images/s", "loader wait", "device busy", "step ms", "wait ms",
            "peak GiB"]
    tables = [Table(f"end to end: {args.arch}, {args.size} px, batch {args.batch}, {args.iters} steps after "
                    f"{args.warmup}, {'synthetic ImageNet-sized JPEGs' if args.data is None else 'a data root'}", cols,
                    [[r["method"], str(r["batched"]).lower(), r["workers"], r["images_per_s"],
                      f"{100 * r['loader_wait_share']:.1f} %", f"{100 * r['device_busy_share']:.1f} %", r["step_ms"],
                      r["wait_ms"], r["peak_memory_gib"]] for r in rows])]
    if rat:
        tables.append(Table("ratios", ["ratio", "aug.batched", "time per image", "paper (Table 9)"],
                            [[r["ratio"], str(r["batched"]).lower(), r["time"], r["paper"]] for r in rat]))
    record_from_args(args, tool="tools.bench_e2e", argv=argv, tables=tables, device=device)
    if args.json:
        atomic_write_json(args.json, {"setup": {"device": name, "arch": args.arch, "size": args.size,
                                                "batch": args.batch, "iters": args.iters}, "rows": rows, "ratios": rat})


if __name__ == "__main__":
    main()
