"""One paper table from the runs: the paper's rows with our numbers beside them, then rows of ours.

Which paper row gets our numbers: per identity (method and the table's row columns; ablations: the experiment
and its sweep point) the first row that is not ``cited``, else the first. A paper row takes runs of its eval,
metric and protocol, on real data (never ``mini``), of the row's method and epochs (a row without epochs: runs
without pretraining), with the paper's settings (:func:`paper_settings`: the table's backbone, no overrides that
change the result but the paper's own, a finished pretraining). Of those, one group (:func:`largest_group`).
Everything of the table's evals that no paper row took becomes a row of ours, one per pretraining recipe and
settings (:func:`extra_rows`), labelled with what sets it apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..declare import known_protocols, primary_metrics
from .runs import RECORD_ATTRS, Run, aggregate
from .spec import Cell, TableSpec

NO_CITED = "cited"
#: the trailing columns of every table (``run_<name>`` where the paper has a column of that name)
META = ("data", "group", "weights")


@dataclass
class Scope:
    """The runs a table may take and what it has used so far."""
    spec: TableSpec
    runs: list[Run]
    in_scope: list[tuple[int, Run]]
    row_attrs: list[str]                      # RECORD_ATTRS the paper table has a column for
    used: set[int] = field(default_factory=set)
    protocols: dict[str, set[str]] = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)


def missing(v: Any) -> bool:
    """An empty paper cell (``None``, or NaN once pandas has read the column)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def scope_of(spec: TableSpec, paper: pd.DataFrame, runs: list[Run]) -> Scope:
    """Ablation tables (key ``exp``) take the ablation runs, the others the rest; a table without a record
    attribute's column takes only runs with its default value (e.g. GAP linear probes)."""
    row_attrs = [a for a in RECORD_ATTRS if a in paper.columns]
    fixed = {a: d for a, (_, d) in RECORD_ATTRS.items() if a not in paper.columns}
    in_scope = [(i, r) for i, r in enumerate(runs) if r.ablation == (spec.key == "exp")
                and all(r.attrs.get(a, d) == d for a, d in fixed.items())]
    return Scope(spec, runs, in_scope, row_attrs, protocols=known_protocols(), primary=primary_metrics())


def sweep_of(row: dict) -> str:
    """A Fig. 3 row's pretraining sweep point ('' for the others)."""
    return row.get("pretrain_sweep") or ""


def attrs_of(scope: Scope, row: dict) -> dict[str, str]:
    """The row's values of the record attributes (an empty cell: the attribute's default)."""
    out = {}
    for a in scope.row_attrs:
        v = row.get(a)
        out[a] = RECORD_ATTRS[a][1] if missing(v) or v == "" else str(v)
    return out


def cell_protocols(scope: Scope, cell: Cell, row: dict) -> set[str]:
    """The protocols a cell takes for a row (``{arch}_1x`` filled from the row; None: every known one)."""
    if cell.protocols is None:
        return scope.protocols.get(cell.eval, set())
    return {p.format(**{k: v for k, v in row.items() if v is not None}) for p in cell.protocols}


def paper_settings(spec: TableSpec, r: Run) -> str:
    """'' when the run is in the paper's settings, else what sets it apart (the label of its own row): another
    backbone, overrides that change the result (other than the table's own), an unfinished pretraining, a
    row the user named."""
    why = []
    if r.complete is False:
        why.append(f"unfinished pretraining{f' ({r.iters} it)' if r.iters is not None else ''}")
    if spec.arch and r.arch and r.arch != spec.arch:
        why.append(r.arch)
    other = [o for o in r.changed if o not in spec.allow_overrides]
    if other:
        shown = " ".join(other)
        why.append(f"with {shown if len(shown) <= 60 else shown[:57] + '...'}")
    return ", ".join(why)


def matching(scope: Scope, cell: Cell, row: dict, epochs: int | None | str) -> list[int]:
    """Runs that may fill a paper row's cell (real data, the paper's settings; see the module docstring)."""
    protos = cell_protocols(scope, cell, row)
    want = attrs_of(scope, row)
    out = []
    for i, r in scope.in_scope:
        if r.eval != cell.eval or r.metric != cell.metric or r.protocol not in protos or r.dataset == "mini":
            continue
        if any(r.attrs.get(a) != v for a, v in want.items()) or paper_settings(scope.spec, r):
            continue
        if scope.spec.key == "exp":
            if r.exp != row["exp"] or r.pretrain_sweep != sweep_of(row) or not r.in100:
                continue
        else:
            if r.method != row["method"]:
                continue
            # a row without epochs (Rand Init's "-") takes the runs without pretraining (random init: 0)
            if epochs != "any" and r.epochs != epochs and not (missing(epochs) and r.epochs == 0):
                continue
        out.append(i)
    return out


def primary_mean(scope: Scope, group: str, r: Run) -> float:
    """The mean of the eval's primary metric over a group's runs (to pick a sweep's best point)."""
    vals = [x.value for x in scope.runs if x.group == group and x.eval == r.eval and x.protocol == r.protocol
            and x.metric == scope.primary.get(r.eval, r.metric)]
    return sum(vals) / len(vals) if vals else float("-inf")


def largest_group(scope: Scope, idx: list[int]) -> list[int]:
    """The runs of one group, never a mix: of the points of a sweep, the best by the eval's primary metric
    (the other points count as used); then the group with the most runs (ties: the smallest id)."""
    by: dict[str, list[int]] = {}
    for i in idx:
        by.setdefault(scope.runs[i].group, []).append(i)
    sweeps: dict[str, list[str]] = {}
    for g, ids in by.items():
        if scope.runs[ids[0]].sweep_group:
            sweeps.setdefault(scope.runs[ids[0]].sweep_group, []).append(g)
    for points in sweeps.values():
        best = max(points, key=lambda g: (primary_mean(scope, g, scope.runs[by[g][0]]), g))
        for g in points:
            if g != best:
                scope.used.update(by.pop(g))
    return min(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))[1] if by else []


def fill(scope: Scope, out_row: dict, col: str, paper_val: Any, idx: list[int], compare: bool) -> None:
    """Write one value column of a row (paper, ours, std, n, diff) and collect the runs' metadata."""
    runs = scope.runs
    groups = {runs[i].group for i in idx}
    assert len(groups) <= 1, f"{scope.spec.name}: runs of {len(groups)} groups in one cell"
    for i in idx:
        out_row.setdefault("_data", set()).add(runs[i].data)
        out_row.setdefault("_group", set()).add(runs[i].group)
        out_row.setdefault("_weights", set()).add(runs[i].weights)
        if runs[i].hardware:
            out_row.setdefault("_hardware", set()).add(runs[i].hardware)
        if runs[i].sweep:
            out_row.setdefault("_sweep", set()).add(f"{runs[i].protocol}: {runs[i].sweep}")
        if runs[i].row:
            out_row.setdefault("_notes", set()).add(f"row {runs[i].row} (--row)")
    mean, std, n = aggregate([runs[i].value for i in idx])
    out_row[f"{col}.paper"] = paper_val
    out_row[f"{col}.ours"] = _round(mean)
    out_row[f"{col}.std"] = _round(std)
    out_row[f"{col}.n"] = n
    comparable = compare and mean is not None and paper_val is not None
    out_row[f"{col}.diff"] = _round(mean - paper_val) if comparable else None
    scope.used.update(idx)


def owner_rows(spec: TableSpec, rows: list[dict]) -> set[int]:
    """The paper rows that take our numbers: per identity the first non-cited row, else the first."""
    owner: dict[tuple, int] = {}
    for j, row in enumerate(rows):
        ident = ((row["exp"], sweep_of(row)) if spec.key == "exp"
                 else (row["method"],) + tuple(row.get(a) for a in spec.row_attrs))
        if ident not in owner or (rows[owner[ident]]["source"] == NO_CITED and row["source"] != NO_CITED):
            owner[ident] = j
    return set(owner.values())


def paper_rows(scope: Scope, paper: pd.DataFrame) -> list[dict]:
    """The paper's rows, each value column with our numbers where a group of runs fits it."""
    spec = scope.spec
    rows = paper.to_dict("records")
    id_cols = [c for c in paper.columns if c not in spec.cells]
    owners = owner_rows(spec, rows)
    n_rows_of: dict[Any, int] = {}
    for r in rows:
        n_rows_of[r.get("method")] = n_rows_of.get(r.get("method"), 0) + 1
    out = []
    for j, row in enumerate(rows):
        o = {c: row[c] for c in id_cols}
        o["dataset"] = "paper"
        for col, cell in spec.cells.items():
            idx: list[int] = []
            if j in owners:
                fixed = spec.key == "method" and cell.epochs is not None
                ep: int | None | str = cell.epochs if fixed else row.get("epochs")
                idx = matching(scope, cell, row, ep)
                if (spec.key == "method" and not idx and n_rows_of.get(row["method"]) == 1
                        and (cell.epochs is None or not missing(row[col]))):
                    # a record without pretrain_epochs (e.g. torchvision supervised weights) fills the
                    # method's only row (in a table of fixed-epoch columns: those the paper filled)
                    idx = [i for i in matching(scope, cell, row, "any") if scope.runs[i].epochs is None]
                idx = largest_group(scope, [i for i in idx if scope.runs[i].protocol != "mini"])
            fill(scope, o, col, row[col], idx, compare=cell.compare)
        for col in spec.extra_epoch_cells:
            fill(scope, o, col, None, [], compare=False)
        out.append(o)
    return out


def extra_candidates(scope: Scope, rows: list[dict]) -> dict[tuple, dict]:
    """Runs of the table's evals that no paper row took, by the row of ours they belong to: (method, epochs,
    arch, attributes, dataset, pretraining recipe); ablation tables: only other groups of the paper's own
    experiments (an IN-100 run that fits no row is unmatched). Runs in other settings than the paper's are
    apart by their pretraining recipe (backbone, unfinished) or evaluation group (overrides)."""
    spec = scope.spec
    in_scope = scope.in_scope
    if spec.key == "exp":
        paper_exps = {(r["exp"], sweep_of(r)) for r in rows}
        in_scope = [(i, r) for i, r in in_scope if (r.exp, r.pretrain_sweep) in paper_exps]
    cells = spec.all_cells
    fixed_epochs = {c.epochs for c in spec.cells.values() if c.epochs is not None}
    # an arch taken from the protocol (Table 4: c4 / fpn) must be one of the paper's (a RetinaNet is not)
    paper_archs = {r.get("arch") for r in rows} if "arch" in spec.row_attrs else None
    extra: dict[tuple, dict] = {}
    for i, r in in_scope:
        if i in scope.used:
            continue
        for col, cell in cells.items():
            if r.eval != cell.eval or r.metric != cell.metric:
                continue
            recipe = r.pretrain_group or r.group  # one row per pretraining recipe (records before it: per group)
            attrs = {a: r.attrs.get(a, RECORD_ATTRS[a][1]) for a in scope.row_attrs}
            if spec.key == "exp":
                ident = (r.exp, r.pretrain_sweep, r.dataset, recipe)
                row_ctx = {"exp": r.exp, **({"pretrain_sweep": r.pretrain_sweep} if r.pretrain_sweep else {})}
            else:
                arch = r.protocol.split("_")[0] if "arch" in spec.row_attrs else None
                if paper_archs is not None and arch not in paper_archs:
                    continue
                ident = (r.method, r.epochs, arch, *attrs.values(), r.dataset, recipe)
                row_ctx = {"method": r.method, "epochs": r.epochs, "arch": arch, **attrs}
            if r.protocol not in cell_protocols(scope, cell, row_ctx):
                continue
            if cell.epochs is not None and (r.epochs != cell.epochs or r.dataset == "mini"):
                continue
            if col in spec.extra_epoch_cells and r.epochs in fixed_epochs and r.dataset != "mini":
                continue
            e = extra.setdefault(ident, {"ctx": row_ctx, "dataset": r.dataset, "cols": {}})
            e["cols"].setdefault(col, []).append(i)
    return extra


def split_groups(scope: Scope, extra: dict[tuple, dict]) -> None:
    """A cell holds one group: the largest (the best point of a sweep); the recipe's other evaluation settings
    get a row each (its identity + the evaluation group)."""
    for ident, e in list(extra.items()):
        for col, idx in list(e["cols"].items()):
            chosen = largest_group(scope, idx)
            e["cols"][col] = chosen
            for i in idx:
                if i not in chosen and i not in scope.used:
                    g = scope.runs[i].group
                    o = extra.setdefault(ident + (g,), {"ctx": e["ctx"], "dataset": e["dataset"], "cols": {},
                                                        "eval_group": g})
                    o["cols"].setdefault(col, []).append(i)


def _base(ident: tuple, e: dict) -> tuple:
    """A row's identity without its recipe (and evaluation group): rows that differ only there share a label."""
    return ident[:-2] if e.get("eval_group") else ident[:-1]


def row_notes(scope: Scope, e: dict) -> list[str]:
    """What sets a row of ours apart from the paper's settings (:func:`paper_settings` of its runs) and the
    ``--row`` its runs name."""
    runs = [scope.runs[i] for idx in e["cols"].values() for i in idx]
    notes = sorted({s for r in runs if (s := paper_settings(scope.spec, r))})
    return notes + sorted({f"row {r.row} (--row)" for r in runs if r.row})


def extra_label(scope: Scope, ident: tuple, e: dict, same_label: int) -> str:
    """``<method> (ours, <N> ep, <dataset>, <attributes>, <settings>, <hardware>, group <recipe>)``."""
    spec, ctx = scope.spec, e["ctx"]
    name = (ctx["exp"] + (f" {ctx['pretrain_sweep']}" if ctx.get("pretrain_sweep") else "")
            if spec.key == "exp" else ctx["method"])
    ep = (f", {ctx['epochs']} ep" if spec.key == "method" and ctx.get("epochs") is not None
          and ctx.get("method") != "random" else "")
    recipe = ident[-2] if e.get("eval_group") else ident[-1]
    grp = f", group {recipe[:8]}" if same_label > 1 or spec.key == "exp" else ""
    if e.get("eval_group"):
        grp += f", evaluation group {e['eval_group'][:8]}"
    att = "".join(f", {ctx[a]}" for a in scope.row_attrs if ctx.get(a) not in (None, "", RECORD_ATTRS[a][1]))
    sett = "".join(f", {s}" for s in row_notes(scope, e))
    hw = sorted({scope.runs[i].hardware for idx in e["cols"].values() for i in idx if scope.runs[i].hardware})
    hw_label = f", {' '.join(hw)}" if hw else ""
    ds = f", {e['dataset']}" if e["dataset"] != "unknown" else ""
    return f"{name} (ours{ep}{ds}{att}{sett}{hw_label}{grp})"


def extra_rows(scope: Scope, paper: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """The rows of ours (see :func:`extra_candidates`), sorted by their identity."""
    spec = scope.spec
    id_cols = [c for c in paper.columns if c not in spec.cells]
    extra = extra_candidates(scope, rows)
    split_groups(scope, extra)
    same: dict[tuple, int] = {}
    for ident, e in extra.items():
        same[_base(ident, e)] = same.get(_base(ident, e), 0) + 1
    out = []
    for ident, e in sorted(extra.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        o = {c: None for c in id_cols}
        o.update({k: v for k, v in e["ctx"].items() if k in id_cols})
        o["label"] = extra_label(scope, ident, e, same[_base(ident, e)])
        o["source"] = "ours"
        o["dataset"] = e["dataset"]
        o["_notes"] = set(row_notes(scope, e))
        for col in list(spec.cells) + list(spec.extra_epoch_cells):
            fill(scope, o, col, None, e["cols"].get(col, []), compare=False)
        out.append(o)
    return out


def meta_column(name: str, paper_cols: list[str]) -> str:
    """Our column ``data`` / ``group`` / ``weights``, or ``run_<name>`` where the paper table has a column of that
    name (the CGH COCO table's ``group``: its sections)."""
    return f"run_{name}" if name in paper_cols else name


def to_frame(spec: TableSpec, paper: pd.DataFrame, out_rows: list[dict]) -> pd.DataFrame:
    """The rows as the table's DataFrame: identifying columns, ``dataset``, per value column paper / ours / std /
    n / diff, then the runs' data, group, weights, hardware, sweep point and notes."""
    id_cols = [c for c in paper.columns if c not in spec.cells]
    value_cols = list(spec.cells) + list(spec.extra_epoch_cells)
    meta = {m: meta_column(m, list(paper.columns)) for m in META}
    for o in out_rows:
        o[meta["data"]] = " ".join(sorted(o.pop("_data", set()))) or None
        o[meta["group"]] = " ".join(g[:12] for g in sorted(o.pop("_group", set()))) or None
        o[meta["weights"]] = " ".join(sorted(o.pop("_weights", set()))) or None
        o["hardware"] = " ".join(sorted(o.pop("_hardware", set()))) or None
        o["sweep"] = "; ".join(sorted(o.pop("_sweep", set()))) or None
        o["notes"] = "; ".join(sorted(o.pop("_notes", set()))) or None
    ordered = (id_cols + ["dataset"] + [f"{c}.{k}" for c in value_cols for k in ("paper", "ours", "std", "n", "diff")]
               + list(meta.values()) + ["hardware", "sweep", "notes"])
    df = pd.DataFrame(out_rows)
    for c in ordered:
        if c not in df.columns:
            df[c] = None
    return df[ordered]


def build_table(spec: TableSpec, paper: pd.DataFrame, runs: list[Run]) -> tuple[pd.DataFrame, set[int]]:
    """The table's DataFrame (paper rows + rows of ours) and the ids of the runs it used."""
    scope = scope_of(spec, paper, runs)
    rows = paper.to_dict("records")
    out_rows = paper_rows(scope, paper) + extra_rows(scope, paper, rows)
    return to_frame(spec, paper, out_rows), scope.used
