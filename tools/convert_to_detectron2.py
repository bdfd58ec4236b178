"""Convert a lewel-bench backbone to detectron2's pickle format (MoCo's detection-transfer convention).

Usage::

    python -m tools.convert_to_detectron2 runs/lewel_b/backbone.pth runs/lewel_b/backbone_d2.pkl
    python -m tools.convert_to_detectron2 runs/mcl/backbone.pth runs/mcl/bundle_d2.pkl --parts fpn box_head

Input: any checkpoint :func:`lewel_bench.checkpoint.load_backbone` reads (``backbone.pth``, a full pretraining
checkpoint, a torchvision state dict, or a published file in one of the layouts of :mod:`lewel_bench.layouts`),
which refuses partial backbones; the encoder taken is the one the layout's authors evaluate unless
``--ckpt-prefix`` names another (``--layout`` names the layout of a file that matches several); ``--parts``: the
transfer bundle's parts to export too. The format and the renames: :mod:`lewel_bench.transfer.detectron2`.
"""
from __future__ import annotations

import logging

from lewel_bench.args import ArgumentParser, PathArg
from lewel_bench.stage import add_encoder_choice, cli_entry
from lewel_bench.transfer import PARTS
from lewel_bench.transfer.detectron2 import convert


@cli_entry("convert_to_detectron2")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.convert_to_detectron2", description=__doc__.split("\n")[0])
    p.add_argument("input", type=PathArg("file"),
                   help="backbone.pth, a full pretraining checkpoint, a torchvision ResNet state dict or a published "
                        "checkpoint (`make inspect CKPT=FILE` says what is in it)")
    p.add_argument("output", type=PathArg("out_file"), help="detectron2 .pkl to write")
    add_encoder_choice(p, "--prefix")
    p.add_argument("--arch", default=None, help="ResNet arch (default: from meta / inferred)")
    p.add_argument("--parts", nargs="*", default=[], choices=sorted(PARTS),
                   help="transfer-bundle parts to export besides the trunk (default: the trunk only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    convert(args.input, args.output, prefix=args.ckpt_prefix, arch=args.arch, parts=args.parts, layout=args.layout)


if __name__ == "__main__":
    main()
