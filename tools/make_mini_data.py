"""Generate the embedded mini benchmark: ``python -m tools.make_mini_data --out data/mini --seed 0``.

Every size key of :data:`lewel_bench.data.mini.DEFAULT_SIZES` is a flag (``--coco-train 400`` ...).
Re-running with the same seed and sizes does nothing once ``<out>/.complete`` exists.
"""
from __future__ import annotations

import logging
import time

from lewel_bench.args import COUNT, NON_NEGATIVE, ArgumentParser, PathArg, seed_arg
from lewel_bench.data.mini import DEFAULT_SIZES, generate_mini
from lewel_bench.stage import cli_entry
from lewel_bench.utils import setup_logging


@cli_entry("make_mini_data")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.make_mini_data", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/mini", type=PathArg("out_dir"), help="output folder (default data/mini)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--force", action="store_true", help="regenerate even if <out>/.complete matches")
    p.add_argument("--workers", type=COUNT, default=None, help="rendering processes (default: up to 2 cores)")
    for key, val in DEFAULT_SIZES.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=NON_NEGATIVE, default=val, help=f"default {val}")
    args = p.parse_args(argv)
    setup_logging()
    sizes = {k: getattr(args, k) for k in DEFAULT_SIZES}
    t0 = time.time()
    generate_mini(args.out, seed=args.seed, force=args.force, workers=args.workers, **sizes)
    logging.getLogger("tools.make_mini_data").info("done in %.1f s: %s", time.time() - t0, args.out)


if __name__ == "__main__":
    main()
