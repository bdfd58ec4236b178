"""Convert a lewel-bench backbone to the checkpoint mmsegmentation's ``ResNet`` loads.

Usage::

    python -m tools.convert_to_mmseg runs/lewel_b/backbone.pth runs/lewel_b/backbone_mmseg.pth
    python -m tools.convert_to_mmseg random:resnet50 /tmp/random_mmseg.pth   # explicit random init

Input: any ``--ckpt`` spec :func:`lewel_bench.checkpoint.resolve_backbone` accepts (``backbone.pth``, a full
pretraining checkpoint, a plain torchvision state dict, a published checkpoint in one of the layouts of
:mod:`lewel_bench.layouts`, ``random:<arch>``); ``--ckpt-prefix`` / ``--layout`` as for the evaluations. The
format and its checks: :mod:`lewel_bench.transfer.mmseg`.
"""
from __future__ import annotations

import logging

from lewel_bench.args import ArgumentParser, CheckpointArg, PathArg, seed_arg
from lewel_bench.stage import add_encoder_choice, cli_entry
from lewel_bench.transfer.mmseg import convert_to_mmseg


@cli_entry("convert_to_mmseg")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.convert_to_mmseg", description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=CheckpointArg(),
                   help="backbone.pth, full pretraining checkpoint, torchvision state dict, a published checkpoint "
                        "or random:<arch>")
    p.add_argument("output", type=PathArg("out_file"), help="mmseg checkpoint to write (e.g. runs/EXP/backbone_mmseg.pth)")
    add_encoder_choice(p, "--prefix")
    p.add_argument("--arch", default=None, help="resnet50, ... (default: from the checkpoint)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of a random:<arch> initialisation")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    convert_to_mmseg(args.input, args.output, prefix=args.ckpt_prefix, arch=args.arch, seed=args.seed,
                     layout=args.layout)


if __name__ == "__main__":
    main()
