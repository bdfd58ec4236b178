"""Detection transfer: ``python -m eval_detection --config voc_c4_24k --ckpt runs/lewel_b/backbone.pth``.

Configs (``eval_detection/configs/torchvision/<name>.yaml``): ``voc_c4_24k`` (Table 3), ``coco_c4_1x``,
``coco_fpn_1x``, ``coco_fpn_2x`` (Table 4 / 8), ``coco_c4_2x`` (MCL Table 12), ``coco_retinanet_1x``,
``coco_retinanet_2x``, ``coco_retinanet_6x`` (MCL Table 11) and their ``mini_*`` versions for the embedded
mini data. ``--transfer bundle`` also loads the checkpoint's transfer bundle (FPN, box head) into the FPN
detectors; the record's ``transfer`` counts the tensors each part gave.
Backends: ``detectron2`` (the paper's code base; ``configs/detectron2/*.yaml`` + ``detectron2_backend.py``),
``torchvision`` (runs anywhere; same layout, schedule and metrics), ``auto`` = detectron2 when it can be
imported, else torchvision (logged). Arguments, run identity, output folder and record follow the stage
contract of :mod:`lewel_bench.stage`; the record's ``config`` is what ran (the torchvision config, or
detectron2's own dumped config). Every run writes ``metrics.json`` in its folder and one result record
(eval ``voc_det`` / ``coco``). Running again resumes training from ``last.pth`` and does not write a
second record for a finished run.
"""
from __future__ import annotations

import argparse

from lewel_bench.stage import cli_entry, parse_stage_args, stage_parser, yaml_config

from .protocol import CONFIG_DIR, PROTOCOL_VERSION, TRANSFERS  # noqa: F401 (the stage's constants)


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser("python -m eval_detection", __doc__.split("\n")[0], None, yaml_config(CONFIG_DIR))
    p.add_argument("--backend", choices=["auto", "torchvision", "detectron2"], default="auto")
    p.add_argument("--transfer", choices=list(TRANSFERS), default="trunk",
                   help="what the detector takes from the checkpoint: trunk (the ResNet; LEWEL / MoCo protocol) or "
                        "bundle (also the checkpoint's FPN, and for Mask R-CNN FPN its 4-conv box head, as MCL's "
                        "converter loads them)")
    p.add_argument("--no-record", action="store_true", help="do not write a result record (smoke runs)")
    p.add_argument("--d2-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="detectron2 backend only: one more config override (repeatable), e.g. SOLVER.MAX_ITER=10")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_stage_args(build_parser(), argv)


@cli_entry("eval_detection")
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from .pipeline import (
        run,  # torch, torchvision: after the arguments (``--help`` stays instant)
    )

    run(args)
