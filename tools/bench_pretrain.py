"""Per-method pretraining step time on one backbone, batch and thread count, and the cost ratios.

    python -m tools.bench_pretrain [--arch resnet50] [--size 224] [--batch 8] [--threads 1] [--reps 5]
    make bench-pretrain BENCH_ARGS="--size 160 --reps 7"
    make bench-pretrain BENCH_ARGS="--batch 128 --steps 10"      # on a GPU: AMP + channels_last
    python -m tools.bench_pretrain --methods mocov2 cgh --record results/records   # + a cost record per method

One step = forward + backward + optimiser step (+ EMA update for the self-supervised methods), on
random images, with each method's IN-1K config (paper head sizes), in the training loop's precision:
AMP (fp16 autocast, GradScaler) and channels_last on CUDA, fp32 on CPU (``--amp``, ``--channels-last``).
Methods are interleaved round by round and the median is reported, so a load change on a shared
machine hits every method alike.
The FLOPs of one step (torch's FlopCounterMode) give the floor each time ratio would reach if every
operation ran at the same speed. Targets: LEWEL_B / BYOL <= 1.03, LEWEL_M / MoCo v2 <= 1.01 (the LEWEL paper
measured 1.044 and 1.007 on 8 V100 with AMP), BYOL / supervised <= 2.8; CGH / MoCo v2 <= 1.24 and CGH /
supervised 2.01 (the CGH supplement's Table 3 on 2 A100: CGH 2.01, MoCo v2 1.62 times supervised).
CGH is timed after its loss warm-up (``model.loss_warmup_epochs=0``: the step of 195 of its 200 epochs; the
warm-up's InfoNCE reuses the queue products and adds no further one).

``--record DIR`` writes one result record per method (eval ``cost``, protocol ``step_time``, metrics
``time_rel`` = step time / supervised step time, ``flops_rel``, ``step_s``, ``images_per_s``; ``pretrain_epochs``
= the method config's epochs, so ``make tables`` puts ``time_rel`` beside the CGH supplement's Table 3 "Time/
Epoch" of the same method; the benchmark's settings and device are the record's config and group).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lewel_bench.config import load_config
from lewel_bench.models import build_torchvision_resnet
from lewel_bench.utils import amp_autocast, amp_step
from pretrain.cli import CONFIG_DIR
from pretrain.methods import METHODS
from lewel_bench.optim import optimizer_for

METHOD_NAMES = ("mocov2", "lewel_m", "byol", "lewel_b", "cgh")
TARGETS = (("lewel_b", "byol", 1.03), ("lewel_m", "mocov2", 1.01), ("byol", "supervised", 2.8),
           ("cgh", "mocov2", 1.24), ("cgh", "supervised", 2.01))
#: Overrides every run applies before ``--set``: CGH's steady-state step (after its loss warm-up).
DEFAULT_SET: dict[str, list[str]] = {"cgh": ["model.loss_warmup_epochs=0"]}
#: Iterations per "epoch" the methods' own per-iteration schedules see (as ``momentum_at``'s total of 1000).
STEPS_PER_EPOCH = 1000


def make_steps(arch: str, size: int, batch: int, device: torch.device, channels_last: bool, amp: bool = False,
               overrides: dict[str, list[str]] | None = None, methods: tuple[str, ...] = METHOD_NAMES):
    """name -> zero-argument callable running one training step (as the pretraining loop runs it), and
    name -> the method's config (None for supervised).

    ``overrides``: config overrides per method name (e.g. {"lewel_b": ["model.reassociate=never"]})."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(batch, 3, size, size, generator=g).to(device)
    x2 = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    if channels_last:
        x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
    steps, configs = {}, {}
    sup = build_torchvision_resnet(arch, 1000).to(device)
    if channels_last:
        sup.to(memory_format=torch.channels_last)
    sup_opt = torch.optim.SGD(sup.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def sup_step(scaler=torch.amp.GradScaler("cuda", enabled=amp)):
        with amp_autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(sup(x1), y)
        amp_step(loss, sup_opt, scaler)

    steps["supervised"] = sup_step
    configs["supervised"] = None
    for name in methods:
        cfg = load_config(name, CONFIG_DIR, [f"arch={arch}", *DEFAULT_SET.get(name, []),
                                             *(overrides or {}).get(name, [])])
        configs[name] = cfg
        m = METHODS.get(name)(cfg).to(device).train()
        m.iters_per_epoch = STEPS_PER_EPOCH
        if channels_last:
            m.to(memory_format=torch.channels_last)
        opt = optimizer_for(m, cfg["optim"])

        def step(m=m, opt=opt, scaler=torch.amp.GradScaler("cuda", enabled=amp)):
            m.iteration += 1
            with amp_autocast(device, amp):
                loss, _ = m([x1, x2])
            amp_step(loss, opt, scaler)
            m.update_target(m.momentum_at(m.iteration, 1000))

        steps[name] = step
    return steps, configs


def write_records(out: str | Path, med: dict[str, float], flops: dict[str, float], configs: dict, settings: dict,
                  batch: int, start: str) -> list[Path]:
    """One ``cost`` record per method: its step time relative to supervised (see the module docstring)."""
    from lewel_bench.records import make_record, write_record
    from lewel_bench.stage import digest

    paths = []
    sup, sup_flops = med["supervised"], flops["supervised"]
    for name, t in med.items():
        cfg = configs.get(name)
        conf = {**settings, "overrides": [*DEFAULT_SET.get(name, []), *settings["set"].get(name, [])]}
        rec = make_record(method=name, pretrain_exp=name, pretrain_epochs=cfg["epochs"] if cfg else None, eval="cost",
                          protocol="step_time", metrics={"time_rel": t / sup, "flops_rel": flops[name] / sup_flops,
                                                         "step_s": t, "images_per_s": batch / t},
                          seed=0, checkpoint_sha256="none (random init, random images)", config=conf,
                          start_time=start, dataset="synthetic", status="ok",
                          group=digest({"eval": "cost", "method": name,  # what changes the ratio (not reps)
                                        **{k: v for k, v in conf.items() if k not in ("reps", "steps", "set")}}))
        paths.append(write_record(rec, out))
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing a shared CPU)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=1, help="steps per timed round (use ~10 on a GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    on_off = {"auto": None, "on": True, "off": False}
    p.add_argument("--amp", choices=on_off, default="auto", help="fp16 autocast + GradScaler (auto: on CUDA)")
    p.add_argument("--channels-last", choices=on_off, default="auto", help="auto: on CUDA")
    p.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="config override for one method, e.g. lewel_b:model.reassociate=never (repeatable)")
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument("--record", metavar="DIR", default=None,
                   help="write one cost record per method into DIR (e.g. results/records) for make tables")
    args = p.parse_args(argv)
    from lewel_bench.records import now_iso

    start = now_iso()
    overrides: dict[str, list[str]] = {}
    for item in args.set:
        name, sep, kv = item.partition(":")
        if not sep or name not in METHOD_NAMES:
            p.error(f"--set {item!r}: expected METHOD:KEY=VALUE with METHOD one of {', '.join(METHOD_NAMES)}")
        overrides.setdefault(name, []).append(kv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    amp = cuda if on_off[args.amp] is None else on_off[args.amp] and cuda
    channels_last = cuda if on_off[args.channels_last] is None else on_off[args.channels_last]
    if cuda:
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    steps, configs = make_steps(args.arch, args.size, args.batch, device, channels_last, amp, overrides,
                                tuple(args.methods))
    print(f"# {args.arch}, {args.size} px, batch {args.batch} (two views for SSL), {args.threads} thread(s), "
          f"{torch.cuda.get_device_name(device) if cuda else device}, {'AMP fp16' if amp else 'fp32'}"
          f"{', channels_last' if channels_last else ''}, {args.reps} interleaved rounds of {args.steps} "
          f"step(s) (median){'; ' + ' '.join(args.set) if args.set else ''}", flush=True)
    flops = {}
    for name, fn in steps.items():
        with FlopCounterMode(display=False) as fc:
            fn()
        flops[name] = fc.get_total_flops()
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {n: [] for n in steps}
    for r in range(args.reps):
        for name, fn in steps.items():
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync()
            times[name].append((time.perf_counter() - t) / args.steps)
        print(f"  round {r + 1}/{args.reps}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in steps), flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    sup = med["supervised"]
    print("\n| method | step (s, median) | images/s | GFLOP/step | time / supervised | FLOPs / supervised |")
    print("|---|---|---|---|---|---|")
    for n in steps:
        print(f"| {n} | {med[n]:.3f} | {args.batch / med[n]:.1f} | {flops[n] / 1e9:.1f} | {med[n] / sup:.3f} | "
              f"{flops[n] / flops['supervised']:.3f} |")
    print("\n| ratio | time | FLOP floor | target | met |")
    print("|---|---|---|---|---|")
    for a, b, tgt in TARGETS:
        if a not in med or b not in med:
            continue
        r = med[a] / med[b]
        print(f"| {a} / {b} | {r:.3f} | {flops[a] / flops[b]:.3f} | <= {tgt} | {'yes' if r <= tgt else 'NO'} |")
    if args.record:
        dev_name = torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})"
        settings = {"arch": args.arch, "size": args.size, "batch": args.batch, "threads": args.threads,
                    "steps": args.steps, "reps": args.reps, "device": dev_name, "amp": amp,
                    "channels_last": channels_last, "set": overrides}
        for path in write_records(args.record, med, flops, configs, settings, args.batch, start):
            print(f"record: {path}")


if __name__ == "__main__":
    main()
