"""Aggregate ``results/records/`` into CSV tables that mirror the papers' tables (LEWEL Tables 1-9, the CGH
supplement's Tables 1-3, MCL's Tables 11-13, and any table an evaluation declares).

    python -m tools.make_tables [--records results/records] [--paper results/paper] [--out results/tables] [--strict]

The tables are declared in ``results/paper/tables.yaml`` (and by evaluations); how records become rows:
:mod:`lewel_bench.tables`. Writes ``<out>/<table>.csv``, ``unmatched.csv``, ``other_results.csv`` and
``README.md``; ``--strict`` exits 1 when a record could not be placed, a malformed paper file exits 2.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

from lewel_bench import tables as T
from lewel_bench.args import ArgumentParser, PathArg
from lewel_bench.records import default_records_dir
from lewel_bench.stage import cli_entry
from lewel_bench.tables import PaperFileError, read_paper_csv  # noqa: F401 (this command's vocabulary)
from lewel_bench.tables.spec import TableSpec
from lewel_bench.utils import REPO_ROOT

log = logging.getLogger("tools.make_tables")

PAPER_DIR = REPO_ROOT / "results" / "paper"
TABLES_DIR = REPO_ROOT / "results" / "tables"


def specs(paper_dir: Path = PAPER_DIR) -> list[TableSpec]:
    """Every declared table."""
    return T.table_specs(paper_dir)


def make_tables(records_dir: Path, paper_dir: Path = PAPER_DIR, out_dir: Path = TABLES_DIR
                ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """:func:`lewel_bench.tables.make_tables` with the experiments' declared variants (their configs)."""
    from pretrain.experiments import variants

    return T.make_tables(Path(records_dir), Path(paper_dir), Path(out_dir), variants())


@cli_entry("make_tables")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m tools.make_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", default=None, type=PathArg("dir"), help="records folder (default results/records or $LEWEL_RESULTS_DIR/records)")
    p.add_argument("--paper", default=str(PAPER_DIR), type=PathArg("dir"), help="paper data folder (default results/paper)")
    p.add_argument("--out", default=str(TABLES_DIR), type=PathArg("out_dir"), help="output folder (default results/tables)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any record is malformed or unmatched")
    p.add_argument("--print", action="store_true", help="print the Markdown rendering")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    records_dir = Path(args.records) if args.records else default_records_dir()
    out = Path(args.out)
    try:
        tables, um = make_tables(records_dir, Path(args.paper), out)
    except PaperFileError as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    for r in um.itertuples():
        log.warning("unmatched record %s: %s", r.file, r.reason)
    log.info("wrote %d tables to %s (%d unmatched records, see unmatched.csv)", len(tables), out, len(um))
    if args.print:
        print((out / "README.md").read_text())
    if args.strict and not um.empty:
        log.error("--strict: %d records could not be placed", len(um))
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
