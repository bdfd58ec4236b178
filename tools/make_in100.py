"""Build ImageNet-100 (CMC's classes) as symlinks: ``python -m tools.make_in100 --imagenet ROOT --out OUT``.

``ROOT`` is an ImageNet-1k root (``<split>/<wnid>/*.JPEG``); ``OUT`` must be new, empty, or a previous
complete build of the same source (then nothing is done). Pretrain on it with
``make pretrain EXP=lewel_b_in100 DATA=OUT``. Exit code 2 when the source or OUT is refused.
"""
from __future__ import annotations

import logging

from lewel_bench.args import ArgumentParser, PathArg
from lewel_bench.data.in100 import LINK_MODES, build_in100
from lewel_bench.data.layout import DataLayoutError
from lewel_bench.stage import cli_entry
from lewel_bench.utils import setup_logging

log = logging.getLogger("tools.make_in100")


@cli_entry("make_in100")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.make_in100", description=__doc__.split("\n\n")[0])
    p.add_argument("--imagenet", required=True, type=PathArg("dir"), help="ImageNet-1k root with <split>/<wnid>/*.JPEG")
    p.add_argument("--out", required=True, type=PathArg("out_dir"), help="output folder (new, empty, or a previous build)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to link (default: train val)")
    p.add_argument("--link", choices=LINK_MODES, default="symlink", help="link type (default: symlink)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        build_in100(args.imagenet, args.out, splits=args.splits, link=args.link)
    except DataLayoutError as e:
        log.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
