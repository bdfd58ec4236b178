"""The papers' numbers: typed CSV files (``#`` comment lines, one ``# schema: col:type,...`` line, a header)."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LewelError

TYPES: dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "float": float,
    "bool": lambda s: {"true": True, "false": False}[s.strip().lower()],
}


class PaperFileError(LewelError, ValueError):
    """A paper file (CSV or table declaration) is malformed; the message names the file, line / table and column."""


def read_schema(path: Path, lines: list[str]) -> dict[str, str]:
    """The ``# schema: col:type,...`` line of a paper CSV as ``{column: type}``."""
    schema: dict[str, str] = {}
    for line in lines:
        s = line[1:].strip() if line.startswith("#") else ""
        if not s.startswith("schema:"):
            continue
        for item in s[len("schema:"):].split(","):
            name, _, typ = item.strip().partition(":")
            if typ not in TYPES:
                raise PaperFileError(f"{path}: schema column {name!r} has unknown type {typ!r} "
                                     f"(known: {sorted(TYPES)})")
            schema[name] = typ
    if not schema:
        raise PaperFileError(f"{path}: no '# schema: col:type,...' line")
    return schema


def typed_cell(path: Path, row: int, col: str, typ: str, cell: str) -> Any:
    """One cell converted to its declared type; an empty cell is ``None`` (the paper's "-")."""
    if cell.strip() == "":
        return None
    try:
        return TYPES[typ](cell.strip())
    except (ValueError, KeyError):
        raise PaperFileError(f"{path}: data row {row}, column {col!r}: {cell!r} is not a {typ}") from None


def read_paper_csv(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a typed paper CSV (see the module docstring): (its rows, its schema)."""
    text = Path(path).read_text()
    lines = text.splitlines()
    schema = read_schema(path, lines)
    body = [ln for ln in lines if not ln.startswith("#") and ln.strip()]
    rows = list(csv.reader(io.StringIO("\n".join(body))))
    if not rows:
        raise PaperFileError(f"{path}: no header line after the comments")
    header, data = rows[0], rows[1:]
    if header != list(schema):
        raise PaperFileError(f"{path}: header {header} does not match the schema {list(schema)}")
    out = []
    for i, r in enumerate(data, start=1):
        if len(r) != len(header):
            raise PaperFileError(f"{path}: data row {i} has {len(r)} cells, expected {len(header)}")
        out.append({col: typed_cell(path, i, col, schema[col], cell) for col, cell in zip(header, r)})
    return pd.DataFrame(out, columns=header).astype(object), schema
