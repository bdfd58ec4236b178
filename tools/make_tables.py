"""Aggregate ``results/records/`` into CSV tables that mirror the LEWEL paper's Tables 1-9, the CGH
supplement's Tables 1-3 and MCL's Tables 11-13.

    python -m tools.make_tables [--records results/records] [--paper results/paper] [--out results/tables] [--strict]

For every paper table of :data:`TABLES` (``results/paper/<name>.csv``: typed CSV files with a ``# schema:``
line) the output ``results/tables/<name>.csv`` has the paper's rows and value columns; for each value column ``c``:
``c.paper``, ``c.ours`` (mean over runs), ``c.std`` (sample std, ddof=1, when >= 2 runs), ``c.n`` (runs) and
``c.diff`` (ours - paper). Records that fit a table but no paper row (other epochs, ``random`` init, mini
data) become extra rows below the paper's (``source`` = ``ours``). Every row carries a ``dataset`` column:
``paper`` for the paper's rows, else the records' dataset (``mini`` records are never merged into
real-data rows). ``results/tables/README.md`` renders all tables in Markdown (``ours ± std (n)``).

Records that cannot be placed (unknown eval / protocol, missing metric, IN-100 runs that fit no ablation
row), failed runs (``status: failed``: a non-finite result, skipped with its reason) and malformed files are
listed in ``unmatched.csv`` and logged; ``--strict`` makes them an error.
Matching: Tables 1-4, 8, 9 and MCL's 11-13 by (method, pretrain_epochs[, arch]): a row without epochs takes
records without pretraining (``random`` init), a record without epochs (e.g. supervised weights) fills its
method's only row; CGH's tables by (method, pretrain_epochs[,
feature | variant]) (:data:`RECORD_ATTRS`: a table with a ``feature`` column takes linear probes of that input,
any other table only GAP probes; ``variant`` ``multi`` = a multi-crop pretraining, a ``pretrain_exp`` with the
word ``multi``, e.g. ``cgh_multi``); the cost table's time column from ``tools.bench_pretrain --record``
(eval ``cost``); Tables 5-7 and Fig. 3 (the ImageNet-100
ablations: records whose checkpoint was pretrained on data named ``imagenet100``,
:mod:`lewel_bench.data.in100`) by pretrain_exp (``exp`` column) and, for Fig. 3, the pretraining sweep point
(``pretrain_sweep`` column, e.g. ``model.beta=0.3``: checkpoints pretrained with ``--sweep``). The same
experiments pretrained on the mini data (``make ablations`` without ``DATA``) become mini rows of these
tables, never rows of Tables 1-4. Rows of ours (extra rows) are one per pretraining recipe
(``pretrain_group``). The ``weights`` column says what the evaluated models took from the checkpoint
(``trunk``, or the trunk and transfer-bundle parts).
kNN results and training speeds outside Table 9 (no paper table) go to ``other_results.csv``, one row per group.

Averages are taken only over runs of one ``group`` (the record's run identity without its seeds: same data
fingerprint, same evaluation config, same pretraining recipe): runs on other data or with other settings
are never averaged together. Where a paper row matches several groups, the largest fills it and each
other group gets a row of its own (its ``group`` column says which); the data's name and fingerprint are
in the ``data`` column. The points of a sweep (records written with ``--sweep KEY``, e.g. the fine-tuning
learning rate the paper searches, Sec. 4.3) count as one: the best point by the eval's primary metric
(:data:`PRIMARY`) fills the row and the ``sweep`` column says which value it was.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from lewel_bench.records import default_records_dir, load_records
from lewel_bench.utils import REPO_ROOT

log = logging.getLogger("tools.make_tables")

PAPER_DIR = REPO_ROOT / "results" / "paper"
TABLES_DIR = REPO_ROOT / "results" / "tables"

# Record vocabulary (docs/CONVENTIONS.md): eval -> known protocols and the metric keys it reports.
KNOWN_PROTOCOLS: dict[str, set[str]] = {
    "linear": {"lewel_b_sgd", "lewel_m_lars", "cgh_sgd", "mcl_sgd", "mini"},
    "semisup": {"1pct", "10pct"},
    "knn": {"k20"},
    "voc_det": {"c4_24k"},
    "voc_seg": {"fcn_d8_20k"},
    "coco": {"c4_1x", "c4_2x", "fpn_1x", "fpn_2x", "retinanet_1x", "retinanet_2x", "retinanet_6x"},
    "pretrain": {"time_per_epoch"},
    "cost": {"step_time"},   # tools.bench_pretrain --record: a method's step time relative to supervised
}
NO_CITED = "cited"
TYPES: dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "float": float,
    "bool": lambda s: {"true": True, "false": False}[s.strip().lower()],
}


class PaperFileError(ValueError):
    """A file under results/paper is malformed (the message names the file, line and column)."""


# --------------------------------------------------------------------------- paper data
def read_paper_csv(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a typed paper CSV: ``#`` comment lines, one ``# schema: col:type,...`` line, then a header.

    Empty cells are ``None`` (the paper's "-"); every other cell is converted to its declared type.
    """
    text = path.read_text()
    schema: dict[str, str] = {}
    body = []
    for line in text.splitlines():
        if line.startswith("#"):
            s = line[1:].strip()
            if s.startswith("schema:"):
                for item in s[len("schema:"):].split(","):
                    name, _, typ = item.strip().partition(":")
                    if typ not in TYPES:
                        raise PaperFileError(f"{path}: schema column {name!r} has unknown type {typ!r} "
                                             f"(known: {sorted(TYPES)})")
                    schema[name] = typ
        elif line.strip():
            body.append(line)
    if not schema:
        raise PaperFileError(f"{path}: no '# schema: col:type,...' line")
    rows = list(csv.reader(io.StringIO("\n".join(body))))
    header, data = rows[0], rows[1:]
    if header != list(schema):
        raise PaperFileError(f"{path}: header {header} does not match the schema {list(schema)}")
    out = []
    for i, r in enumerate(data, start=1):
        if len(r) != len(header):
            raise PaperFileError(f"{path}: data row {i} has {len(r)} cells, expected {len(header)}")
        rec = {}
        for col, cell in zip(header, r):
            if cell.strip() == "":
                rec[col] = None
                continue
            try:
                rec[col] = TYPES[schema[col]](cell.strip())
            except (ValueError, KeyError):
                raise PaperFileError(f"{path}: data row {i}, column {col!r}: {cell!r} is not a {schema[col]}") from None
        out.append(rec)
    return pd.DataFrame(out, columns=header).astype(object), schema


# --------------------------------------------------------------------------- table specs
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
    name: str                 # output name and results/paper/<name>.csv
    title: str
    cells: dict[str, Cell]    # paper value column -> where our numbers come from
    key: str = "method"       # "method": match (method, epochs[, arch]); "exp": match pretrain_exp
    row_attrs: tuple[str, ...] = ()   # row columns (besides label/method/source) that identify the row
    extra_epoch_cells: dict[str, Cell] = field(default_factory=dict)  # Table 1: values at other epochs


LIN = ("lewel_b_sgd", "lewel_m_lars", "mini")
TABLES: list[TableSpec] = [
    TableSpec("table1_linear", "Table 1: IN-1K linear classification (ResNet-50)", {
        "ep100_top1": Cell("linear", "top1", LIN, 100, "100ep Acc@1"),
        "ep100_top5": Cell("linear", "top5", LIN, 100, "100ep Acc@5"),
        "ep200_top1": Cell("linear", "top1", LIN, 200, "200ep Acc@1"),
        "ep200_top5": Cell("linear", "top5", LIN, 200, "200ep Acc@5"),
        "ep400_top1": Cell("linear", "top1", LIN, 400, "400ep Acc@1"),
    }, extra_epoch_cells={
        "other_top1": Cell("linear", "top1", LIN, None, "other-ep Acc@1"),
        "other_top5": Cell("linear", "top5", LIN, None, "other-ep Acc@5"),
    }),
    TableSpec("table2_semisup", "Table 2: IN-1K semi-supervised classification (ResNet-50)", {
        "pct1_top1": Cell("semisup", "top1", ("1pct",), label="1% Acc@1"),
        "pct1_top5": Cell("semisup", "top5", ("1pct",), label="1% Acc@5"),
        "pct10_top1": Cell("semisup", "top1", ("10pct",), label="10% Acc@1"),
        "pct10_top5": Cell("semisup", "top5", ("10pct",), label="10% Acc@5"),
    }, row_attrs=("epochs",)),
    TableSpec("table3_voc", "Table 3: Pascal VOC detection (Faster R-CNN R50-C4) and VOC12 segmentation", {
        "det_AP": Cell("voc_det", "AP", ("c4_24k",), label="Det AP"),
        "det_AP50": Cell("voc_det", "AP50", ("c4_24k",), label="Det AP50"),
        "det_AP75": Cell("voc_det", "AP75", ("c4_24k",), label="Det AP75"),
        "seg_mIoU": Cell("voc_seg", "mIoU", ("fcn_d8_20k",), label="Seg mIoU"),
    }, row_attrs=("epochs",)),
    TableSpec("table4_coco", "Table 4: MS-COCO Mask R-CNN, 1x schedule", {
        "bbox_AP": Cell("coco", "bbox_AP", ("{arch}_1x",), label="AP^bb"),
        "bbox_AP50": Cell("coco", "bbox_AP50", ("{arch}_1x",), label="AP^bb_50"),
        "bbox_AP75": Cell("coco", "bbox_AP75", ("{arch}_1x",), label="AP^bb_75"),
        "segm_AP": Cell("coco", "segm_AP", ("{arch}_1x",), label="AP^mk"),
        "segm_AP50": Cell("coco", "segm_AP50", ("{arch}_1x",), label="AP^mk_50"),
        "segm_AP75": Cell("coco", "segm_AP75", ("{arch}_1x",), label="AP^mk_75"),
    }, row_attrs=("arch", "epochs")),
    TableSpec("table8_handcrafted", "Table 8 (appendix): hand-crafted spatial alignment; IN-1K linear, "
              "COCO Mask R-CNN R50-FPN 1x / 2x", {
        "in1k_top1": Cell("linear", "top1", LIN, label="IN-1K Acc@1"),
        "in1k_top5": Cell("linear", "top5", LIN, label="IN-1K Acc@5"),
        **{f"x{s}_{m}": Cell("coco", m, (f"fpn_{s}x",), label=f"{s}x {m}")
           for s in (1, 2) for m in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75")},
    }, row_attrs=("epochs",)),
    TableSpec("table9_time", "Table 9 (appendix): training time per IN-1K epoch (paper: 8 V100, AMP; ours: the "
              "hardware column) and linear top-1 at 200 epochs", {
        "time_per_epoch_s": Cell("pretrain", "time_per_epoch_s", ("time_per_epoch",), label="s / epoch",
                                 compare=False),
        "top1_ep200": Cell("linear", "top1", LIN, 200, label="200ep Acc@1"),
    }),
    TableSpec("table5_components", "Table 5: influence of each component (IN-100)", {
        "in100_top1": Cell("linear", "top1", label="IN-100 Acc"),
        "voc_mIoU": Cell("voc_seg", "mIoU", ("fcn_d8_20k",), label="VOC Seg mIoU"),
    }, key="exp"),
    TableSpec("table6_heads", "Table 6: MoCo with large projection heads (IN-100)", {
        "in100_top1": Cell("linear", "top1", label="IN-100 Acc"),
        "voc_mIoU": Cell("voc_seg", "mIoU", ("fcn_d8_20k",), label="VOC mIoU"),
    }, key="exp"),
    TableSpec("table7_num_aligned", "Table 7: number of aligned embeddings (IN-100)", {
        "in100_top1": Cell("linear", "top1", label="IN-100 Acc"),
        "voc_mIoU": Cell("voc_seg", "mIoU", ("fcn_d8_20k",), label="VOC 12 Seg mIoU"),
    }, key="exp"),
    TableSpec("fig3a_beta", "Fig. 3a: the loss weight beta (IN-100, LEWEL_M; the paper plots it, no values)", {
        "in100_top1": Cell("linear", "top1", label="IN-100 Acc"),
        "voc_mIoU": Cell("voc_seg", "mIoU", ("fcn_d8_20k",), label="VOC 12 Seg mIoU"),
    }, key="exp"),
    TableSpec("fig3b_aligned_dim", "Fig. 3b: the aligned embeddings' dimensionality c (IN-100, LEWEL_M, d = 128; "
              "the paper plots it, no values)", {
        "in100_top1": Cell("linear", "top1", label="IN-100 Acc"),
        "voc_mIoU": Cell("voc_seg", "mIoU", ("fcn_d8_20k",), label="VOC 12 Seg mIoU"),
    }, key="exp"),
    # CGH supplement (results/paper/cgh_*.csv; their headers say how each column is filled)
    TableSpec("cgh_table1_linear", "CGH Table 1: IN-1K linear classification, GAP and hypercolumn input (ResNet-50)", {
        "in1k_top1": Cell("linear", "top1", ("cgh_sgd", "mini"), label="IN-1K Acc"),
    }, row_attrs=("epochs", "feature")),
    TableSpec("cgh_table2_coco_c4", "CGH Table 2: MS-COCO Mask R-CNN R50-C4, 1x schedule", {
        m: Cell("coco", m, ("c4_1x",), label=lab) for m, lab in (
            ("bbox_AP", "AP^bb"), ("bbox_AP50", "AP^bb_50"), ("bbox_AP75", "AP^bb_75"),
            ("segm_AP", "AP^mk"), ("segm_AP50", "AP^mk_50"), ("segm_AP75", "AP^mk_75"))
    }, row_attrs=("epochs", "variant")),
    TableSpec("cgh_table3_cost", "CGH Table 3: pre-training time per epoch relative to supervised, IN-1K linear, "
              "VOC07+12 detection", {
        "time_rel": Cell("cost", "time_rel", ("step_time",), label="Time/Epoch", decimals=2),
        "linear_top1": Cell("linear", "top1", ("cgh_sgd", "mini"), label="Linear Acc"),
        "voc_AP50": Cell("voc_det", "AP50", ("c4_24k",), label="VOC 07+12 AP50"),
    }, row_attrs=("epochs",)),
    # MCL's appendix (Tables 11-13): its detection protocols and linear recipe, its baselines' rows
    TableSpec("mcl_table11_retinanet", "MCL Table 11 (appendix): COCO RetinaNet R50-FPN, 1x / 2x / 6x (box AP)", {
        f"x{s}_{m}": Cell("coco", m, (f"retinanet_{s}x",), label=f"{s}x {m}")
        for s in (1, 2, 6) for m in ("bbox_AP", "bbox_AP50", "bbox_AP75")
    }, row_attrs=("epochs",)),
    TableSpec("mcl_table12_coco_c4", "MCL Table 12 (appendix): COCO Mask R-CNN R50-C4, 1x / 2x", {
        f"x{s}_{m}": Cell("coco", m, (f"c4_{s}x",), label=f"{s}x {m}")
        for s in (1, 2) for m in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75")
    }, row_attrs=("epochs",)),
    TableSpec("mcl_table13_linear", "MCL Table 13 (appendix): IN-1K linear classification (ResNet-50, MCL's recipe)", {
        "ep100_top1": Cell("linear", "top1", ("mcl_sgd",), 100, "100ep Acc@1"),
        "ep400_top1": Cell("linear", "top1", ("mcl_sgd",), 400, "400ep Acc@1"),
    }, extra_epoch_cells={
        "other_top1": Cell("linear", "top1", ("mcl_sgd",), None, "other-ep Acc@1"),
    }),
]


def _variant(rec: dict) -> str:
    """``multi`` for a checkpoint of a multi-crop pretraining (an experiment named ``..._multi...``), else ''."""
    return "multi" if "multi" in str(rec.get("pretrain_exp") or "").split("_") else ""


#: What a row can ask of a record besides method / epochs / protocol: row column -> (the record's value, the
#: value a table WITHOUT that column requires). ``feature``: the linear probe's input (eval_linear).
RECORD_ATTRS: dict[str, tuple[Callable[[dict], str], str]] = {
    "feature": (lambda rec: str(rec.get("feature") or "gap"), "gap"),
    "variant": (_variant, ""),
}


# --------------------------------------------------------------------------- records
@dataclass
class Run:
    """One metric value of one record, with everything a table matches on."""
    method: str
    exp: str
    epochs: int | None
    eval: str
    protocol: str
    metric: str
    value: float
    dataset: str
    path: str
    group: str = ""
    data: str = ""
    weights: str = "trunk"
    in100: bool = False
    hardware: str = ""
    sweep_group: str = ""
    sweep: str = ""          # "<key>=<value>" of a sweep point
    pretrain_data: str = ""  # name of the checkpoint's pretraining data (imagenet100, mini, ...)
    pretrain_sweep: str = ""  # "<key>=<value>": the checkpoint is one point of a pretraining sweep
    ablation: bool = False   # belongs to the ablation tables (mark_ablations), never to Tables 1-4 / 8 / 9
    pretrain_group: str = ""  # the pretraining recipe (one row of ours per recipe; "" for old records)
    attrs: dict[str, str] = field(default_factory=dict)   # RECORD_ATTRS values


IN100 = "imagenet100"
#: the metric a sweep's best point is chosen by (the paper's "best fine-tuning learning rate")
PRIMARY = {"linear": "top1", "semisup": "top1", "knn": "top1", "voc_det": "AP", "voc_seg": "mIoU",
           "coco": "bbox_AP", "pretrain": "images_per_s"}


def sweep_label(key: Any, value: Any) -> str:
    """``<key>=<value>`` of a sweep point, numbers written as the paper CSVs write them (``model.beta=0.3``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{key}={value}"


def record_weights(rec: dict) -> str:
    """What the evaluated model took from the checkpoint: ``trunk`` or ``trunk+fpn+box_head`` (the record's
    ``transfer``; ``trunk`` for records that predate it)."""
    t = rec.get("transfer") if isinstance(rec.get("transfer"), dict) else {}
    return "+".join(["trunk", *sorted(k for k in t if k != "trunk")])


def record_group(rec: dict) -> str:
    """The record's ``group`` (runs that may be averaged); for records written before groups existed, a
    digest of everything but the seed that the record kept."""
    if rec.get("group"):
        return str(rec["group"])
    cfg = {k: v for k, v in (rec.get("config") or {}).items() if k not in ("seed", "_meta")}
    keep = {k: rec.get(k) for k in ("eval", "protocol", "dataset", "method", "pretrain_exp", "pretrain_epochs",
                                    "backend", "arch")}
    blob = json.dumps({**keep, "config": cfg}, sort_keys=True, default=str)
    return "legacy-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def record_data(rec: dict) -> str:
    """``<name>:<fingerprint[:8]>`` of the record's data identity (the dataset name alone for old records)."""
    d = rec.get("data") if isinstance(rec.get("data"), dict) else {}
    name = str(rec.get("dataset") or d.get("name") or "unknown")
    return f"{name}:{str(d['fingerprint'])[:8]}" if d.get("fingerprint") else name


def flatten_records(records: list[dict], problems: list[str]) -> tuple[list[Run], list[dict]]:
    """Records -> per-metric runs; records with an unknown eval / protocol or bad metrics -> unmatched."""
    runs: list[Run] = []
    unmatched: list[dict] = []
    for p in problems:          # load_records' problems read "<file>: <message>" (the message may repeat the file)
        file, _, msg = p.partition(": ")
        msg = msg[len(file) + 2:] if msg.startswith(file + ": ") else msg
        unmatched.append({"file": file, "reason": f"malformed: {msg}"})
    for rec in records:
        path = rec.get("_path", "?")
        ev, proto = str(rec["eval"]), str(rec["protocol"])
        if ev not in KNOWN_PROTOCOLS:
            unmatched.append({"file": path, "reason": f"unknown eval {ev!r} (known: {sorted(KNOWN_PROTOCOLS)})"})
            continue
        if proto not in KNOWN_PROTOCOLS[ev]:
            unmatched.append({"file": path, "reason": f"unknown protocol {proto!r} for eval {ev!r} "
                                                      f"(known: {sorted(KNOWN_PROTOCOLS[ev])})"})
            continue
        epochs = rec.get("pretrain_epochs")
        try:
            epochs = None if epochs is None else int(epochs)
        except (TypeError, ValueError):
            unmatched.append({"file": path, "reason": f"pretrain_epochs {epochs!r} is not an integer"})
            continue
        if rec.get("status", "ok") == "failed":
            unmatched.append({"file": path, "reason": f"failed run, skipped: {rec.get('failure', 'no reason given')}"})
            continue
        bad = [k for k, v in rec["metrics"].items()
               if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
        if bad:
            unmatched.append({"file": path, "reason": f"non-numeric metrics {bad}"})
            continue
        dataset = str(rec.get("dataset") or ("mini" if proto == "mini" else "unknown"))
        group, data, weights = record_group(rec), record_data(rec), record_weights(rec)
        in100 = rec.get("pretrain_data") == IN100  # pretrained on ImageNet-100 (the checkpoint's data identity)
        sw = rec.get("sweep") if isinstance(rec.get("sweep"), dict) else {}
        sweep = (str(sw.get("group", "")), f"{sw.get('key')}={sw.get('value')}" if sw else "")
        psw = rec.get("pretrain_sweep") if isinstance(rec.get("pretrain_sweep"), dict) else {}
        attrs = {name: get(rec) for name, (get, _) in RECORD_ATTRS.items()}
        for metric, value in rec["metrics"].items():
            runs.append(Run(str(rec["method"]), str(rec["pretrain_exp"]), epochs, ev, proto, metric,
                            float(value), dataset, path, group, data, weights, in100, str(rec.get("hardware") or ""),
                            *sweep, str(rec.get("pretrain_data") or ""),
                            sweep_label(psw.get("key"), psw.get("value")) if psw else "",
                            pretrain_group=str(rec.get("pretrain_group") or ""), attrs=attrs))
    return runs, unmatched


def mark_ablations(runs: list[Run], ablation_exps: set[str]) -> None:
    """Runs of the ablation tables: IN-100 pretraining, a pretraining sweep, or a run of an ablation experiment
    on other data (the mini runs of ``make ablations``: rows of their own); the other tables never take them."""
    for r in runs:
        r.ablation = r.in100 or bool(r.pretrain_sweep) or r.exp in ablation_exps


def aggregate(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None for one run, count)."""
    n = len(values)
    if n == 0:
        return None, None, 0
    s = pd.Series(values, dtype=float)
    return float(s.mean()), (float(s.std(ddof=1)) if n > 1 else None), n


# --------------------------------------------------------------------------- building one table
def _protocols(cell: Cell, row: dict) -> set[str]:
    if cell.protocols is None:
        return KNOWN_PROTOCOLS[cell.eval]
    return {p.format(**{k: v for k, v in row.items() if v is not None}) for p in cell.protocols}


def _missing(v: Any) -> bool:
    """An empty paper cell (``None``, or NaN once pandas has read the column)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def build_table(spec: TableSpec, paper: pd.DataFrame, runs: list[Run]) -> tuple[pd.DataFrame, set[int]]:
    """The table's DataFrame (paper rows + extra rows of ours) and the ids of the runs it used."""
    used: set[int] = set()
    cells = spec.cells
    value_cols = list(cells) + list(spec.extra_epoch_cells)
    id_cols = [c for c in paper.columns if c not in cells]
    # ablation tables (key "exp"): IN-100 pretraining fills the paper's rows; the same experiments' mini runs
    # (the smoke chain of `make ablations`) become rows of their own. The other tables: no IN-100 pretraining.
    row_attrs = [a for a in RECORD_ATTRS if a in paper.columns]   # matched on the row's value
    fixed_attrs = {a: d for a, (_, d) in RECORD_ATTRS.items() if a not in paper.columns}  # only the default
    in_scope = [(i, r) for i, r in enumerate(runs) if r.ablation == (spec.key == "exp")
                and all(r.attrs.get(a, d) == d for a, d in fixed_attrs.items())]
    sweep_of = lambda row: row.get("pretrain_sweep") or ""  # noqa: E731  (Fig. 3 rows: one point of a sweep)

    def attrs_of(row: dict) -> dict[str, str]:
        """The row's values of the record attributes (an empty cell: the attribute's default)."""
        out = {}
        for a in row_attrs:
            v = row.get(a)
            out[a] = RECORD_ATTRS[a][1] if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)
        return out

    def matching(cell: Cell, row: dict, dataset_ok: Callable[[str], bool], epochs: int | None | str) -> list[int]:
        protos = _protocols(cell, row)
        want = attrs_of(row)
        out = []
        for i, r in in_scope:
            if r.eval != cell.eval or r.metric != cell.metric or r.protocol not in protos or not dataset_ok(r.dataset):
                continue
            if any(r.attrs.get(a) != v for a, v in want.items()):
                continue
            if spec.key == "exp":
                if r.exp != row["exp"] or r.pretrain_sweep != sweep_of(row) or not r.in100:
                    continue
            else:
                if r.method != row["method"]:
                    continue
                # a row without epochs (Rand Init's "-") takes the runs without pretraining (random init: 0)
                if epochs != "any" and r.epochs != epochs and not (_missing(epochs) and r.epochs == 0):
                    continue
            out.append(i)
        return out

    def primary_mean(group: str, r: Run) -> float:
        vals = [x.value for x in runs if x.group == group and x.eval == r.eval and x.protocol == r.protocol
                and x.metric == PRIMARY.get(r.eval, r.metric)]
        return sum(vals) / len(vals) if vals else float("-inf")

    def largest_group(idx: list[int]) -> list[int]:
        """The runs of one group, never a mix: of the points of a sweep, the best by the eval's primary metric
        (the other points count as used); then the group with the most runs (ties: the smallest id)."""
        by: dict[str, list[int]] = {}
        for i in idx:
            by.setdefault(runs[i].group, []).append(i)
        sweeps: dict[str, list[str]] = {}
        for g, ids in by.items():
            if runs[ids[0]].sweep_group:
                sweeps.setdefault(runs[ids[0]].sweep_group, []).append(g)
        for points in sweeps.values():
            best = max(points, key=lambda g: (primary_mean(g, runs[by[g][0]]), g))
            for g in points:
                if g != best:
                    used.update(by.pop(g))
        return sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))[0][1] if by else []

    def fill(out_row: dict, col: str, paper_val: Any, idx: list[int], compare: bool) -> None:
        groups = {runs[i].group for i in idx}
        assert len(groups) <= 1, f"{spec.name}: runs of {len(groups)} groups in one cell"
        for i in idx:
            out_row.setdefault("_data", set()).add(runs[i].data)
            out_row.setdefault("_group", set()).add(runs[i].group)
            out_row.setdefault("_weights", set()).add(runs[i].weights)
            if runs[i].hardware:
                out_row.setdefault("_hardware", set()).add(runs[i].hardware)
            if runs[i].sweep:
                out_row.setdefault("_sweep", set()).add(f"{runs[i].protocol}: {runs[i].sweep}")
        mean, std, n = aggregate([runs[i].value for i in idx])
        out_row[f"{col}.paper"] = paper_val
        out_row[f"{col}.ours"] = _round(mean)
        out_row[f"{col}.std"] = _round(std)
        out_row[f"{col}.n"] = n
        out_row[f"{col}.diff"] = _round(mean - paper_val) if (compare and mean is not None and paper_val is not None) else None
        used.update(idx)

    # Which paper row gets our numbers: per identity (method, epochs, arch) the first non-cited row, else
    # the first row (e.g. the cited supervised baseline). Ablation rows: by exp.
    rows = paper.to_dict("records")
    owner: dict[tuple, int] = {}
    for j, row in enumerate(rows):
        ident = ((row["exp"], sweep_of(row)) if spec.key == "exp"
                 else (row["method"],) + tuple(row.get(a) for a in spec.row_attrs))
        if ident not in owner or (rows[owner[ident]]["source"] == NO_CITED and row["source"] != NO_CITED):
            owner[ident] = j
    owners = set(owner.values())
    n_rows_of: dict[Any, int] = {}
    for r in rows:
        n_rows_of[r.get("method")] = n_rows_of.get(r.get("method"), 0) + 1

    real = lambda d: d != "mini"  # noqa: E731
    out_rows = []
    for j, row in enumerate(rows):
        o = {c: row[c] for c in id_cols}
        o["dataset"] = "paper"
        for col, cell in cells.items():
            idx: list[int] = []
            if j in owners:
                ep: int | None | str = cell.epochs if spec.key == "method" and cell.epochs is not None else row.get("epochs")
                idx = matching(cell, row, real, ep)
                if (spec.key == "method" and not idx and n_rows_of.get(row["method"]) == 1
                        and (cell.epochs is None or not _missing(row[col]))):
                    # a record without pretrain_epochs (e.g. torchvision supervised weights) fills the
                    # method's only row (in a table of fixed-epoch columns: those the paper filled)
                    idx = [i for i in matching(cell, row, real, "any") if runs[i].epochs is None]
                idx = largest_group([i for i in idx if runs[i].protocol != "mini"])
            fill(o, col, row[col], idx, compare=cell.compare)
        for col in spec.extra_epoch_cells:
            fill(o, col, None, [], compare=False)
        out_rows.append(o)

    # Extra rows: runs of this table's evals that no paper row took (other epochs, random init, mini data).
    # Ablation tables (key "exp") get none: an IN-100 run that fits no row is reported as unmatched.
    extra: dict[tuple, dict] = {}
    if spec.key == "exp":  # ablation runs: only other groups of the paper's own rows (others are unmatched)
        paper_exps = {(r["exp"], sweep_of(r)) for r in rows}
        in_scope = [(i, r) for i, r in in_scope if (r.exp, r.pretrain_sweep) in paper_exps]
    all_cells = {**cells, **spec.extra_epoch_cells}
    fixed_epochs = {c.epochs for c in cells.values() if c.epochs is not None}
    # an arch taken from the protocol (Table 4: c4 / fpn) must be one of the paper's (a RetinaNet is not)
    paper_archs = {r.get("arch") for r in rows} if "arch" in spec.row_attrs else None
    for i, r in in_scope:
        if i in used:
            continue
        for col, cell in all_cells.items():
            if r.eval != cell.eval or r.metric != cell.metric:
                continue
            recipe = r.pretrain_group or r.group  # one row per pretraining recipe (records before it: per group)
            attrs = {a: r.attrs.get(a, RECORD_ATTRS[a][1]) for a in row_attrs}
            if spec.key == "exp":
                ident = (r.exp, r.pretrain_sweep, r.dataset, recipe)
                row_ctx = {"exp": r.exp, **({"pretrain_sweep": r.pretrain_sweep} if r.pretrain_sweep else {})}
            else:
                arch = r.protocol.split("_")[0] if "arch" in spec.row_attrs else None
                if paper_archs is not None and arch not in paper_archs:
                    continue
                ident = (r.method, r.epochs, arch, *attrs.values(), r.dataset, recipe)
                row_ctx = {"method": r.method, "epochs": r.epochs, "arch": arch, **attrs}
            if r.protocol not in _protocols(cell, row_ctx):
                continue
            if cell.epochs is not None and (r.epochs != cell.epochs or r.dataset == "mini"):
                continue
            if col in spec.extra_epoch_cells and r.epochs in fixed_epochs and r.dataset != "mini":
                continue
            e = extra.setdefault(ident, {"ctx": row_ctx, "dataset": r.dataset, "cols": {}})
            e["cols"].setdefault(col, []).append(i)
    # A cell holds one group: the largest (the best point of a sweep); the recipe's other evaluation settings
    # get a row each (ident + the evaluation group).
    for ident, e in list(extra.items()):
        for col, idx in list(e["cols"].items()):
            chosen = largest_group(idx)
            e["cols"][col] = chosen
            for i in idx:
                if i not in chosen and i not in used:
                    o = extra.setdefault(ident + (runs[i].group,), {"ctx": e["ctx"], "dataset": e["dataset"],
                                                                    "cols": {}, "eval_group": runs[i].group})
                    o["cols"].setdefault(col, []).append(i)
    same_row: dict[tuple, int] = {}   # rows that differ only in their recipe (or evaluation group)
    base = lambda ident, e: ident[:-2] if e.get("eval_group") else ident[:-1]  # noqa: E731
    for ident, e in extra.items():
        same_row[base(ident, e)] = same_row.get(base(ident, e), 0) + 1
    for ident, e in sorted(extra.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        ctx = e["ctx"]
        o = {c: None for c in id_cols}
        o.update({k: v for k, v in ctx.items() if k in id_cols})
        name = (ctx["exp"] + (f" {ctx['pretrain_sweep']}" if ctx.get("pretrain_sweep") else "")
                if spec.key == "exp" else ctx["method"])
        ep = (f", {ctx['epochs']} ep" if spec.key == "method" and ctx.get("epochs") is not None
              and ctx.get("method") != "random" else "")
        recipe = ident[-2] if e.get("eval_group") else ident[-1]
        grp = f", group {recipe[:8]}" if same_row[base(ident, e)] > 1 or spec.key == "exp" else ""
        if e.get("eval_group"):
            grp += f", evaluation group {e['eval_group'][:8]}"
        att = "".join(f", {ctx[a]}" for a in row_attrs if ctx.get(a) not in (None, "", RECORD_ATTRS[a][1]))
        hw = sorted({runs[i].hardware for idx in e["cols"].values() for i in idx if runs[i].hardware})
        hw_label = f", {' '.join(hw)}" if hw else ""
        o["label"] = f"{name} (ours{ep}{', ' + e['dataset'] if e['dataset'] != 'unknown' else ''}{att}{hw_label}{grp})"
        o["source"] = "ours"
        o["dataset"] = e["dataset"]
        for col in value_cols:
            fill(o, col, None, e["cols"].get(col, []), compare=False)
        out_rows.append(o)

    meta = {m: meta_column(m, list(paper.columns)) for m in ("data", "group", "weights")}
    for o in out_rows:
        o[meta["data"]] = " ".join(sorted(o.pop("_data", set()))) or None
        o[meta["group"]] = " ".join(g[:12] for g in sorted(o.pop("_group", set()))) or None
        o[meta["weights"]] = " ".join(sorted(o.pop("_weights", set()))) or None
        o["hardware"] = " ".join(sorted(o.pop("_hardware", set()))) or None
        o["sweep"] = "; ".join(sorted(o.pop("_sweep", set()))) or None
    ordered = (id_cols + ["dataset"] + [f"{c}.{k}" for c in value_cols for k in ("paper", "ours", "std", "n", "diff")]
               + list(meta.values()) + ["hardware", "sweep"])
    df = pd.DataFrame(out_rows)
    for c in ordered:
        if c not in df.columns:
            df[c] = None
    return df[ordered], used


def meta_column(name: str, paper_cols: list[str]) -> str:
    """Our column ``data`` / ``group`` / ``weights``, or ``run_<name>`` where the paper table has a column of that
    name (the CGH COCO table's ``group``: its sections)."""
    return f"run_{name}" if name in paper_cols else name


# --------------------------------------------------------------------------- Markdown
def _fmt(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _fmt_id(x: Any) -> str:
    """An identifying cell: a whole number read as a float (epochs of a column with gaps) without decimals."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else _fmt(x)


def to_markdown(spec: TableSpec, df: pd.DataFrame, paper_cols: list[str]) -> str:
    """Paper value | ours (mean ± std, n) | diff, one column group per paper column."""
    value_cols = list(spec.cells) + list(spec.extra_epoch_cells)
    id_cols = [c for c in paper_cols if c not in spec.cells and c not in ("method", "exp")]
    labels = {**{c: cell.label or c for c, cell in spec.cells.items()},
              **{c: cell.label or c for c, cell in spec.extra_epoch_cells.items()}}
    nd = {c: cell.decimals for c, cell in {**spec.cells, **spec.extra_epoch_cells}.items()}
    weights = meta_column("weights", paper_cols)
    has_ours = {c: bool(df[f"{c}.n"].fillna(0).astype(int).sum()) for c in value_cols}
    has_paper = {c: bool(df[f"{c}.paper"].notna().any()) for c in value_cols}
    head = id_cols + ["dataset"]
    for c in value_cols:   # a column group shows "ours" and "Δ" only where we have numbers
        head += [f"{labels[c]} paper"] if has_paper[c] else []
        head += [f"{labels[c]} ours", f"{labels[c]} Δ"] if has_ours[c] else []
    if any(has_ours.values()):
        head.append("weights")
    lines = [f"### {spec.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [_fmt_id(r.get(c)) for c in id_cols] + [str(r["dataset"])]
        for c in value_cols:
            n = r.get(f"{c}.n")
            n = 0 if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)
            ours = _fmt(r[f"{c}.ours"], nd[c])
            if n > 1:
                ours = f"{ours} ± {_fmt(r[f'{c}.std'], nd[c])} (n={n})"
            diff = r[f"{c}.diff"]
            if has_paper[c]:
                cells.append(_fmt(r[f"{c}.paper"], nd[c]))
            if has_ours[c]:
                cells += [ours, "-" if diff is None or (isinstance(diff, float) and math.isnan(diff))
                          else f"{diff:+.{nd[c]}f}"]
        if any(has_ours.values()):
            cells.append(_fmt(r.get(weights)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- driver
def make_tables(records_dir: Path, paper_dir: Path, out_dir: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Build every table whose paper file exists; write CSVs, unmatched.csv and README.md under ``out_dir``."""
    records, problems = load_records(records_dir)
    for p in problems:
        log.warning("malformed record: %s", p)
    runs, unmatched = flatten_records(records, problems)
    papers = {spec.name: read_paper_csv(paper_dir / f"{spec.name}.csv")[0]
              for spec in TABLES if (paper_dir / f"{spec.name}.csv").exists()}
    mark_ablations(runs, {e for spec in TABLES if spec.key == "exp" and spec.name in papers
                          for e in papers[spec.name]["exp"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    used_all: set[int] = set()
    tables: dict[str, pd.DataFrame] = {}
    md = ["# LEWEL reproduction: our numbers beside the paper's", "",
          f"Generated by `make tables` (`python -m tools.make_tables`) from {len(records)} records in "
          f"`{records_dir}`. Each cell group: the paper's value, ours (mean ± sample std over n runs), and "
          "ours - paper. Rows with dataset `mini` come from the embedded mini benchmark and are not comparable "
          "to the paper. Source: `lewel` = LEWEL's own numbers (`mcl` = MCL's in MCL's tables), `reproduced` = the "
          "paper's `*` (MCL: the authors' own fine-tuning), `cited` = `†` (MCL: cited from the source papers), "
          "`original` = other papers' own numbers, `ours` = a row only we have. `weights`: what the evaluated "
          "models took from the checkpoint (`trunk`, or the trunk and transfer-bundle parts such as `fpn`).", ""]
    for spec in TABLES:
        if spec.name not in papers:
            log.warning("no paper data %s; skipping %s", paper_dir / f"{spec.name}.csv", spec.name)
            continue
        paper = papers[spec.name]
        df, used = build_table(spec, paper, runs)
        used_all |= used
        tables[spec.name] = df
        df.to_csv(out_dir / f"{spec.name}.csv", index=False)
        md.append(to_markdown(spec, df, list(paper.columns)))
    extra = extra_table(runs, used_all)
    if not extra.empty:
        extra.to_csv(out_dir / "other_results.csv", index=False)
        md += ["### Other results (no paper table: kNN, training speed outside Table 9)", "", extra.to_markdown(index=False)
               if _has_tabulate() else extra.to_string(index=False), ""]
    # records none of the tables nor the extra list took (e.g. IN-100 runs of an unknown ablation)
    placed_paths = {runs[i].path for i in used_all} | set(extra.get("files", pd.Series(dtype=object)).explode())
    for i, r in enumerate(runs):
        if i not in used_all and r.path not in placed_paths:
            unmatched.append({"file": r.path, "reason": f"no table row for eval {r.eval} / exp {r.exp} "
                                                        f"(metric {r.metric})"})
    um = pd.DataFrame(unmatched, columns=["file", "reason"]).drop_duplicates()
    um.to_csv(out_dir / "unmatched.csv", index=False)
    if not um.empty:
        md += ["### Unmatched records", "", *[f"- `{r.file}`: {r.reason}" for r in um.itertuples()], ""]
    (out_dir / "README.md").write_text("\n".join(md))
    return tables, um


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def extra_table(runs: list[Run], used: set[int]) -> pd.DataFrame:
    """kNN results (no paper table shows them) and the training speed of runs outside Table 9 (e.g. the
    ablations'), aggregated per setting."""
    rows = [r for i, r in enumerate(runs) if i not in used
            and r.eval in ("knn", "pretrain")]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame([r.__dict__ for r in rows])
    df["epochs"] = df["epochs"].astype(object)
    g = df.groupby(["eval", "protocol", "method", "exp", "dataset", "metric", "group"], dropna=False, sort=True)
    out = g["value"].agg(ours="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else None, n="count").reset_index()
    out["epochs"] = g["epochs"].first().values
    out["files"] = g["path"].agg(list).values
    out["ours"] = out["ours"].round(2)
    out["std"] = pd.to_numeric(out["std"]).round(2)
    out["hardware"] = g["hardware"].first().values
    return out[["eval", "protocol", "method", "exp", "epochs", "dataset", "metric", "ours", "std", "n", "group",
                "hardware", "files"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.make_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", default=None, help="records folder (default results/records or $LEWEL_RESULTS_DIR/records)")
    p.add_argument("--paper", default=str(PAPER_DIR), help="paper data folder (default results/paper)")
    p.add_argument("--out", default=str(TABLES_DIR), help="output folder (default results/tables)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any record is malformed or unmatched")
    p.add_argument("--print", action="store_true", help="print the Markdown rendering")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    records_dir = Path(args.records) if args.records else default_records_dir()
    out = Path(args.out)
    try:
        tables, um = make_tables(records_dir, Path(args.paper), out)
    except PaperFileError as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    for r in um.itertuples():
        log.warning("unmatched record %s: %s", r.file, r.reason)
    log.info("wrote %d tables to %s (%d unmatched records, see unmatched.csv)", len(tables), out, len(um))
    if args.print:
        print((out / "README.md").read_text())
    if args.strict and not um.empty:
        log.error("--strict: %d records could not be placed", len(um))
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
