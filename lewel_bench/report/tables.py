"""The tables on the page: regenerated from the records, or read from a folder ``make tables`` wrote."""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tables as T
from .base import SUFFIXES, ReportError, _na


@dataclass
class TableView:
    name: str
    title: str
    df: pd.DataFrame
    value_cols: list[str]
    labels: dict[str, str]
    compare: dict[str, bool] = field(default_factory=dict)   # False: the paper's value is not comparable (no Δ)


def load_tables(records_dir: Path, paper_dir: Path, tables_dir: Path | None,
                variants: Mapping[str, str] | None = None) -> tuple[list[TableView], pd.DataFrame, pd.DataFrame, str]:
    """(tables, unmatched, other results, where they came from): regenerated from the records into a temporary
    folder, or read from ``tables_dir`` (what ``make tables`` wrote)."""
    try:
        specs = T.table_specs(paper_dir)
        if tables_dir is None:
            with tempfile.TemporaryDirectory(prefix="report-tables-") as tmp:
                T.make_tables(records_dir, paper_dir, Path(tmp), variants)
                views, um, other = read_tables(Path(tmp), specs)
            return views, um, other, f"regenerated from {records_dir}"
    except T.PaperFileError as e:
        raise ReportError(str(e)) from None
    if not tables_dir.is_dir():
        raise ReportError(f"{tables_dir}: no such tables folder (run make tables, or leave out --tables)")
    views, um, other = read_tables(tables_dir, specs)
    return views, um, other, f"read from {tables_dir}"


def read_csv(p: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(p, dtype=object, keep_default_na=False, na_values=[""]).astype(object)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ReportError(f"{p}: not a readable table ({str(e).splitlines()[0]})") from None


def read_tables(d: Path, specs: list[T.TableSpec]) -> tuple[list[TableView], pd.DataFrame, pd.DataFrame]:
    """The table CSVs of the declared tables found in ``d``, its unmatched and other results."""
    views = []
    for spec in specs:
        p = d / f"{spec.name}.csv"
        if not p.is_file():
            continue
        df = read_csv(p)
        value_cols = list(spec.cells) + list(spec.extra_epoch_cells)
        missing = [f"{c}{s}" for c in value_cols for s in SUFFIXES if f"{c}{s}" not in df.columns]
        missing += [c for c in ("dataset", "data", "weights") if c not in df.columns]
        if missing:
            raise ReportError(f"{p}: missing columns {', '.join(missing[:6])} (not written by make tables?)")
        for c in df.columns:
            if c.endswith((".paper", ".ours", ".std", ".diff", ".n")):
                df[c] = [None if _na(v) else _float(v, p, c) for v in df[c]]
        cells = {**spec.cells, **spec.extra_epoch_cells}
        labels = {c: cell.label or c for c, cell in cells.items()}
        compare = {c: bool(getattr(cell, "compare", True)) for c, cell in cells.items()}
        views.append(TableView(spec.name, spec.title, df, value_cols, labels, compare))
    um = read_csv(d / "unmatched.csv") if (d / "unmatched.csv").is_file() else pd.DataFrame(columns=["file", "reason"])
    other = read_csv(d / "other_results.csv") if (d / "other_results.csv").is_file() else pd.DataFrame()
    return views, um, other


def _float(v: Any, p: Path, col: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ReportError(f"{p}: column {col}: {v!r} is not a number") from None

