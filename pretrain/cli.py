"""``python -m pretrain EXP [--data ROOT] [--out DIR] [key=value ...]``.

EXP names a config in ``pretrain/configs`` or a YAML path. Overrides are checked against the config's
schema (an unknown key or a value of the wrong type is an error naming it). Running the same command
again resumes from ``<out>/checkpoint.pth`` (a finished run is reported); a folder that holds a run with
other settings, or that another run is using, is refused; ``--fresh`` discards the folder's saved state.
Under torchrun or SLURM the process group is initialised from the environment (gloo on CPU, NCCL on CUDA).
Ctrl-C, SIGTERM and SIGUSR2 finish the step in progress, save it and end with one line and the status
128 + the signal (:mod:`lewel_bench.signals`); the same command resumes.
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path

from lewel_bench import dist as ldist
from lewel_bench.args import ArgumentParser, ConfigArg, PathArg, check_path
from lewel_bench.config import ConfigError, get_key, load_config
from lewel_bench.errors import one_line
from lewel_bench.signals import Stopped, StopRequest
from lewel_bench.stage import cli_entry
from lewel_bench.utils import runs_dir, setup_logging

from .experiments import CONFIG_DIR, config_files, configs

log = logging.getLogger("pretrain")


def load_experiment(config: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The experiment's config (a name of :func:`config_files` or a YAML path) with the overrides."""
    return load_config(config_files().get(config, config), CONFIG_DIR, list(overrides))


def build_parser() -> argparse.ArgumentParser:
    names = textwrap.fill(" ".join(configs()), width=100, initial_indent="  ", subsequent_indent="  ")
    p = ArgumentParser(
        prog="python -m pretrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Self-supervised pretraining (MoCo v2, BYOL, LEWEL_M, LEWEL_B, CGH, MCL): resumable, DDP under "
                    "torchrun or SLURM.",
        epilog=f"experiments (pretrain/configs/<name>.yaml; *_mini: the embedded mini data):\n{names}\n\n"
               "example: python -m pretrain lewel_m_mini --data data/mini/imagenet --out runs/lewel_m epochs=2")
    p.add_argument("config", type=ConfigArg(CONFIG_DIR, loader=load_experiment),
                   help="experiment config name (pretrain/configs, $LEWEL_CONFIG_PATH) or a YAML path")
    p.add_argument("--data", default=None, type=PathArg("dir"),
                   help="dataset root holding train/ and val/ (default: the config's data.root)")
    p.add_argument("--out", default=None, type=PathArg("out_dir"),
                   help="output folder (default: runs/<exp>, or $LEWEL_RUNS_DIR/<exp>)")
    p.add_argument("--exp", default=None, help="the experiment's name in records and checkpoints (default: the "
                                                "config's file name; make pretrain passes EXP)")
    p.add_argument("--records-dir", default=None, type=PathArg("out_dir"),
                   help="where the training-speed record goes (default results/records)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the saved state in the output folder (checkpoint, backbone, metrics, ...) and start "
                        "over")
    p.add_argument("--sweep", default=None, metavar="KEY",
                   help="this run is one point of a sweep over the config key KEY (e.g. model.beta, LEWEL Fig. 3): "
                        "the checkpoint and every record of its evaluations say so, and the tables keep the points "
                        "apart from the experiment's own runs")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_intermixed_args(argv)


@cli_entry("pretrain")
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with StopRequest("before training: nothing was trained") as stop:
        try:
            _run(args, stop)
        except Stopped as e:  # one line; the status says which signal (130 Ctrl-C, 143 SIGTERM, 140 SIGUSR2)
            sys.stderr.write(f"pretrain: {one_line(e)}\n")
            raise SystemExit(e.exit_status) from None


def _run(args: argparse.Namespace, stop: StopRequest) -> None:
    info = ldist.init_distributed()
    setup_logging(rank=info.rank)
    cfg = load_experiment(args.config, args.overrides)
    from .methods import (
        import_custom,  # a method defined outside the suite registers itself
    )

    import_custom(cfg)
    if args.data:
        cfg["data"]["root"] = args.data
    root = cfg["data"].get("root")
    if not root:
        raise ConfigError(f"experiment {args.config!r}: no data root; pass --data /path/to/imagenet (make: DATA=...)")
    if not (Path(root) / cfg["data"]["train_split"]).is_dir():
        raise ConfigError(f"data root {root!r} has no {cfg['data']['train_split']}/ folder "
                          f"(expected <root>/{cfg['data']['train_split']}/<class>/<images>)")
    exp = args.exp or Path(args.config).stem
    sweep = {"key": args.sweep, "value": get_key(cfg, args.sweep, f"--sweep {args.sweep}: the config")} \
        if args.sweep else None
    out = Path(args.out) if args.out else runs_dir() / exp
    check_path(out, "out_dir", "--out" if args.out else "output folder (--out; default runs/<exp>)")
    if info.is_main:  # the speed record's folder, refused before training rather than after it
        from lewel_bench.records import default_records_dir

        check_path(args.records_dir or default_records_dir(), "out_dir", "--records-dir" if args.records_dir else
                   "records folder (--records-dir; default results/records or $LEWEL_RESULTS_DIR/records)")
    from .train import train  # heavy imports after argument checks

    ckpt = train(cfg, out, exp, info, args.records_dir, sweep, fresh=args.fresh, stop=stop)
    if info.is_main:
        log.info("checkpoint: %s", ckpt)
        log.info("backbone:   %s", out / "backbone.pth")
        print(f"pretrain {exp}: checkpoint {ckpt}\npretrain {exp}: backbone {out / 'backbone.pth'}", flush=True)
    ldist.cleanup()
