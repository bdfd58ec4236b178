"""Run a stage's ``main(argv)`` locally or on SLURM (through submitit).

Usage: ``python -m lewel_bench.launch [--launcher local|slurm] [launcher options] -- <stage> [stage args]``
where ``<stage>`` is a package with ``<stage>/cli.py:main(argv)`` (pretrain, eval_linear, ...).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

log = logging.getLogger(__name__)


def stage_main(stage: str) -> Callable[[list[str]], None]:
    """Import ``<stage>.cli.main`` (a clear error if the stage does not exist)."""
    try:
        mod = importlib.import_module(f"{stage}.cli")
    except ModuleNotFoundError as e:
        raise SystemExit(f"unknown stage {stage!r}: cannot import {stage}.cli ({e})") from None
    return mod.main


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: python -m lewel_bench.launch [options] -- <stage> [args]")
    i = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m lewel_bench.launch")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    args, rest = p.parse_known_args(argv[:i])
    if rest:
        raise SystemExit(f"unknown launcher options: {rest}")
    return args, argv[i + 1:]


def main(argv: list[str] | None = None) -> None:
    args, stage_argv = parse_args(sys.argv[1:] if argv is None else argv)
    if not stage_argv:
        raise SystemExit("no stage given after --")
    stage, rest = stage_argv[0], stage_argv[1:]
    if args.launcher == "local":
        stage_main(stage)(rest)
    else:
        raise SystemExit("LAUNCHER=slurm is not available yet")


if __name__ == "__main__":
    main()
