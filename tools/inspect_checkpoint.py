"""Say what is in a checkpoint file, without loading it into a model (``make inspect CKPT=FILE``).

Usage::

    python -m tools.inspect_checkpoint moco_v2_800ep_pretrain.pth.tar
    python -m tools.inspect_checkpoint dino_resnet50_full_checkpoint.pth --ckpt-prefix student.module.backbone.
    python -m tools.inspect_checkpoint --list

Prints, in a few lines: size, sha256 and tensor count; the checkpoint layout recognised
(:mod:`lewel_bench.layouts`); every encoder candidate with its tensor count and whether it holds a complete
ResNet trunk, the one the evaluations and converters take marked (or why they refuse the file); arch, method and
epochs as far as the file says; the transfer parts of the encoder taken; the non-finite tensors. ``--ckpt-prefix``
/ ``--layout`` show what the evaluations take with those flags. ``--list``: every layout, the encoder its authors
evaluate, and the code its key names come from. The logic: :func:`lewel_bench.checkpoint.describe_checkpoint`.
"""
from __future__ import annotations

import logging

from lewel_bench.args import ArgumentParser, PathArg
from lewel_bench.checkpoint import describe_checkpoint
from lewel_bench.layouts import LAYOUTS
from lewel_bench.layouts import names as layout_names
from lewel_bench.stage import add_encoder_choice, cli_entry


def layout_table() -> list[str]:
    """One line per layout: name, title, the encoder its authors evaluate (role at its prefix), its code."""
    out = []
    for name in layout_names():
        lay = LAYOUTS[name]
        enc = {e.role: e for e in lay.encoders}
        taken = " / ".join(f"{r} ({' or '.join(repr(root + a) for a in enc[r].at for root in lay.roots[:1])})"
                           if r in enc else r for r in lay.evaluated)
        out.append(f"{name}: {lay.title}; takes {taken}; keys from {lay.source}")
    return out


@cli_entry("inspect_checkpoint")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.inspect_checkpoint", description=__doc__.split("\n")[0])
    p.add_argument("file", nargs="?", type=PathArg("file"), help="any checkpoint file (.pth, .pth.tar, .torch, .ckpt, detectron2 .pkl)")
    add_encoder_choice(p)  # what an evaluation takes with these flags
    p.add_argument("--list", action="store_true", help="list the known checkpoint layouts")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.list or not args.file:
        if not args.list:
            p.error("pass a checkpoint FILE (or --list)")
        print("\n".join(layout_table()))
        return
    print("\n".join(describe_checkpoint(args.file, prefix=args.ckpt_prefix, layout=args.layout)))


if __name__ == "__main__":
    main()
