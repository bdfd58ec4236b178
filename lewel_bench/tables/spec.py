"""What each paper table is: declared as data in a ``tables.yaml`` beside the papers' CSV files.

``results/paper/tables.yaml`` declares the suite's tables (LEWEL, CGH, MCL); an evaluation may ship its own
(``Evaluation.tables``: a ``tables.yaml`` with its CSVs beside it). Each entry::

    - name: mcl_table13_linear           # the paper's numbers: <name>.csv beside this file; output <name>.csv
      title: "MCL Table 13 (appendix): ..."
      paper: MCL                          # whose table; `source` tag of its own rows: `own` (default the name
      own: mcl                            #   lower-cased)
      arch: resnet50                      # the paper's backbone: a record of another arch fills no paper row
      key: method                         # method: rows by (method, epochs[, row_attrs]); exp: by pretrain_exp
      row_attrs: [epochs]                 # row columns besides label / method / source that identify a row
      allow_overrides: []                 # key=value overrides that are the paper's settings (any other: own row)
      cells:                              # value column -> the records that fill it
        ep100_top1: {eval: linear, metric: top1, protocols: [mcl_sgd, mini], epochs: 100, label: 100ep Acc@1}
      extra_epoch_cells: {}               # values at other epochs than the fixed-epoch columns (Table 1)
      sweep_column: beta                  # key exp: the paper column holding a sweep point's value (names its run)

A cell's ``protocols`` may hold ``{<row column>}`` (``{arch}_1x``: the row's arch); null = any protocol of the
eval. ``compare: false``: no ours - paper (seconds on other hardware); ``decimals``: Markdown digits. Evals,
metrics and protocols must be declared (:mod:`lewel_bench.declare`); a wrong entry is a :class:`PaperFileError`
naming the file, the table and the key.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..declare import Evaluation, evaluations
from .paper import PaperFileError

TABLES_FILE = "tables.yaml"


@dataclass(frozen=True)
class Cell:
    """Where a value column's numbers come from: eval, protocols (``{arch}`` filled from the row), metric."""

    eval: str
    metric: str
    protocols: tuple[str, ...] | None = None     # None = any known protocol of the eval
    epochs: int | None = None                    # fixed epochs (Table 1); None = the row's epochs column
    label: str = ""
    compare: bool = True                         # False: no ours - paper (e.g. seconds on other hardware)
    decimals: int = 1                            # Markdown digits (a time ratio: 2)


@dataclass(frozen=True)
class TableSpec:
    name: str                 # output name and <folder>/<name>.csv
    title: str
    cells: dict[str, Cell]    # paper value column -> where our numbers come from
    key: str = "method"       # "method": match (method, epochs[, arch]); "exp": match pretrain_exp
    row_attrs: tuple[str, ...] = ()   # row columns (besides label/method/source) that identify the row
    extra_epoch_cells: dict[str, Cell] = field(default_factory=dict)  # Table 1: values at other epochs
    paper: str = ""           # whose table (LEWEL, CGH, MCL, ...)
    own: str = ""             # the `source` tag of the paper's own rows
    arch: str | None = None   # the paper's backbone (None: any)
    allow_overrides: tuple[str, ...] = ()   # key=value overrides that are the paper's own settings
    sweep_column: str = ""                  # ablations: the paper column with a sweep point's value
    folder: Path | None = None              # where <name>.csv is

    @property
    def csv(self) -> Path:
        return Path(self.folder or ".") / f"{self.name}.csv"

    @property
    def all_cells(self) -> dict[str, Cell]:
        return {**self.cells, **self.extra_epoch_cells}


_TABLE_KEYS = {"name", "title", "paper", "own", "arch", "key", "row_attrs", "allow_overrides", "cells",
               "extra_epoch_cells", "sweep_column"}
_CELL_KEYS = {"eval", "metric", "protocols", "epochs", "label", "compare", "decimals"}


def _cell(doc: Any, where: str, evals: Mapping[str, Evaluation]) -> Cell:
    if not isinstance(doc, Mapping) or not {"eval", "metric"} <= set(doc) or set(doc) - _CELL_KEYS:
        raise PaperFileError(f"{where}: expected {{eval, metric[, protocols, epochs, label, compare, decimals]}}, "
                             f"got {doc!r}")
    ev = evals.get(str(doc["eval"]))
    if ev is None:
        raise PaperFileError(f"{where}: eval {doc['eval']!r} is not declared (known: {', '.join(sorted(evals))})")
    if doc["metric"] not in ev.metrics:
        raise PaperFileError(f"{where}: {ev.name} has no metric {doc['metric']!r} (its metrics: "
                             f"{', '.join(ev.metrics)})")
    protos = doc.get("protocols")
    if protos is not None:
        if not isinstance(protos, list) or not all(isinstance(p, str) for p in protos):
            raise PaperFileError(f"{where}.protocols: expected a list of protocol names, got {protos!r}")
        bad = [p for p in protos if "{" not in p and p not in ev.protocols]
        if bad:
            raise PaperFileError(f"{where}.protocols: {', '.join(bad)} not protocols of {ev.name} "
                                 f"({', '.join(ev.protocols)})")
        protos = tuple(protos)
    epochs = doc.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool)):
        raise PaperFileError(f"{where}.epochs: expected an integer, got {epochs!r}")
    return Cell(eval=ev.name, metric=str(doc["metric"]), protocols=protos, epochs=epochs,
                label=str(doc.get("label") or ""), compare=bool(doc.get("compare", True)),
                decimals=int(doc.get("decimals", 1)))


def _cells(doc: Any, where: str, evals: Mapping[str, Evaluation]) -> dict[str, Cell]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise PaperFileError(f"{where}: expected a mapping of value columns to cells, got {doc!r}")
    return {str(col): _cell(c, f"{where}.{col}", evals) for col, c in doc.items()}


def table_from(doc: Any, where: str, folder: Path, evals: Mapping[str, Evaluation] | None = None) -> TableSpec:
    """One table declaration (a mapping of ``tables.yaml``) as a :class:`TableSpec`."""
    evals = evaluations() if evals is None else evals
    if not isinstance(doc, Mapping) or "name" not in doc or "cells" not in doc:
        raise PaperFileError(f"{where}: a table needs at least name and cells, got {doc!r}")
    name = str(doc["name"])
    where = f"{where} ({name})"
    unknown = sorted(set(doc) - _TABLE_KEYS)
    if unknown:
        raise PaperFileError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TABLE_KEYS))})")
    key = doc.get("key", "method")
    if key not in ("method", "exp"):
        raise PaperFileError(f"{where}.key: method or exp, got {key!r}")
    lists = {}
    for k in ("row_attrs", "allow_overrides"):
        v = doc.get(k) or []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PaperFileError(f"{where}.{k}: expected a list of strings, got {v!r}")
        lists[k] = tuple(v)
    paper = str(doc.get("paper") or "")
    return TableSpec(name=name, title=str(doc.get("title") or name),
                     cells=_cells(doc["cells"], f"{where}.cells", evals),
                     key=key, row_attrs=lists["row_attrs"],
                     extra_epoch_cells=_cells(doc.get("extra_epoch_cells"), f"{where}.extra_epoch_cells", evals),
                     paper=paper, own=str(doc.get("own") or paper.lower()), arch=doc.get("arch"),
                     allow_overrides=lists["allow_overrides"], sweep_column=str(doc.get("sweep_column") or ""),
                     folder=folder)


def load_specs(path: Path, evals: Mapping[str, Evaluation] | None = None) -> list[TableSpec]:
    """The tables a ``tables.yaml`` declares, in its order."""
    from ..config import ConfigError, load_yaml_text

    path = Path(path)
    try:
        doc = load_yaml_text(path.read_text(encoding="utf-8"), str(path))  # line numbers, a key given twice refused
    except OSError as e:
        raise PaperFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ConfigError as e:
        raise PaperFileError(str(e)) from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tables"), list):
        raise PaperFileError(f"{path}: expected a mapping with a 'tables' list")
    return [table_from(t, f"{path}: tables[{i}]", path.parent, evals) for i, t in enumerate(doc["tables"])]


def table_files(paper_dir: Path, evals: Mapping[str, Evaluation] | None = None) -> list[Path]:
    """The table declarations in use: ``<paper_dir>/tables.yaml`` and those the evaluations ship."""
    evals = evaluations() if evals is None else evals
    files = [Path(paper_dir) / TABLES_FILE]
    files += [Path(ev.tables) for ev in evals.values() if ev.tables]
    return [f for f in files if f.is_file()]


def table_specs(paper_dir: Path, evals: Mapping[str, Evaluation] | None = None) -> list[TableSpec]:
    """Every declared table (the suite's first, then the evaluations'); a name declared twice is an error."""
    out: list[TableSpec] = []
    seen: dict[str, Path] = {}
    for f in table_files(paper_dir, evals):
        for spec in load_specs(f, evals):
            if spec.name in seen:
                raise PaperFileError(f"{f}: table {spec.name!r} is also declared in {seen[spec.name]}")
            seen[spec.name] = f
            out.append(spec)
    return out


@dataclass(frozen=True)
class AblationRun:
    """A pretraining run an ablation table (key ``exp``) has a row for: its folder name, its experiment, and for a
    point of a pretraining sweep the ``key=value`` override (``--sweep key``)."""

    folder: str
    exp: str
    sweep: str = ""


def ablation_runs(specs: Iterable[TableSpec]) -> list[AblationRun]:
    """Every run of the ablation tables, in their order (a sweep point's folder: ``<exp>-<column><value>``, the
    value as the paper file's column ``sweep_column`` gives it)."""
    from .paper import read_paper_csv

    out: dict[str, AblationRun] = {}
    for s in specs:
        if s.key != "exp" or not s.csv.is_file():
            continue
        for row in read_paper_csv(s.csv)[0].to_dict("records"):
            sweep = row.get("pretrain_sweep")
            if not isinstance(sweep, str) or not sweep:   # an empty cell: the experiment's own run
                out.setdefault(row["exp"], AblationRun(row["exp"], row["exp"]))
                continue
            if not s.sweep_column or s.sweep_column not in row:
                raise PaperFileError(f"{s.csv}: a row of sweep {sweep!r} but the table declares no sweep_column "
                                     f"(the column with the swept value)")
            key, value = str(sweep).split("=", 1)[0], row[s.sweep_column]
            folder = f"{row['exp']}-{s.sweep_column}{value}"
            out.setdefault(folder, AblationRun(folder, row["exp"], f"{key}={value}"))
    return list(out.values())


def tables_fed_by(eval_name: str, specs: Iterable[TableSpec]) -> list[str]:
    """The tables an evaluation feeds: those with a cell that names it."""
    return [s.name for s in specs if any(c.eval == eval_name for c in s.all_cells.values())]
