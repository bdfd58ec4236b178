"""Loss, learning-rate, EMA-momentum and kNN accuracy curves from pretraining metrics logs.

    python -m tools.plot_curves runs/lewel_b/metrics.jsonl results/figures/lewel_b_curves.png
    python -m tools.plot_curves runs/byol/metrics.jsonl runs/lewel_b/metrics.jsonl results/figures/byol_vs_lewel_b.png
    python -m tools.plot_curves runs/byol/metrics.jsonl runs/lewel_b/metrics.jsonl cmp.png --rows
    python -m tools.plot_curves runs/lewel_m/metrics.jsonl fig.png --random-knn 48.0

Panels, axes and the random-init kNN reference: :mod:`lewel_bench.report.curves`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lewel_bench.args import ArgumentParser, Number, PathArg, check_path
from lewel_bench.report.curves import (  # noqa: F401
    KNN_MIN_SPAN,
    Curve,
    MetricsError,
    curves_for,
    figure,
    knn_ylim,
    loss_terms,
    plot,
    random_knn_reference,
    read_metrics,
    run_info,
    save_png,
    shared_limits,
)
from lewel_bench.stage import cli_entry

log = logging.getLogger("tools.plot_curves")


@cli_entry("plot_curves")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.plot_curves", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="metrics.jsonl file(s) followed by the output PNG")
    p.add_argument("--labels", nargs="*", default=None, help="legend label per log (default: the run folder)")
    p.add_argument("--rows", action="store_true", help="one row per log (columns share their axes) instead of "
                                                       "overlaying the logs")
    p.add_argument("--random-knn", type=Number(float, 0, 100), nargs="+", default=None, metavar="VALUE",
                   help="random-init kNN top-1 on the runs' data (one value, or one per log) for runs that no "
                        "record gives one (records of eval knn, method random, same data fingerprint come first)")
    p.add_argument("--records", default=None, type=PathArg("dir"), help="records folder for the random-init reference "
                                                   "(default results/records or $LEWEL_RESULTS_DIR/records)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args.paths) < 2 or not args.paths[-1].endswith(".png"):
        p.error("give one or more metrics.jsonl files and then the output .png")
    logs, out = args.paths[:-1], args.paths[-1]
    for i, log_path in enumerate(logs):
        check_path(log_path, "file", f"metrics log {i + 1}")
    check_path(out, "out_file", "output PNG")
    if args.labels and len(args.labels) != len(logs):
        p.error(f"--labels: {len(args.labels)} labels for {len(logs)} logs")
    ref = args.random_knn
    if ref is not None and len(ref) not in (1, len(logs)):
        p.error(f"--random-knn: {len(ref)} values for {len(logs)} logs (give one, or one per log)")
    ref = ref[0] if ref is not None and len(ref) == 1 else ref
    from lewel_bench.records import default_records_dir, load_records

    rdir = Path(args.records) if args.records else default_records_dir()
    records, problems = load_records(rdir) if rdir.is_dir() else ([], [])
    for prob in problems:
        log.warning("malformed record skipped for the random-init reference: %s", prob)
    try:
        plot(logs, out, args.labels, ref, records, layout="rows" if args.rows else "overlay")
    except MetricsError as e:
        log.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
