"""One static page of everything the benchmark produced: ``results/report/index.html`` (and its images).

    python -m tools.make_report [--records DIR] [--runs DIR] [--tables DIR] [--out results/report]
                                [--bench bench.json] [--random-knn VALUE] [--no-align]
    make report

The page (``docs/report.md``) has every regenerated paper table (the paper's value, ours as mean ± std with n,
and ours - paper coloured by sign and size; the dataset identity and the weights the evaluation loaded), the
unplaced records, a run index (pretraining runs from ``<runs>/*/identity.json`` + ``config.yaml`` +
``metrics.jsonl``, evaluation records with their metrics, data fingerprint and commit; each links a copy of
its config / record), per-run curves on shared axes (loss terms, lr, EMA momentum, kNN with the random-init
reference), the alignment maps of every LEWEL run with a checkpoint, and cost ratios when a benchmark file
is given. It is self-contained: inline CSS, PNG files under ``img/`` and copies of the linked files under
``files/`` (relative links), nothing fetched from the network; it reads the same without JavaScript (the
script only adds column sorting to the index tables).

Tables are regenerated from ``--records`` into a temporary folder (``tools.make_tables.make_tables``) unless
``--tables`` names a folder ``make tables`` wrote. Bad input (a malformed run file, benchmark file or table)
stops with one line naming the file. Writes are atomic; files under ``img/`` and ``files/`` that this run did
not write are removed. Prints the page's path.
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from lewel_bench.io import atomic_write_bytes, atomic_write_text
from lewel_bench.records import default_records_dir, load_records
from lewel_bench.utils import REPO_ROOT, git_commit, runs_dir

log = logging.getLogger("tools.make_report")

REPORT_DIR = REPO_ROOT / "results" / "report"
SUFFIXES = (".paper", ".ours", ".std", ".n", ".diff")
#: |ours - paper| at which the delta colour is at full strength (accuracy / AP points).
DELTA_FULL = 5.0
SOURCES = {"lewel": "LEWEL's own numbers", "reproduced": "the paper's * (the authors' reproduction)",
           "cited": "the paper's † (cited)", "original": "other papers' own numbers", "ours": "a row only we have"}


class ReportError(ValueError):
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


# --------------------------------------------------------------------------- outputs under the report folder
class Output:
    """The report folder: every file written through here is atomic and remembered (stale ones are removed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[Path] = set()

    def path(self, rel: str) -> Path:
        p = self.root / rel
        self.written.add(p.resolve())
        return p

    def write_bytes(self, rel: str, data: bytes) -> str:
        atomic_write_bytes(self.path(rel), data)
        return rel

    def copy(self, src: Path, rel: str) -> str:
        try:
            return self.write_bytes(rel, src.read_bytes())
        except OSError as e:
            raise ReportError(f"{src}: cannot be read ({e.strerror or e})") from None

    def remove_stale(self, subdirs: Sequence[str] = ("img", "files")) -> int:
        n = 0
        for sub in subdirs:
            d = self.root / sub
            if not d.is_dir():
                continue
            for f in sorted(d.rglob("*"), reverse=True):
                if f.is_file() and f.resolve() not in self.written:
                    f.unlink()
                    n += 1
                elif f.is_dir() and not any(f.iterdir()):
                    f.rmdir()
        return n


# --------------------------------------------------------------------------- runs
@dataclass
class RunInfo:
    path: Path
    name: str
    identity: dict
    cfg: dict
    metrics: pd.DataFrame | None
    commit: str = ""
    records: list[int] = field(default_factory=list)
    curves_img: str = ""
    align_img: str = ""
    align_note: str = ""
    config_link: str = ""

    @property
    def data(self) -> dict:
        return (self.identity.get("identity") or {}).get("data") or {}

    @property
    def fingerprint(self) -> str:
        return str(self.data.get("fingerprint") or "")


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{p}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _checkpoint_commit(run: Path) -> str:
    """The commit the run's weights were trained at (``meta.git`` of backbone.pth, else checkpoint.pth)."""
    import torch

    for name, weights_only in (("backbone.pth", True), ("checkpoint.pth", False)):
        f = run / name
        if not f.is_file():
            continue
        try:
            ck = torch.load(f, map_location="cpu", weights_only=weights_only, mmap=True)
            git = (ck.get("meta") or {}).get("git") if isinstance(ck, dict) else None
            if git:
                return str(git)
        except Exception as e:  # noqa: BLE001 - a commit we cannot read is shown as unknown
            log.warning("%s: cannot read its meta (%s); commit unknown", f, e)
    return ""


def find_runs(root: Path) -> list[RunInfo]:
    """Pretraining run folders under ``root``: ``<root>/<name>/identity.json`` of stage ``pretrain``."""
    import yaml

    from tools.plot_curves import MetricsError, read_metrics

    runs = []
    if not root.is_dir():
        return runs
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        f = d / "identity.json"
        if not f.is_file():
            continue
        ident = _read_json(f)
        if not isinstance(ident, dict):
            raise ReportError(f"{f}: expected a JSON object")
        if (ident.get("identity") or {}).get("stage", "pretrain") != "pretrain":
            continue
        cfg: dict = {}
        cf = d / "config.yaml"
        if cf.is_file():
            try:
                cfg = yaml.safe_load(cf.read_text(encoding="utf-8")) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                raise ReportError(f"{cf}: not readable YAML ({str(e).splitlines()[0]})") from None
            if not isinstance(cfg, dict):
                raise ReportError(f"{cf}: expected a mapping")
        metrics = None
        mf = d / "metrics.jsonl"
        if mf.is_file() and mf.stat().st_size:
            try:
                metrics = read_metrics(mf)
            except MetricsError as e:
                raise ReportError(str(e)) from None
        runs.append(RunInfo(d, d.name, ident, cfg, metrics, commit=_checkpoint_commit(d)))
    return runs


# --------------------------------------------------------------------------- tables
@dataclass
class TableView:
    name: str
    title: str
    df: pd.DataFrame
    value_cols: list[str]
    labels: dict[str, str]
    compare: dict[str, bool] = field(default_factory=dict)   # False: the paper's value is not comparable (no Δ)


def load_tables(records_dir: Path, paper_dir: Path, tables_dir: Path | None) -> tuple[list[TableView], pd.DataFrame,
                                                                                        pd.DataFrame, str]:
    """(tables, unmatched, other results, where they came from): regenerated from the records into a temporary
    folder, or read from ``tables_dir`` (what ``make tables`` wrote)."""
    from tools import make_tables as mt

    if tables_dir is None:
        with tempfile.TemporaryDirectory(prefix="lewel-report-tables-") as tmp:
            try:
                mt.make_tables(records_dir, paper_dir, Path(tmp))
            except mt.PaperFileError as e:
                raise ReportError(str(e)) from None
            views, um, other = _read_tables(Path(tmp), mt)
        return views, um, other, f"regenerated from {records_dir}"
    if not tables_dir.is_dir():
        raise ReportError(f"{tables_dir}: no such tables folder (run make tables, or leave out --tables)")
    views, um, other = _read_tables(tables_dir, mt)
    return views, um, other, f"read from {tables_dir}"


def _csv(p: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(p, dtype=object, keep_default_na=False, na_values=[""]).astype(object)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ReportError(f"{p}: not a readable table ({str(e).splitlines()[0]})") from None


def _read_tables(d: Path, mt: Any) -> tuple[list[TableView], pd.DataFrame, pd.DataFrame]:
    views = []
    for spec in mt.TABLES:
        p = d / f"{spec.name}.csv"
        if not p.is_file():
            continue
        df = _csv(p)
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
    um = _csv(d / "unmatched.csv") if (d / "unmatched.csv").is_file() else pd.DataFrame(columns=["file", "reason"])
    other = _csv(d / "other_results.csv") if (d / "other_results.csv").is_file() else pd.DataFrame()
    return views, um, other


def _float(v: Any, p: Path, col: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ReportError(f"{p}: column {col}: {v!r} is not a number") from None


def delta_style(d: float | None) -> tuple[str, str]:
    """(css class, inline style) of a delta cell: green above the paper, red below, stronger with |d|
    (full at :data:`DELTA_FULL` points)."""
    if d is None or _na(d):
        return "", ""
    if d == 0:
        return "d0", ""
    a = 0.15 + 0.70 * min(abs(d) / DELTA_FULL, 1.0)
    rgb = "22,163,74" if d > 0 else "220,38,38"
    return ("dpos" if d > 0 else "dneg"), f"background-color:rgba({rgb},{a:.2f})"


def _ours_cell(mean: Any, std: Any, n: Any) -> str:
    if _na(mean):
        return '<td class="ours na">–</td>'
    n = 0 if _na(n) else int(float(n))
    s = _num(mean)
    if not _na(std):
        s += f" ± {_num(std)}"
    return f'<td class="ours">{s} <span class="n">n={n}</span></td>'


def label_html(label: str) -> str:
    """A column label with the paper's notation: ``AP^bb_50`` -> AP<sup>bb</sup><sub>50</sub>."""
    if "^" not in label:
        return esc(label)
    base, _, rest = label.partition("^")
    sup, _, sub = rest.partition("_")
    return f"{esc(base)}<sup>{esc(sup)}</sup>" + (f"<sub>{esc(sub)}</sub>" if sub else "")


def render_table(t: TableView) -> str:
    df = t.df
    trailing = ["data", "weights", "group"] + [c for c in ("hardware",) if c in df.columns
                                              and df[c].map(lambda v: not _na(v)).any()]
    id_cols = [c for c in df.columns if not c.endswith(SUFFIXES) and c not in
               ("dataset", "data", "group", "weights", "hardware", "method")]
    has_paper = {c: bool(df[f"{c}.paper"].map(lambda v: not _na(v)).any()) for c in t.value_cols}
    has_ours = {c: bool(df[f"{c}.ours"].map(lambda v: not _na(v)).any()) for c in t.value_cols}
    has_delta = {c: has_paper[c] and has_ours[c] and (t.compare.get(c, True) or bool(
        df[f"{c}.diff"].map(lambda v: not _na(v)).any())) for c in t.value_cols}
    shown = [c for c in t.value_cols if has_paper[c] or has_ours[c]]
    n_ours_rows = int(sum(df[[f"{c}.ours" for c in t.value_cols]].map(lambda v: not _na(v)).any(axis=1)))
    datas = sorted({d for v in df["data"] if not _na(v) for d in str(v).split()})
    weights = sorted({w for v in df["weights"] if not _na(v) for w in str(v).split()})
    ident = (f'<p class="ident">Our numbers in this table: <b>{n_ours_rows}</b> row(s); data '
             f'{", ".join(f"<code>{esc(d)}</code>" for d in datas) or "–"}; weights loaded '
             f'{", ".join(f"<code>{esc(w)}</code>" for w in weights) or "–"}.</p>' if n_ours_rows else
             '<p class="ident none">No records match this table yet: the paper\'s numbers only '
             '(data: –, weights: –).</p>')
    h1 = [f'<th rowspan="2">{esc(c)}</th>' for c in id_cols] + ['<th rowspan="2">rows</th>']
    h2 = []
    for c in shown:
        span = int(has_paper[c]) + int(has_ours[c]) + int(has_delta[c])
        h1.append(f'<th colspan="{span}" class="grp">{label_html(t.labels.get(c, c))}</th>')
        h2 += ['<th class="sub">paper</th>'] if has_paper[c] else []
        h2 += ['<th class="sub">ours</th>'] if has_ours[c] else []
        h2 += ['<th class="sub">Δ</th>'] if has_delta[c] else []  # a Δ needs both, and comparable numbers
    heads = {"data": "data (name:fingerprint)", "weights": "weights", "group": "group", "hardware": "hardware"}
    h1 += [f'<th rowspan="2">{heads[c]}</th>' for c in trailing]
    rows = []
    for _, r in df.iterrows():
        src = _plain(r.get("source"))
        cells = [f"<td>{esc(_plain(r.get(c)))}</td>" for c in id_cols]
        cells.append(f'<td class="ds">{esc(_plain(r.get("dataset")))}</td>')
        for c in shown:
            if has_paper[c]:
                cells.append(f'<td class="paper">{_num(r[f"{c}.paper"])}</td>')
            if has_ours[c]:
                cells.append(_ours_cell(r[f"{c}.ours"], r[f"{c}.std"], r[f"{c}.n"]))
            if has_delta[c]:
                d = r[f"{c}.diff"]
                cls, style = delta_style(None if _na(d) else float(d))
                if _na(d):
                    cells.append('<td class="delta na">–</td>')
                else:
                    tip = f"ours {float(r[f'{c}.ours']):.2f} − paper {float(r[f'{c}.paper']):.2f} = {float(d):+.2f}"
                    cells.append(f'<td class="delta {cls}" style="{style}" title="{esc(tip)}" '
                                 f'data-delta="{float(d):.4f}">{float(d):+.1f}</td>')
        for c in trailing:
            cells.append(f'<td class="mono{" small" if c == "group" else ""}">{esc(_plain(r.get(c))) or "–"}</td>')
        rows.append(f'<tr class="src-{esc(_slug(src))}">{"".join(cells)}</tr>')
    return (f'<section class="table" id="t-{esc(t.name)}"><h3>{esc(t.title)}</h3>{ident}'
            f'<div class="scroll"><table class="paper-table" data-table="{esc(t.name)}">'
            f'<thead><tr>{"".join(h1)}</tr><tr>{"".join(h2)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _paths(v: Any) -> list[str]:
    """The record paths of a ``files`` cell (a list, or its text form in a CSV)."""
    import ast

    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    if _na(v):
        return []
    try:
        got = ast.literal_eval(str(v))
        return [str(x) for x in got] if isinstance(got, (list, tuple)) else [str(got)]
    except (ValueError, SyntaxError):
        return [str(v)]


def render_simple(df: pd.DataFrame, cls: str = "", links: dict[str, str] | None = None, table_id: str = "",
                  nd: int = 2) -> str:
    """A plain table of ``df``; ``file`` / ``files`` cells that name a record copied into the report are links."""
    links = links or {}

    def link(x: str) -> str:
        return f'<a href="{esc(links[x])}">{esc(Path(x).name)}</a>' if x in links else esc(Path(x).name)

    head = "".join(f"<th>{esc(str(c))}</th>" for c in df.columns)
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if c == "files":
                cells.append("<td>" + " ".join(link(x) for x in _paths(v)) + "</td>")
            elif c == "file" and not _na(v):
                cells.append(f"<td>{link(str(v))}</td>")
            elif isinstance(v, float) and not _na(v):
                cells.append(f"<td>{_num(v, nd)}</td>")
            else:
                cells.append(f"<td>{esc(_plain(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    tid = f' data-table="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table class="{cls}"{tid}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# --------------------------------------------------------------------------- run index
def _short_commit(c: Any) -> str:
    c = "" if _na(c) else str(c)
    if not c or c == "unknown":
        return "unknown"
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")


def _metrics_text(m: Any) -> str:
    if not isinstance(m, dict):
        return ""
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
                     for k, v in m.items())


def record_data(rec: dict) -> str:
    d = rec.get("data") if isinstance(rec.get("data"), dict) else {}
    name = str(rec.get("dataset") or d.get("name") or "unknown")
    return f"{name}:{str(d['fingerprint'])[:8]}" if d.get("fingerprint") else name


def _records_of(run: RunInfo, records: list[dict]) -> list[int]:
    """Indices of the records that evaluated this run's weights: their checkpoint lies in the run folder, or
    their pretraining experiment has the run's name (or its config's)."""
    base = run.path.resolve()
    names = {run.name, Path(str((run.cfg.get("_meta") or {}).get("config_path") or run.name)).stem}
    out = []
    for i, r in enumerate(records):
        ck = r.get("checkpoint")
        if r.get("method") == "random" or (isinstance(ck, str) and ck.startswith("random:")):
            continue
        inside = False
        if isinstance(ck, str) and ck:
            try:
                inside = Path(ck).resolve().parent == base
            except OSError:
                pass
        if inside or r.get("pretrain_exp") in names:
            out.append(i)
    return out


def render_runs(runs: list[RunInfo]) -> str:
    if not runs:
        return '<p class="none">No pretraining runs (no <code>&lt;runs&gt;/*/identity.json</code>).</p>'
    head = ["run", "method", "arch", "config (overrides)", "epochs", "iterations", "last loss", "last kNN top-1",
            "commit", "data (name:fingerprint)", "run id", "records", "figures"]
    body = []
    for r in runs:
        cfg, df = r.cfg, r.metrics
        meta = cfg.get("_meta") or {}
        cpath = Path(str(meta.get("config_path") or "config.yaml")).name
        ov = " ".join(str(o) for o in meta.get("overrides") or [])
        cfg_cell = (f'<a href="{esc(r.config_link)}">{esc(cpath)}</a>' if r.config_link else esc(cpath)) + \
            (f' <span class="small mono">{esc(ov)}</span>' if ov else "")
        ep_total = cfg.get("epochs")
        done, it, loss, knn = "–", "–", "–", "–"
        if df is not None:
            if "iter" in df and df["iter"].notna().any():
                it = str(int(df["iter"].max()))
            if "knn_top1" in df and df["knn_top1"].notna().any():
                k = df.dropna(subset=["knn_top1"]).iloc[-1]
                knn = f"{float(k['knn_top1']):.1f} (epoch {_plain(k.get('epoch'))})"
            if "loss" in df and df["loss"].notna().any():
                loss = f"{float(df.dropna(subset=['loss']).iloc[-1]['loss']):.3f}"
            train = df.dropna(subset=["loss"]) if "loss" in df else df.iloc[0:0]
            if "epoch" in train and train["epoch"].notna().any():
                done = str(int(train["epoch"].max()) + 1)  # a line of epoch e (0-based) is logged in the (e+1)-th
        epochs = f"{done} / {_plain(ep_total)}" if ep_total is not None else done
        data = f"{r.data.get('name', '?')}:{r.fingerprint[:12]}" if r.fingerprint else "unknown"
        recs = " ".join(f'<a href="#rec-{i}">#{i}</a>' for i in r.records) or "–"
        figs = " ".join(x for x in (f'<a href="#curves-{esc(_slug(r.name))}">curves</a>' if r.curves_img else "",
                                    f'<a href="#align-{esc(_slug(r.name))}">alignment</a>' if r.align_img else "") if x)
        cells = [f'<b>{esc(r.name)}</b>', esc(str(cfg.get("method", "?"))), esc(str(cfg.get("arch", "?"))), cfg_cell,
                 esc(epochs), esc(it), esc(loss), esc(knn), f'<span class="mono">{esc(_short_commit(r.commit))}</span>',
                 f'<span class="mono">{esc(data)}</span>',
                 f'<span class="mono small">{esc(str(r.identity.get("run_id", "")))}</span>', recs, figs or "–"]
        body.append(f'<tr id="run-{esc(_slug(r.name))}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="index sortable" data-table="runs"><thead><tr>'
            f'{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def render_records(records: list[dict], links: dict[str, str]) -> str:
    from tools.make_tables import record_weights

    if not records:
        return '<p class="none">No result records.</p>'
    head = ["#", "eval", "protocol", "method", "pretrain exp", "epochs", "seed", "metrics", "status", "data",
            "weights", "commit", "group", "record"]
    body = []
    order = sorted(range(len(records)), key=lambda i: (str(records[i].get("eval")), str(records[i].get("method")),
                                                       str(records[i].get("pretrain_exp")), i))
    for i in order:
        r = records[i]
        st = str(r.get("status", "ok"))
        status = esc(st) if st == "ok" else f'<span class="bad">{esc(st)}: {esc(str(r.get("failure", "")))}</span>'
        p = str(r.get("_path", ""))
        link = f'<a href="{esc(links[p])}">{esc(Path(p).name)}</a>' if p in links else esc(Path(p).name)
        cells = [str(i), esc(str(r.get("eval"))), esc(str(r.get("protocol"))), esc(str(r.get("method"))),
                 esc(str(r.get("pretrain_exp"))), esc(_plain(r.get("pretrain_epochs"))), esc(_plain(r.get("seed"))),
                 esc(_metrics_text(r.get("metrics"))), status, f'<span class="mono">{esc(record_data(r))}</span>',
                 f'<span class="mono">{esc(record_weights(r))}</span>',
                 f'<span class="mono">{esc(_short_commit(r.get("git_commit")))}</span>',
                 f'<span class="mono small">{esc(str(r.get("group", ""))[:12])}</span>', link]
        body.append(f'<tr id="rec-{i}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="index sortable" data-table="records"><thead><tr>'
            f'{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


# --------------------------------------------------------------------------- figures
def _img(src: str, alt: str, caption: str, anchor: str) -> str:
    return (f'<figure id="{esc(anchor)}"><a href="{esc(src)}"><img src="{esc(src)}" alt="{esc(alt)}" '
            f'loading="eager"></a><figcaption>{caption}</figcaption></figure>')


def make_curves(runs: list[RunInfo], records: list[dict], out: Output, random_knn: float | None) -> str:
    from tools import plot_curves as pc

    have = [r for r in runs if r.metrics is not None]
    if not have:
        return '<p class="none">No metrics logs (<code>metrics.jsonl</code>) to draw.</p>'
    curves = pc.curves_for([r.path / "metrics.jsonl" for r in have], [r.name for r in have], random_knn, records)
    limits = pc.shared_limits(curves)
    parts = ['<p>Every run on the <b>same axes</b> (per panel: the range that holds all runs), so heights '
             'compare across methods. kNN panel: at least a 10-point range; dashed line = the kNN top-1 of a '
             'random-init backbone on the same data (from a record of <code>eval_knn --ckpt random:&lt;arch&gt;'
             '</code>, or <code>--random-knn</code>); without one the panel says why.</p>']
    if len(curves) > 1:
        rel = out.write_bytes("img/curves_all.png", _png(pc.figure(curves, "overlay", limits,
                                                                   "all runs, overlaid")))
        parts.append(_img(rel, "curves of all runs overlaid", "All runs overlaid (same axes as below).",
                          "curves-all"))
    for r, cv in zip(have, curves):
        ref = (f"random-init reference {cv.random_knn:.1f} ({esc(cv.random_note)})" if cv.random_knn is not None
               else f"no random-init reference: {esc(cv.random_note)}")
        rel = out.write_bytes(f"img/curves_{_slug(r.name)}.png",
                              _png(pc.figure([cv], "overlay", limits, f"{r.name} ({r.cfg.get('method', '?')})")))
        r.curves_img = rel
        parts.append(_img(rel, f"curves of {r.name}", f"<b>{esc(r.name)}</b>: loss terms, lr, EMA momentum, kNN; "
                                                       f"{ref}.", f"curves-{_slug(r.name)}"))
    return "".join(parts)


def _png(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def make_alignment(runs: list[RunInfo], out: Output, n_images: int) -> str:
    from tools import visualize_alignment as va

    parts = []
    for r in runs:
        if not str(r.cfg.get("method", "")).startswith("lewel"):
            continue
        ck = r.path / "checkpoint.pth"
        if not ck.is_file():
            r.align_note = "no checkpoint.pth"
            parts.append(f'<p class="none" id="align-{esc(_slug(r.name))}"><b>{esc(r.name)}</b>: no '
                         f'<code>checkpoint.pth</code>, no alignment maps.</p>')
            continue
        rel = f"img/align_{_slug(r.name)}.png"
        try:
            va.draw(ck, None, out.path(rel), n_images=n_images, n_maps=4)
        except (va.AlignmentError, FileNotFoundError, OSError) as e:
            r.align_note = str(e)
            log.warning("alignment maps of %s: %s", r.name, e)
            parts.append(f'<p class="none" id="align-{esc(_slug(r.name))}"><b>{esc(r.name)}</b>: no alignment '
                         f'maps ({esc(str(e))}).</p>')
            continue
        r.align_img = rel
        parts.append(_img(rel, f"alignment maps of {r.name}",
                          f"<b>{esc(r.name)}</b>: per row (labelled with its class) the image with the view's crop "
                          f"(dashed) and the object's outline, the augmented view, and the 4 most concentrated "
                          f"alignment maps W of that view. Images: the val split of the run's pretraining data, "
                          f"picked so that the object is in both views.", f"align-{_slug(r.name)}"))
    if not parts:
        return '<p class="none">No LEWEL runs (alignment maps exist only for lewel_m / lewel_b).</p>'
    return "".join(parts)


# --------------------------------------------------------------------------- cost ratios
def load_bench(path: Path) -> dict:
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object (e.g. {{\"setup\": ..., \"ratios\": [{{...}}]}})")
    return doc


def paper_time_ratios(paper_dir: Path) -> dict[str, float]:
    """LEWEL / baseline time-per-epoch ratios of the paper's Table 9 (``results/paper/table9_time.csv``)."""
    from tools.make_tables import PaperFileError, read_paper_csv

    p = paper_dir / "table9_time.csv"
    if not p.is_file():
        return {}
    try:
        df, _ = read_paper_csv(p)
    except PaperFileError as e:
        raise ReportError(str(e)) from None
    t = {str(r["method"]): r["time_per_epoch_s"] for r in df.to_dict("records") if not _na(r["time_per_epoch_s"])}
    return {f"{a} / {b}": float(t[a]) / float(t[b]) for a, b in (("lewel_b", "byol"), ("lewel_m", "mocov2"))
            if a in t and b in t}


def render_cost(bench: dict | None, bench_path: Path | None, paper: dict[str, float]) -> str:
    parts = []
    if paper:
        parts.append("<p>The paper (Table 9, 8 V100, AMP): " + ", ".join(
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


# --------------------------------------------------------------------------- page
CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--head:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
 margin:0 auto;max-width:1700px;padding:0 24px 48px}
h1{font-size:24px;margin:20px 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid var(--line);
 padding-bottom:4px}h3{font-size:15px;margin:22px 0 4px}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid var(--line);z-index:3}
nav a{margin-right:14px}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
.meta,.ident,.none,figcaption,.legend{color:var(--muted)}
.none{font-style:italic}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.small{font-size:11px}
.scroll{overflow-x:auto;max-width:100%;border:1px solid var(--line);border-radius:4px}
table{border-collapse:collapse;font-size:13px;width:max-content;min-width:100%}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
thead th{background:var(--head);position:sticky;top:0;z-index:1}
th.grp{text-align:center}th.sub{font-weight:normal;color:var(--muted)}
td.paper{color:var(--muted)}td.ours{font-weight:600}td.na{color:#aaa}
.n{font-weight:normal;color:var(--muted);font-size:11px}
tr.src-ours td{background:#fbfbf3}
td.dpos,td.dneg{font-weight:600}
.index td,.index th{text-align:left}
.bad{color:#b42318}
figure{margin:14px 0 22px}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
.swatch{display:inline-block;width:40px;height:12px;vertical-align:middle;margin:0 3px;border:1px solid #ccc}
.js-only{display:none}.js .js-only{display:inline}.js .nojs{display:none}
th.sortable-h{cursor:pointer}
"""

JS = """
document.documentElement.classList.add('js');
(function(){
  function key(td){var t=(td&&td.textContent||'').trim();var f=parseFloat(t.replace(/[^0-9eE+\\-.]/g,''));
    return isNaN(f)||!/^[-+]?[0-9]/.test(t)?t.toLowerCase():f;}
  var tables=document.querySelectorAll('table.sortable');
  for(var i=0;i<tables.length;i++){(function(tb){
    var ths=tb.tHead?tb.tHead.rows[0].cells:[];
    for(var c=0;c<ths.length;c++){(function(col,th){
      th.className+=' sortable-h';th.title='click to sort';var asc=true;
      th.addEventListener('click',function(){
        var body=tb.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
          if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        asc=!asc;for(var r=0;r<rows.length;r++){body.appendChild(rows[r]);}
      });})(c,ths[c]);}
  })(tables[i]);}
})();
"""


def render_page(*, tables: list[TableView], unmatched: pd.DataFrame, other: pd.DataFrame, tables_src: str,
                runs: list[RunInfo], records: list[dict], problems: list[str], links: dict[str, str],
                curves_html: str, align_html: str, cost_html: str, sources: dict[str, str]) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    legend = ('<p class="legend">Each column group: the paper\'s value, ours (mean ± sample std, <i>n</i> runs of one '
              'group), Δ = ours − paper: <span class="swatch" style="background:rgba(22,163,74,0.5)"></span>above '
              'the paper, <span class="swatch" style="background:rgba(220,38,38,0.5)"></span>below, stronger with '
              f'|Δ| (full at {DELTA_FULL:g} points). Rows: <code>paper</code> = a row of the paper (ours fill it only '
              'from real data), else the dataset of our extra row (<code>mini</code> rows are never compared with '
              'the paper). Source: ' + "; ".join(f"<code>{k}</code> = {esc(v)}" for k, v in SOURCES.items()) +
              '. <i>data</i>: the data our numbers come from (name:fingerprint); <i>weights</i>: what the '
              'evaluated model loaded from the checkpoint.</p>')
    tbl = "".join(render_table(t) for t in tables) or '<p class="none">No paper tables (results/paper missing?).</p>'
    if not other.empty:
        tbl += ("<section class=\"table\" id=\"t-other\"><h3>Other results (no paper table: kNN)</h3>"
                + render_simple(other, "other", links, "other_results") + "</section>")
    um_rows = [{"file": r["file"], "reason": r["reason"]} for _, r in unmatched.iterrows()]
    um_html = (render_simple(pd.DataFrame(um_rows).astype(object), "unmatched", links, "unmatched") if um_rows
               else '<p class="none">Every record found its table.</p>')
    nav = " ".join(f'<a href="#{a}">{t}</a>' for a, t in (("tables", "Tables"), ("unmatched", "Unmatched"),
                                                            ("runs", "Runs"), ("records", "Records"),
                                                            ("curves", "Curves"), ("alignment", "Alignment maps"),
                                                            ("cost", "Cost")))
    toc = " · ".join(f'<a href="#t-{esc(t.name)}">{esc(t.name)}</a>' for t in tables)
    src = " · ".join(f"{esc(k)}: <code>{esc(v)}</code>" for k, v in sources.items())
    probs = ("<p class=\"bad\">Malformed record files (listed under Unmatched): " + str(len(problems)) + "</p>"
             if problems else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lewel-bench report</title><style>{CSS}</style></head>
<body>
<h1>lewel-bench: LEWEL reproduction report</h1>
<p class="meta">Generated {esc(now)} at commit <code>{esc(_short_commit(git_commit()))}</code> by
<code>make report</code> (<code>python -m tools.make_report</code>). {len(records)} records, {len(runs)} pretraining
runs, {len(tables)} tables ({esc(tables_src)}). {src}. <span class="nojs">JavaScript is off: everything is here;
only column sorting of the index tables needs it.</span><span class="js-only">Click an index table's header to
sort it.</span></p>
<nav>{nav}</nav>
<h2 id="tables">Paper tables, ours beside the paper's</h2>
{legend}<p class="small">{toc}</p>
{tbl}
<h2 id="unmatched">Unmatched records</h2>
{probs}{um_html}
<h2 id="runs">Run index: pretraining runs</h2>
{render_runs(runs)}
<h2 id="records">Run index: evaluation records</h2>
{render_records(records, links)}
<h2 id="curves">Training curves</h2>
{curves_html}
<h2 id="alignment">Alignment maps (Fig. 5)</h2>
{align_html}
<h2 id="cost">Cost ratios</h2>
{cost_html}
<script>{JS}</script>
</body></html>
"""


def make_report(records_dir: Path, runs_root: Path, out_dir: Path, tables_dir: Path | None = None,
                paper_dir: Path | None = None, bench: Path | None = None, random_knn: float | None = None,
                align: bool = True, align_images: int = 4) -> Path:
    """Write ``out_dir/index.html`` and its files; returns the page's path."""
    from tools.make_tables import PAPER_DIR

    t0 = time.perf_counter()
    paper_dir = paper_dir or PAPER_DIR
    bench_doc = load_bench(bench) if bench else None
    records, problems = load_records(records_dir) if records_dir.is_dir() else ([], [])
    for p in problems:
        log.warning("malformed record: %s", p)
    tables, unmatched, other, tables_src = load_tables(records_dir, paper_dir, tables_dir)
    runs = find_runs(runs_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Output(out_dir)
    links: dict[str, str] = {}
    for r in records:
        p = Path(r["_path"])
        links[str(p)] = out.copy(p, f"files/records/{_slug(p.name)}")
    for r in runs:
        r.records = _records_of(r, records)
        if (r.path / "config.yaml").is_file():
            r.config_link = out.copy(r.path / "config.yaml", f"files/runs/{_slug(r.name)}/config.yaml")
    t_data = time.perf_counter()
    curves_html = make_curves(runs, records, out, random_knn)
    t_curves = time.perf_counter()
    align_html = (make_alignment(runs, out, align_images) if align else
                  '<p class="none">Left out (<code>--no-align</code>).</p>')
    t_align = time.perf_counter()
    page = render_page(tables=tables, unmatched=unmatched, other=other, tables_src=tables_src, runs=runs,
                       records=records, problems=problems, links=links, curves_html=curves_html,
                       align_html=align_html, cost_html=render_cost(bench_doc, bench, paper_time_ratios(paper_dir)),
                       sources={"records": str(records_dir), "runs": str(runs_root), "paper": str(paper_dir)})
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    out.written.add(index.resolve())
    stale = out.remove_stale()
    log.info("report: %d tables, %d records, %d runs, %d files (%d stale removed) in %.1fs (data %.1fs, curves %.1fs, "
             "alignment %.1fs)", len(tables), len(records), len(runs), len(out.written), stale,
             time.perf_counter() - t0, t_data - t0, t_curves - t_data, t_align - t_curves)
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.make_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", default=None, help="records folder (default results/records or "
                                                   "$LEWEL_RESULTS_DIR/records)")
    p.add_argument("--runs", default=None, help="runs folder (default runs/ or $LEWEL_RUNS_DIR)")
    p.add_argument("--tables", default=None, help="a folder make tables wrote (default: regenerate the tables "
                                                  "from --records into a temporary folder)")
    p.add_argument("--paper", default=None, help="paper data folder (default results/paper)")
    p.add_argument("--out", default=str(REPORT_DIR), help="output folder (default results/report)")
    p.add_argument("--bench", default=None, help="a benchmark's JSON file of cost ratios to show")
    p.add_argument("--random-knn", type=float, default=None, metavar="VALUE",
                   help="random-init kNN top-1 for runs that no record (eval knn, method random, same data) gives one")
    p.add_argument("--no-align", action="store_true", help="leave out the alignment maps (they load each checkpoint)")
    p.add_argument("--align-images", type=int, default=4, help="images per alignment figure (default 4)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        index = make_report(Path(args.records) if args.records else default_records_dir(),
                            Path(args.runs) if args.runs else runs_dir(), Path(args.out),
                            Path(args.tables) if args.tables else None, Path(args.paper) if args.paper else None,
                            Path(args.bench) if args.bench else None, args.random_knn, not args.no_align,
                            args.align_images)
    except ReportError as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
