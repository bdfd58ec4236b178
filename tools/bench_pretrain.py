"""Per-method pretraining step time on one backbone, batch and thread count, and the cost ratios.

    python -m tools.bench_pretrain [--arch resnet50] [--size 224] [--batch 16] [--threads 1] [--reps 5]
    make bench-pretrain BENCH_ARGS="--size 160 --reps 7"
    make bench-pretrain BENCH_ARGS="--batch 128 --steps 10"      # on a GPU: AMP + channels_last
    python -m tools.bench_pretrain --methods mocov2 cgh --record results/records   # + a cost record per method

One step = the training loop's own step (``pretrain.loop.train_step``: forward, backward, optimiser step,
EMA update; the supervised baseline: forward, backward, optimiser step), on random images (as many views as
the method's config lists: two, MCL's 2 x 3), with each method's IN-1K config (paper head sizes), in the
training loop's precision:
AMP (fp16 autocast, GradScaler) and channels_last on CUDA, fp32 on CPU and channels_last there from 128 px
(``--amp``, ``--channels-last``).
Methods are interleaved round by round and the median is reported, so a load change on a shared
machine hits every method alike. On CPU the process keeps freed memory for reuse, as the training loop does
(``lewel_bench.utils.keep_freed_memory``).
The FLOPs of one step (torch's FlopCounterMode) give the floor each time ratio would reach if every
operation ran at the same speed; the pixels that enter the online and the target trunk in one step are
counted at the trunks' first conv (MCL's montage levels B, B/4, B/16: 1.3125 x BYOL's on the online side).
The methods are the registered ones with an IN-1K config of their name. Targets (PASS / MISS in the ratio table,
the FLOP floor beside each) are declared by each method's config (``paper.cost.against``: baseline, the target
on a GPU with AMP and on a CPU, ``floor`` = at or below the pair's FLOP ratio), e.g. LEWEL_B / BYOL <= 1.13 and
LEWEL_M / MoCo v2 <= 1.05 on a GPU (the head's FLOP shares at 224 px are +27 % and +9 %; the LEWEL paper's 1.044
and 1.007 are epoch times of a whole node, loader included), at or below their FLOP floor on a CPU; BYOL /
supervised <= 2.8; CGH / MoCo v2 <= 1.24 and CGH / supervised 2.01 (the CGH supplement's Table 3 on 2 A100);
MCL / BYOL <= 1.35 (the MCL appendix states 1.3125 x the online cost of standard training). A fixed
target below the FLOP ratio of the backbone and size benchmarked is judged against that ratio (the table says
so). ``--external`` adds public implementations timed in the same rounds (:mod:`tools.bench_external`:
lightly's BYOL and MoCo v2, the official LEWEL_B code), each with the target ours / theirs <= 0.9, each in its
own memory format (NCHW: none of them converts; ``--external-channels-last same`` gives them ours). The
default batch (16) is a multiple of 16, as MCL's B/16 level needs.
A method is timed with the overrides its config declares (``paper.cost.overrides``): CGH after its loss warm-up
(``model.loss_warmup_epochs=0``: the step of 195 of its 200 epochs; the warm-up's InfoNCE reuses the queue
products and adds no further one).

``--bench-record DIR`` writes a benchmark record (both tables, the command, the machine; the source of
``docs/benchmarks.md``, :mod:`lewel_bench.benchmarks`; ``make bench-pretrain`` writes it into docs/benchmarks/records).

``--record DIR`` writes one result record per method (eval ``cost``, protocol ``step_time``, metrics
``time_rel`` = step time / supervised step time, ``flops_rel``, ``step_s``, ``images_per_s``; ``pretrain_epochs``
= the method config's epochs, so ``make tables`` puts ``time_rel`` beside the CGH supplement's Table 3 "Time/
Epoch" of the same method; the benchmark's settings and device are the record's config and group).
"""
from __future__ import annotations

import functools
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lewel_bench.args import COUNT, NON_NEGATIVE, ArgumentParser, PathArg
from lewel_bench.benchmarks import Table, add_record_args, record_from_args
from lewel_bench.config import load_config, load_yaml_config
from lewel_bench.declare import Paper, paper_of
from lewel_bench.models import build_torchvision_resnet
from lewel_bench.stage import cli_entry
from lewel_bench.utils import (
    amp_autocast,
    amp_step,
    channels_last_default,
    keep_freed_memory,
)
from pretrain.augment import view_specs
from pretrain.cli import CONFIG_DIR
from pretrain.experiments import config_files
from pretrain.loop import build_step, train_step
from pretrain.methods import METHODS
from pretrain.train import build_method

#: a target at or below the pair's FLOP ratio
FLOOR = "floor"


def method_names() -> tuple[str, ...]:
    """The registered methods with an IN-1K config of their name (``pretrain/configs/<name>.yaml``)."""
    files = config_files()
    return tuple(n for n in METHODS.names() if n in files)


@functools.cache
def paper(name: str) -> Paper:
    """What the method's config declares about its paper (cost targets, the overrides it is timed with)."""
    path = config_files()[name]
    return paper_of(load_yaml_config(path), str(path))


def default_set(name: str) -> list[str]:
    """The overrides a method is timed with before ``--set`` (its config's ``paper.cost.overrides``)."""
    return list(paper(name).cost_overrides) if name in config_files() else []


def targets(names: Sequence[str]) -> list[tuple[str, str, float | str, float | str]]:
    """(method, baseline, target on a GPU, target on a CPU) of every timed method's declared cost targets."""
    return [(n, t.baseline, t.gpu, t.cpu) for n in names for t in paper(n).cost]
#: Iterations per "epoch" the methods' own per-iteration schedules see (as ``momentum_at``'s total of 1000).
STEPS_PER_EPOCH = 1000


def count_pixels(trunk: torch.nn.Module, counter: dict, key: str) -> None:
    """Add the pixels (images x height x width) entering ``trunk``'s first conv to ``counter[key]``."""
    counter.setdefault(key, 0)
    trunk.conv1.register_forward_pre_hook(
        lambda mod, args: counter.__setitem__(key, counter[key] + args[0][:, 0].numel()))


def make_steps(arch: str, size: int, batch: int, device: torch.device, channels_last: bool, amp: bool = False,
               overrides: dict[str, list[str]] | None = None, methods: tuple[str, ...] | None = None,
               pixels: dict | None = None):
    """name -> zero-argument callable running one training step (as the pretraining loop runs it), and
    name -> the method's config (None for supervised).

    ``overrides``: config overrides per method name (e.g. {"<method>": ["model.<key>=<value>"]});
    ``pixels``: filled with the pixels each step's online / target trunk take (``<name>`` / ``<name>:target``)."""
    g = torch.Generator().manual_seed(0)
    methods = method_names() if methods is None else methods
    cfgs = {name: load_config(name, CONFIG_DIR, [f"arch={arch}", f"aug.size={size}", *default_set(name),
                                                 *(overrides or {}).get(name, [])])
            for name in methods}
    n_views = max([2, *(len(view_specs(c["aug"])) for c in cfgs.values())])
    xs = [torch.randn(batch, 3, size, size, generator=g).to(device) for _ in range(n_views)]
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    x1 = xs[0]
    pixels = {} if pixels is None else pixels
    steps, configs = {}, {}
    sup = build_torchvision_resnet(arch, 1000).to(device)
    count_pixels(sup, pixels, "supervised")
    if channels_last:
        sup.to(memory_format=torch.channels_last)
    sup_opt = torch.optim.SGD(sup.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    sup_scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def sup_step(scaler=sup_scaler):
        with amp_autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(sup(x1), y)
        amp_step(loss, sup_opt, scaler)

    steps["supervised"] = sup_step
    configs["supervised"] = None
    for name in methods:
        cfg = cfgs[name]
        configs[name] = cfg
        m = build_method(cfg, device, 1, channels_last, STEPS_PER_EPOCH).train()
        views = xs[:len(view_specs(cfg["aug"]))]
        state = build_step(m, cfg, device, STEPS_PER_EPOCH, STEPS_PER_EPOCH, amp, channels_last, schedule=False)
        count_pixels(m.online.backbone, pixels, name)
        count_pixels(m.target.backbone, pixels, f"{name}:target")

        def step(state=state, views=views):
            train_step(state, views, state.method.iteration + 1)  # the loop's step, at the config's lr

        steps[name] = step
    return steps, configs


def ratio_limit(target: str | float, floor: float, scaled: bool = True) -> tuple[float, str]:
    """The limit a time ratio is judged against, and how the table shows it: the declared target, or the pair's
    FLOP ratio where the target says ``floor`` or, for a method against its baseline (``scaled``), lies below it:
    such a target is a cost share at the paper's backbone and image size, and no step can beat the FLOP ratio of
    the backbone and size benchmarked. A target against another code's step (``scaled`` false) stays as declared."""
    if target == FLOOR:
        return floor, f"<= {floor:.3f} (FLOP floor)"
    if scaled and float(target) < floor:
        return floor, f"<= {floor:.3f} (FLOP floor; the declared {target} is below it at this size)"
    return float(target), f"<= {target}"


def _px(counts: dict[str, float], name: str) -> str:
    """The online and target pixel columns of a row ("-" for an external step, which is not counted)."""
    if name not in counts:
        return "- | -"
    return f"{counts[name]:.4g} | {counts.get(f'{name}:target', 0):.4g}"


def write_records(out: str | Path, med: dict[str, float], flops: dict[str, float], configs: dict, settings: dict,
                  batch: int, start: str) -> list[Path]:
    """One ``cost`` record per method: its step time relative to supervised (see the module docstring)."""
    from lewel_bench.records import make_record, write_record
    from lewel_bench.stage import digest

    paths = []
    sup, sup_flops = med["supervised"], flops["supervised"]
    for name, t in med.items():
        cfg = configs.get(name)
        conf = {**settings, "overrides": [*default_set(name), *settings["set"].get(name, [])]}
        rec = make_record(method=name, pretrain_exp=name, pretrain_epochs=cfg["epochs"] if cfg else None, eval="cost",
                          protocol="step_time", metrics={"time_rel": t / sup, "flops_rel": flops[name] / sup_flops,
                                                         "step_s": t, "images_per_s": batch / t},
                          seed=0, checkpoint_sha256="none (random init, random images)", config=conf,
                          start_time=start, dataset="synthetic", status="ok",
                          group=digest({"eval": "cost", "method": name,  # what changes the ratio (not reps)
                                        **{k: v for k, v in conf.items() if k not in ("reps", "steps", "set")}}))
        paths.append(write_record(rec, out))
    return paths


@cli_entry("bench_pretrain")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.bench_pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=COUNT, default=224)
    p.add_argument("--batch", type=COUNT, default=16, help="images per step (MCL: a multiple of 16)")
    p.add_argument("--threads", type=COUNT, default=1, help="torch threads (1 avoids oversubscribing a shared CPU)")
    p.add_argument("--reps", type=COUNT, default=5)
    p.add_argument("--steps", type=COUNT, default=1, help="steps per timed round (use ~10 on a GPU)")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    on_off = {"auto": None, "on": True, "off": False}
    p.add_argument("--amp", choices=on_off, default="auto", help="fp16 autocast + GradScaler (auto: on CUDA)")
    p.add_argument("--channels-last", choices=on_off, default="auto",
                   help="auto: as the training loop (CUDA; CPU from 128 px)")
    p.add_argument("--external-channels-last", choices=("own", "same"), default="own",
                   help="the public codes' memory format: own = theirs (NCHW: none converts), same = ours")
    p.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="config override for one method, e.g. lewel_b:model.reassociate=never (repeatable)")
    names = method_names()
    p.add_argument("--methods", nargs="+", default=list(names), choices=names)
    p.add_argument("--external", nargs="+", default=[], metavar="NAME",
                   help="public implementations to time in the same rounds (tools/bench_external.py): "
                        "lightly_byol lightly_mocov2 official_lewel_b; one not installed is skipped, saying why")
    p.add_argument("--official-root", default=None, metavar="PATH", type=PathArg("dir"),
                   help="a checkout of the official LEWEL code for official_lewel_b (default: $LEWEL_OFFICIAL_ROOT)")
    p.add_argument("--json", default=None, metavar="PATH", type=PathArg("out_file"), help="also write the step times and ratios as JSON")
    p.add_argument("--record", metavar="DIR", default=None, type=PathArg("out_dir"),
                   help="write one cost record per method into DIR (e.g. results/records) for make tables")
    add_record_args(p)
    args = p.parse_args(argv)
    from lewel_bench.records import now_iso

    start = now_iso()
    overrides: dict[str, list[str]] = {}
    for item in args.set:
        name, sep, kv = item.partition(":")
        if not sep or name not in names:
            p.error(f"--set {item!r}: expected METHOD:KEY=VALUE with METHOD one of {', '.join(names)}")
        overrides.setdefault(name, []).append(kv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        keep_freed_memory()  # the training loop's CPU allocator policy (every step of the process, theirs too)
    amp = cuda if on_off[args.amp] is None else on_off[args.amp] and cuda
    channels_last = (channels_last_default(device.type, args.size) if on_off[args.channels_last] is None
                     else on_off[args.channels_last])
    external_cl = channels_last and args.external_channels_last == "same"
    if cuda:
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pixels: dict[str, int] = {}
    steps, configs = make_steps(args.arch, args.size, args.batch, device, channels_last, amp, overrides,
                                tuple(args.methods), pixels)
    goals = [(a, b, gpu if cuda else cpu, True) for a, b, gpu, cpu in targets(args.methods)]
    if args.external:
        from tools.bench_external import COMPARED, EXTERNAL, ExternalUnavailable

        unknown = [n for n in args.external if n not in EXTERNAL]
        if unknown:
            p.error(f"--external {' '.join(unknown)}: expected any of {', '.join(EXTERNAL)}")
        g = torch.Generator().manual_seed(1)
        views = [torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device) for _ in range(2)]
        if external_cl:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        for name in args.external:
            try:
                steps[name] = EXTERNAL[name](args.arch, views, device, amp, external_cl, args.official_root)
            except ExternalUnavailable as e:
                print(f"# skipped {name}: {e}", flush=True)
                continue
            ours, tgt = COMPARED[name]
            goals.append((ours, name, tgt, False))  # beating another code: never below a floor
    print(f"# {args.arch}, {args.size} px, batch {args.batch} (each method's views), {args.threads} thread(s), "
          f"{torch.cuda.get_device_name(device) if cuda else device}, {'AMP fp16' if amp else 'fp32'}"
          f"{', channels_last' if channels_last else ''}"
          f"{' (the public codes: ' + ('the same' if external_cl else 'NCHW, their own') + ')' if args.external else ''}"
          f", {args.reps} interleaved rounds of {args.steps} "
          f"step(s) (median){'; ' + ' '.join(args.set) if args.set else ''}", flush=True)
    flops, px = {}, {}
    for name, fn in steps.items():
        before = dict(pixels)
        with FlopCounterMode(display=False) as fc:
            fn()
        flops[name] = fc.get_total_flops()
        px[name] = {k: (pixels[k] - before.get(k, 0)) / (args.batch * args.size ** 2)
                    for k in (name, f"{name}:target") if k in pixels}  # none for an external step
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
    print("\n| method | step (s, median) | images/s | GFLOP/step | time / supervised | FLOPs / supervised | "
          "online px | target px |")
    print("|---|---|---|---|---|---|---|---|")
    method_rows = []
    for n in steps:
        row = [n, f"{med[n]:.3f}", f"{args.batch / med[n]:.1f}", f"{flops[n] / 1e9:.1f}", f"{med[n] / sup:.3f}",
               f"{flops[n] / flops['supervised']:.3f}", *_px(px[n], n).split(" | ")]
        method_rows.append(row)
        print("| " + " | ".join(row) + " |")
    print("(px: pixels entering the trunk per step / (batch x size^2))")
    print("\n| ratio | time | FLOP floor | online px | target | |")
    print("|---|---|---|---|---|---|")
    ratios, ratio_rows = [], []
    for a, b, tgt, scaled in goals:
        if a not in med or b not in med:
            continue
        r, floor = med[a] / med[b], flops[a] / flops[b]
        limit, shown = ratio_limit(tgt, floor, scaled)
        ok = r <= limit
        online = f"{px[a][a] / px[b][b]:.4f}" if a in px.get(a, {}) and b in px.get(b, {}) else "-"
        ratio_rows.append([f"{a} / {b}", f"{r:.3f}", f"{floor:.3f}", online, shown, "PASS" if ok else "MISS"])
        print("| " + " | ".join(ratio_rows[-1]) + " |")
        ratios.append({"ratio": f"{a} / {b}", "time": r, "flop_floor": floor, "target": limit, "pass": ok})
    if args.json:
        from lewel_bench.io import atomic_write_json

        atomic_write_json(Path(args.json), {
            "settings": {"arch": args.arch, "size": args.size, "batch": args.batch, "threads": args.threads,
                         "reps": args.reps, "steps": args.steps, "amp": amp, "channels_last": channels_last,
                         "external_channels_last": external_cl if args.external else None,
                         "device": str(device), "set": args.set},
            "methods": {n: {"step_s": med[n], "gflop": flops[n] / 1e9} for n in steps}, "ratios": ratios})
    if args.record:
        dev_name = torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})"
        settings = {"arch": args.arch, "size": args.size, "batch": args.batch, "threads": args.threads,
                    "steps": args.steps, "reps": args.reps, "device": dev_name, "amp": amp,
                    "channels_last": channels_last, "set": overrides}
        for path in write_records(args.record, med, flops, configs, settings, args.batch, start):
            print(f"record: {path}")
    setup = (f"{args.arch}, {args.size} px, batch {args.batch}, {args.threads} thread(s), "
             f"{'AMP fp16' if amp else 'fp32'}{', channels_last' if channels_last else ''}, {args.reps} interleaved "
             f"rounds of {args.steps} step(s), median")
    record_from_args(args, tool="tools.bench_pretrain", argv=argv, device=device, settings={"setup": setup},
                     tables=[
                         Table(f"step time per method ({setup}; px: pixels entering the trunk per step / "
                               f"(batch x size^2))", ["method", "step (s, median)", "images/s", "GFLOP/step",
                                                      "time / supervised", "FLOPs / supervised", "online px",
                                                      "target px"], method_rows),
                         Table("ratios against their declared targets", ["ratio", "time", "FLOP floor", "online px",
                                                                         "target", ""], ratio_rows)])


if __name__ == "__main__":
    main()
