"""``python -m pretrain EXP [--data ROOT] [--out DIR] [key=value ...]``.

EXP names a config in ``pretrain/configs`` (``lewel_m``, ``lewel_b_400ep``, ``byol_mini``, ...) or a YAML
path. Overrides are validated against the config (unknown key -> error with close matches). Running
the same command again resumes from ``<out>/checkpoint.pth``. Under torchrun or SLURM the process
group is initialised from the environment (gloo on CPU, NCCL on CUDA).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lewel_bench import dist as ldist
from lewel_bench.config import ConfigError, load_config
from lewel_bench.utils import REPO_ROOT, setup_logging

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
log = logging.getLogger("pretrain")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("exp", help="experiment config name (pretrain/configs/<exp>.yaml) or a YAML path")
    p.add_argument("--data", default=None, help="dataset root holding train/ and val/ (default: the config's data.root)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<exp>)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (dotted keys)")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = ldist.init_distributed()
    setup_logging(rank=info.rank)
    try:
        cfg = load_config(args.exp, CONFIG_DIR, args.overrides)
        if args.data:
            cfg["data"]["root"] = args.data
        root = cfg["data"].get("root")
        if not root:
            raise ConfigError(f"experiment {args.exp!r}: no data root; pass --data /path/to/imagenet (make: DATA=...)")
        if not (Path(root) / cfg["data"]["train_split"]).is_dir():
            raise ConfigError(f"data root {root!r} has no {cfg['data']['train_split']}/ folder "
                              f"(expected <root>/{cfg['data']['train_split']}/<class>/<images>)")
    except ConfigError as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    exp = Path(args.exp).stem
    out = Path(args.out) if args.out else REPO_ROOT / "runs" / exp
    from .train import train  # heavy imports after argument checks

    ckpt = train(cfg, out, exp, info)
    if info.is_main:
        log.info("checkpoint: %s", ckpt)
        log.info("backbone:   %s", out / "backbone.pth")
        print(f"pretrain {exp}: checkpoint {ckpt}\npretrain {exp}: backbone {out / 'backbone.pth'}", flush=True)
    ldist.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
