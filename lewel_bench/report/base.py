"""What the report's parts share: its error, HTML escaping and the cell formatters."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..errors import LewelError

#: the value-column suffixes of a table ``make tables`` wrote
SUFFIXES = (".paper", ".ours", ".std", ".n", ".diff")


class ReportError(LewelError, ValueError):
    """Bad input: the message names the file and what is wrong with it."""


esc = html.escape


def _na(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


def _num(x: Any, nd: int = 1) -> str:
    if _na(x):
        return "–"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f"{float(x):.{nd}f}"
    return esc(str(x))


def _plain(x: Any) -> str:
    """An identifying cell (epochs 100.0 -> 100)."""
    if _na(x):
        return ""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:120] or "x"



def read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{p}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def short_commit(c: Any) -> str:
    c = "" if _na(c) else str(c)
    if not c or c == "unknown":
        return "unknown"
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")
