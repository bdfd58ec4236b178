"""``python -m lewel_bench.tables [--paper results/paper]``: the record vocabulary the tables read: every declared
evaluation (its module, protocols, metrics, primary metric, chain steps) and the tables it feeds."""
from __future__ import annotations

import sys
from pathlib import Path

from ..args import ArgumentParser, PathArg
from ..declare import evaluations
from ..stage import cli_entry
from .spec import table_specs


@cli_entry("lewel_bench.tables")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m lewel_bench.tables", description=__doc__.split(":")[1].strip())
    p.add_argument("--paper", default=None, type=PathArg("dir"), help="the folder of tables.yaml (then: the tables each one feeds)")
    args = p.parse_args(argv)
    specs = table_specs(Path(args.paper)) if args.paper else []
    for ev in evaluations().values():
        fed = [s.name for s in specs if any(c.eval == ev.name for c in s.all_cells.values())]
        print(f"{ev.name} ({ev.module}, version {ev.version}): protocols {' '.join(ev.protocols)}; metrics "
              f"{' '.join(ev.metrics)} (primary {ev.primary}); steps {' '.join(s.name for s in ev.steps) or '-'}"
              + (f"; tables {' '.join(fed) or '-'}" if args.paper else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
