"""One static page of everything the benchmark produced (``make report``; ``docs/report.md``).

The page has every regenerated paper table (the paper's value, ours as mean ± std with n, and ours - paper
coloured by sign and size; the dataset identity and the weights the evaluation loaded), the unplaced records, a
run index (pretraining runs from ``<runs>/*/identity.json`` + ``config.yaml`` + ``metrics.jsonl``, evaluation
records with their metrics, data fingerprint and commit; each links a copy of its config / record), per-run
curves on shared axes (loss terms, lr, EMA momentum, kNN with the random-init reference), the alignment maps of
every run whose method has them, and cost ratios when a benchmark file is given. It is self-contained: inline
CSS, PNG files under ``img/`` and copies of the linked files under ``files/`` (relative links), nothing fetched
from the network; it reads the same without JavaScript (the script only adds column sorting to the index tables).

Parts: :mod:`.runs` (the run folders), :mod:`.tables` (the tables, regenerated or read), :mod:`.curves` and
:mod:`.figures` (figures; the alignment maps are drawn by a function the caller passes), :mod:`.cost`,
:mod:`.render` (HTML), :mod:`.output` (atomic writes; files of an earlier page that this one did not write are
removed). Bad input is a :class:`ReportError` naming the file.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..records import load_records
from .base import ReportError, _slug
from .cost import load_bench, paper_time_ratios, render_cost
from .figures import make_alignment, make_curves
from .output import Output
from .render import delta_style, render_page
from .runs import find_runs, records_of
from .tables import load_tables

__all__ = ["ReportError", "delta_style", "make_report"]

log = logging.getLogger(__name__)


def own_sources(paper_dir: Path) -> dict[str, str]:
    """Each paper's own ``source`` tag -> the paper (from the table declarations)."""
    from ..tables import table_specs

    return {s.own: s.paper for s in table_specs(paper_dir) if s.own and s.paper}


def make_report(records_dir: Path, runs_root: Path, out_dir: Path, paper_dir: Path, tables_dir: Path | None = None,
                bench: Path | None = None, random_knn: float | None = None, align_images: int = 4, *,
                draw_alignment: Callable[..., Any] | None = None,
                has_alignment_maps: Callable[[Mapping[str, Any]], bool] | None = None,
                alignment_errors: tuple[type[BaseException], ...] = (), variants: Mapping[str, str] | None = None,
                cost_pairs: Iterable[tuple[str, str]] = ()) -> Path:
    """Write ``out_dir/index.html`` and its files; returns the page's path. Without ``draw_alignment`` the
    alignment maps are left out; ``variants`` / ``cost_pairs``: the methods' declarations (see
    :func:`lewel_bench.tables.make_tables`, :func:`.cost.paper_time_ratios`)."""
    t0 = time.perf_counter()
    bench_doc = load_bench(bench) if bench else None
    records, problems = load_records(records_dir) if records_dir.is_dir() else ([], [])
    for p in problems:
        log.warning("malformed record: %s", p)
    tables, unmatched, other, tables_src = load_tables(records_dir, paper_dir, tables_dir, variants)
    runs = find_runs(runs_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Output(out_dir)
    links: dict[str, str] = {}
    for r in records:
        p = Path(r["_path"])
        links[str(p)] = out.copy(p, f"files/records/{_slug(p.name)}")
    for r in runs:
        r.records = records_of(r, records)
        if (r.path / "config.yaml").is_file():
            r.config_link = out.copy(r.path / "config.yaml", f"files/runs/{_slug(r.name)}/config.yaml")
    t_data = time.perf_counter()
    curves_html = make_curves(runs, records, out, random_knn)
    t_curves = time.perf_counter()
    align_html = (make_alignment(runs, out, align_images, draw_alignment, has_alignment_maps or (lambda cfg: False),
                                 alignment_errors) if draw_alignment else
                  '<p class="none">Left out (<code>--no-align</code>).</p>')
    t_align = time.perf_counter()
    ratios, source = paper_time_ratios(paper_dir, cost_pairs)
    page = render_page(tables=tables, unmatched=unmatched, other=other, tables_src=tables_src, runs=runs,
                       records=records, problems=problems, links=links, curves_html=curves_html,
                       align_html=align_html, cost_html=render_cost(bench_doc, bench, ratios, source),
                       sources={"records": str(records_dir), "runs": str(runs_root), "paper": str(paper_dir)},
                       own_sources=own_sources(paper_dir))
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    out.written.add(index.resolve())
    stale = out.remove_stale()
    log.info("report: %d tables, %d records, %d runs, %d files (%d stale removed) in %.1fs (data %.1fs, curves %.1fs, "
             "alignment %.1fs)", len(tables), len(records), len(runs), len(out.written), stale,
             time.perf_counter() - t0, t_data - t0, t_curves - t_data, t_align - t_curves)
    return index
