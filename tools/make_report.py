"""One static page of everything the benchmark produced: ``results/report/index.html`` (and its images).

    python -m tools.make_report [--records DIR] [--runs DIR] [--tables DIR] [--out results/report]
                                [--bench bench.json] [--random-knn VALUE] [--no-align]
    make report

What the page shows: :mod:`lewel_bench.report` (``docs/report.md``). This command gives it the methods'
declarations: the alignment maps of the runs whose method class has them (``has_alignment_maps``, drawn by
:mod:`tools.visualize_alignment`), the multi-crop variants and the cost pairs their configs declare. Bad input (a
malformed run file, benchmark file or table) stops with one line naming the file. Prints the page's path.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lewel_bench.args import COUNT, ArgumentParser, Number, PathArg
from lewel_bench.declare import DeclarationError, paper_of
from lewel_bench.records import default_records_dir
from lewel_bench.report import ReportError, delta_style  # noqa: F401 (this command's vocabulary)
from lewel_bench.report import make_report as _make_report
from lewel_bench.stage import cli_entry
from lewel_bench.utils import REPO_ROOT, runs_dir

log = logging.getLogger("tools.make_report")

REPORT_DIR = REPO_ROOT / "results" / "report"
PAPER_DIR = REPO_ROOT / "results" / "paper"


def has_alignment_maps(cfg: Mapping[str, Any]) -> bool:
    """Whether the run's method (its config, with its custom_imports) has alignment maps (a class attribute)."""
    from pretrain.methods import method_class

    return bool(method_class(cfg).has_alignment_maps)


def cost_pairs() -> list[tuple[str, str]]:
    """(method, baseline) of every method config's declared cost targets."""
    from pretrain.experiments import method_configs

    out = []
    for name, cfg in method_configs().items():
        try:
            out += [(name, t.baseline) for t in paper_of(cfg, name).cost]
        except DeclarationError as e:
            raise ReportError(str(e)) from None
    return out


def make_report(records_dir: Path, runs_root: Path, out_dir: Path, tables_dir: Path | None = None,
                paper_dir: Path | None = None, bench: Path | None = None, random_knn: float | None = None,
                align: bool = True, align_images: int = 4) -> Path:
    """The page with the suite's declarations (see the module docstring)."""
    from pretrain.experiments import variants

    draw = errors = None
    if align:
        from tools import visualize_alignment as va

        draw, errors = va.draw, (va.AlignmentError,)
    return _make_report(records_dir, runs_root, out_dir, paper_dir or PAPER_DIR, tables_dir, bench, random_knn,
                        align_images, draw_alignment=draw, has_alignment_maps=has_alignment_maps,
                        alignment_errors=errors or (), variants=variants(), cost_pairs=cost_pairs())


@cli_entry("make_report")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m tools.make_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", default=None, type=PathArg("dir"), help="records folder (default results/records or "
                                                   "$LEWEL_RESULTS_DIR/records)")
    p.add_argument("--runs", default=None, type=PathArg("dir"), help="runs folder (default runs/ or $LEWEL_RUNS_DIR)")
    p.add_argument("--tables", default=None, type=PathArg("dir"), help="a folder make tables wrote (default: regenerate the tables "
                                                  "from --records into a temporary folder)")
    p.add_argument("--paper", default=None, type=PathArg("dir"), help="paper data folder (default results/paper)")
    p.add_argument("--out", default=str(REPORT_DIR), type=PathArg("out_dir"), help="output folder (default results/report)")
    p.add_argument("--bench", default=None, type=PathArg("file"), help="a benchmark's JSON file of cost ratios to show")
    p.add_argument("--random-knn", type=Number(float, 0, 100), default=None, metavar="VALUE",
                   help="random-init kNN top-1 for runs that no record (eval knn, method random, same data) gives one")
    p.add_argument("--no-align", action="store_true", help="leave out the alignment maps (they load each checkpoint)")
    p.add_argument("--align-images", type=COUNT, default=4, help="images per alignment figure (default 4)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        index = make_report(Path(args.records) if args.records else default_records_dir(),
                            Path(args.runs) if args.runs else runs_dir(), Path(args.out),
                            Path(args.tables) if args.tables else None, Path(args.paper) if args.paper else None,
                            Path(args.bench) if args.bench else None, args.random_knn, not args.no_align,
                            args.align_images)
    except ReportError as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
