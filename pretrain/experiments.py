"""Experiment names: which config ``make pretrain EXP=<name>`` runs, with and without ``DATA``.

``python -m pretrain.experiments resolve EXP [--full]`` prints the config the make targets run: on the
embedded mini data (no ``DATA``) ``EXP`` is a method recipe with a mini version (``lewel_m`` ->
``lewel_m_mini``); with ``DATA`` (``--full``) it is a full-data config (``lewel_m``, ``lewel_b_400ep``,
``mocov2_in100``, ...). An unknown name exits with status 2 and suggests close names, listing only the
names that mode accepts (never the internal ``_base`` / ``_mini`` files). ``list [--full]`` prints them.
Imports no torch: the make targets call it before anything heavy.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MINI_SUFFIX = "_mini"


def configs(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Every experiment config (not the internal ``_*.yaml`` bases)."""
    return sorted(p.stem for p in config_dir.glob("*.yaml") if not p.stem.startswith("_"))


def experiments(full: bool, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The ``EXP`` names accepted: full-data configs (``full``), else the mini recipes' names."""
    names = configs(config_dir)
    if full:
        return [n for n in names if not n.endswith(MINI_SUFFIX)]
    return [n[: -len(MINI_SUFFIX)] for n in names if n.endswith(MINI_SUFFIX)]


def resolve(exp: str, full: bool, config_dir: Path = CONFIG_DIR) -> str:
    """The config name ``EXP`` selects; ``ValueError`` with close names when there is none."""
    names = experiments(full, config_dir)
    if exp in names:
        return exp if full else exp + MINI_SUFFIX
    close = difflib.get_close_matches(exp, names, n=4, cutoff=0.4)
    mode = ("with DATA (a full-data config)" if full else
            "on the embedded mini data (a recipe with a mini version; DATA=/path selects the full-data configs)")
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    other = experiments(not full, config_dir)
    also = (f" ('{exp}' exists {'without' if full else 'with'} DATA.)" if exp in other else "")
    raise ValueError(f"unknown experiment EXP={exp!r} {mode}.{hint}{also} Experiments: {' '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.experiments", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve", help="print the config EXP selects")
    r.add_argument("exp")
    r.add_argument("--full", action="store_true", help="DATA is set: full-data configs")
    ls = sub.add_parser("list", help="list the EXP names")
    ls.add_argument("--full", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "list":
        print(" ".join(experiments(a.full)))
        return 0
    try:
        print(resolve(a.exp, a.full))
    except ValueError as e:
        print(f"make pretrain: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
