"""Stand-alone detectron2 entry point (detectron2's usual ``train_net.py``) on the stage contract.

    python -m eval_detection.train_net --config-file eval_detection/configs/detectron2/voc_R_50_C4_24k.yaml \
        --ckpt runs/lewel_b/backbone.pth --data /datasets/VOCdevkit [--out DIR] [KEY VALUE ...]
    python -m eval_detection.train_net --config mini_voc_c4_24k --ckpt runs/lewel_m/backbone.pth \
        --data data/mini/VOCdevkit SOLVER.MAX_ITER 100                     # the embedded mini data

``--config-file`` names one of ``configs/detectron2/*.yaml``: the run takes the protocol config of
``configs/torchvision`` whose ``detectron2_config`` is that file (its classes, data layout and record
vocabulary); ``--config`` names that protocol config directly (``mini_*`` for the mini data, whose classes
are the mini shapes, not VOC's 20). Trailing ``KEY VALUE`` pairs are detectron2 overrides. Everything
else is ``python -m eval_detection --backend detectron2`` (identity, folder, record).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lewel_bench.args import ArgumentParser, CheckpointArg, PathArg, seed_arg
from lewel_bench.config import ConfigError, load_config
from lewel_bench.stage import cli_entry

from .cli import main as cli_main
from .protocol import CONFIG_DIR, TRANSFERS


def protocol_for(config_file: str | Path) -> str:
    """The full-data protocol config whose ``detectron2_config`` is ``config_file``."""
    name = Path(config_file).name
    found = [p.stem for p in sorted(CONFIG_DIR.glob("*.yaml"))
             if not p.stem.startswith(("_", "mini_")) and load_config(p.stem, CONFIG_DIR).get("detectron2_config") == name]
    if len(found) != 1:
        known = sorted({load_config(p.stem, CONFIG_DIR)["detectron2_config"] for p in CONFIG_DIR.glob("*.yaml")
                        if not p.stem.startswith("_")})
        raise ConfigError(f"--config-file {name}: not the detectron2 file of one protocol config (known: "
                          f"{', '.join(known)}); or pass --config <protocol config>")
    return found[0]


@cli_entry("train_net")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m eval_detection.train_net", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--config-file", type=PathArg("file"), help="one of eval_detection/configs/detectron2/*.yaml")
    which.add_argument("--config", help="a protocol config of eval_detection/configs/torchvision (mini_* for the mini data)")
    p.add_argument("--ckpt", required=True, type=CheckpointArg())
    p.add_argument("--data", required=True, type=PathArg("dir"))
    p.add_argument("--out", default=None, type=PathArg("out_dir"))
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--records-dir", default=None, type=PathArg("out_dir"))
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--transfer", choices=list(TRANSFERS), default="trunk",
                   help="trunk, or bundle: also the checkpoint's FPN / box head (see python -m eval_detection --help)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="detectron2 KEY VALUE overrides")
    a = p.parse_args(argv)
    if len(a.opts) % 2:
        raise ConfigError(f"detectron2 overrides come in KEY VALUE pairs, got {a.opts}")
    config = a.config or protocol_for(a.config_file)
    argv = ["--config", config, "--ckpt", a.ckpt, "--data", a.data, "--seed", str(a.seed), "--backend", "detectron2",
            *(["--out", a.out] if a.out else []), *(["--records-dir", a.records_dir] if a.records_dir else []),
            *(["--fresh"] if a.fresh else []), "--transfer", a.transfer,
            *[f"--d2-opt={k}={v}" for k, v in zip(a.opts[::2], a.opts[1::2])]]
    cli_main(argv)


if __name__ == "__main__":
    main()
