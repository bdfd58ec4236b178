"""Cost ratios on the page: a benchmark's JSON file, and the papers' time-per-epoch ratios of the declared pairs."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .. import tables as T
from .base import ReportError, _na, _slug, esc, read_json
from .render import render_simple

#: the metric of a paper table's time-per-epoch column (records of eval ``pretrain``)
TIME_METRIC = "time_per_epoch_s"


def load_bench(path: Path) -> dict:
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object (e.g. {{\"setup\": ..., \"ratios\": [{{...}}]}})")
    return doc


def paper_time_ratios(paper_dir: Path, pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, float], str]:
    """``{"<method> / <baseline>": ratio}`` of the time per epoch of the declared (method, baseline) pairs in the
    first paper table with a time-per-epoch column, and that table's title."""
    try:
        specs = T.table_specs(paper_dir)
    except T.PaperFileError as e:
        raise ReportError(str(e)) from None
    for spec in specs:
        col = next((c for c, cell in spec.cells.items() if cell.metric == TIME_METRIC), None)
        if col is None or not spec.csv.is_file():
            continue
        try:
            df, _ = T.read_paper_csv(spec.csv)
        except T.PaperFileError as e:
            raise ReportError(str(e)) from None
        t = {str(r["method"]): r[col] for r in df.to_dict("records") if not _na(r[col])}
        return ({f"{a} / {b}": float(t[a]) / float(t[b]) for a, b in pairs if a in t and b in t}, spec.title)
    return {}, ""


def render_cost(bench: dict | None, bench_path: Path | None, paper: dict[str, float], source: str = "") -> str:
    parts = []
    if paper:
        parts.append(f"<p>The paper ({esc(source.split(':')[0])}): " + ", ".join(
            f"<b>{esc(k)}</b> {v:.3f}" for k, v in paper.items()) + " (time per epoch).</p>")
    if bench is None:
        parts.append('<p class="none">No benchmark file given (<code>make report BENCH=file.json</code>, '
                     '<code>--bench</code>): the measured cost ratios are not shown.</p>')
        return "".join(parts)
    parts.append(f"<p>From <code>{esc(str(bench_path))}</code>"
                 + (f": {esc(str(bench['setup']))}" if bench.get("setup") else "") + ".</p>")
    scalars = {k: v for k, v in bench.items() if k != "setup" and not isinstance(v, (list, dict))}
    if scalars:
        parts.append("<ul>" + "".join(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in scalars.items()) + "</ul>")
    for k, v in bench.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            df = pd.DataFrame(v).astype(object)
            if k == "ratios" and "ratio" in df.columns and paper:
                df["paper"] = [paper.get(str(x).replace(" ", "").replace("/", " / "), None) for x in df["ratio"]]
            parts.append(f"<h3>{esc(str(k))}</h3>" + render_simple(df, "bench", table_id=f"bench-{_slug(k)}", nd=3))
        elif isinstance(v, dict):
            df = pd.DataFrame([{"key": a, "value": b} for a, b in v.items()]).astype(object)
            parts.append(f"<h3>{esc(str(k))}</h3>" + render_simple(df, "bench", table_id=f"bench-{_slug(k)}"))
    return "".join(parts)

