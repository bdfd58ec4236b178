"""The tables in Markdown (``results/tables/README.md``): paper value | ours (mean ± std, n) | diff per column."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .build import meta_column
from .spec import TableSpec


def fmt(x: Any, nd: int = 1) -> str:
    """A value cell: '-' for none, ``nd`` decimals for a float."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def fmt_id(x: Any) -> str:
    """An identifying cell: a whole number read as a float (epochs of a column with gaps) without decimals."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else fmt(x)


def _count(n: Any) -> int:
    return 0 if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)


def ours_cell(r: pd.Series, c: str, nd: int) -> str:
    """``mean ± std (n=N)`` (the mean alone for one run)."""
    n = _count(r.get(f"{c}.n"))
    ours = fmt(r[f"{c}.ours"], nd)
    return f"{ours} ± {fmt(r[f'{c}.std'], nd)} (n={n})" if n > 1 else ours


def diff_cell(d: Any, nd: int) -> str:
    return "-" if d is None or (isinstance(d, float) and math.isnan(d)) else f"{d:+.{nd}f}"


def to_markdown(spec: TableSpec, df: pd.DataFrame, paper_cols: list[str]) -> str:
    """Paper value | ours (mean ± std, n) | diff, one column group per paper column (a column group shows "ours"
    and "Δ" only where we have numbers)."""
    value_cols = list(spec.cells) + list(spec.extra_epoch_cells)
    id_cols = [c for c in paper_cols if c not in spec.cells and c not in ("method", "exp")]
    cells = spec.all_cells
    labels = {c: cell.label or c for c, cell in cells.items()}
    nd = {c: cell.decimals for c, cell in cells.items()}
    weights = meta_column("weights", paper_cols)
    has_ours = {c: bool(df[f"{c}.n"].fillna(0).astype(int).sum()) for c in value_cols}
    has_paper = {c: bool(df[f"{c}.paper"].notna().any()) for c in value_cols}
    head = id_cols + ["dataset"]
    for c in value_cols:
        head += [f"{labels[c]} paper"] if has_paper[c] else []
        head += [f"{labels[c]} ours", f"{labels[c]} Δ"] if has_ours[c] else []
    if any(has_ours.values()):
        head.append("weights")
    lines = [f"### {spec.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        row = [fmt_id(r.get(c)) for c in id_cols] + [str(r["dataset"])]
        for c in value_cols:
            if has_paper[c]:
                row.append(fmt(r[f"{c}.paper"], nd[c]))
            if has_ours[c]:
                row += [ours_cell(r, c, nd[c]), diff_cell(r[f"{c}.diff"], nd[c])]
        if any(has_ours.values()):
            row.append(fmt(r.get(weights)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def frame_markdown(df: pd.DataFrame) -> str:
    """A plain DataFrame as Markdown (``tabulate`` when installed, else aligned text)."""
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return df.to_string(index=False)
    return df.to_markdown(index=False)
