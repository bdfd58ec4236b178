"""The report page's HTML: the paper tables with the delta colours, plain tables, the run and record indexes,
figures, and the page around them (inline CSS, no network; the script only adds column sorting)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..records import record_data, record_weights
from ..utils import git_commit
from .base import SUFFIXES, _na, _num, _plain, _slug, esc, short_commit
from .runs import RunInfo
from .tables import TableView

#: |ours - paper| at which the delta colour is at full strength (accuracy / AP points).
DELTA_FULL = 5.0
#: the ``source`` tags every paper table shares (each paper's own tag comes from the table declarations)
SOURCES = {"reproduced": "the paper's * (the authors' reproduction)", "cited": "the paper's † (cited)",
           "original": "other papers' own numbers", "ours": "a row only we have"}


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
    trailing = ["data", "weights", "group"] + [c for c in ("hardware", "notes") if c in df.columns
                                              and df[c].map(lambda v: not _na(v)).any()]
    id_cols = [c for c in df.columns if not c.endswith(SUFFIXES) and c not in
               ("dataset", "data", "group", "weights", "hardware", "notes", "method")]
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
    heads = {"data": "data (name:fingerprint)", "weights": "weights", "group": "group", "hardware": "hardware",
             "notes": "notes"}
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



def _metrics_text(m: Any) -> str:
    if not isinstance(m, dict):
        return ""
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
                     for k, v in m.items())



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
                 esc(epochs), esc(it), esc(loss), esc(knn), f'<span class="mono">{esc(short_commit(r.commit))}</span>',
                 f'<span class="mono">{esc(data)}</span>',
                 f'<span class="mono small">{esc(str(r.identity.get("run_id", "")))}</span>', recs, figs or "–"]
        body.append(f'<tr id="run-{esc(_slug(r.name))}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="index sortable" data-table="runs"><thead><tr>'
            f'{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def render_records(records: list[dict], links: dict[str, str]) -> str:
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
        method = str(r.get("method")) + (f" (row {r['row']})" if r.get("row") else "")
        cells = [str(i), esc(str(r.get("eval"))), esc(str(r.get("protocol"))), esc(method),
                 esc(str(r.get("pretrain_exp"))), esc(_plain(r.get("pretrain_epochs"))), esc(_plain(r.get("seed"))),
                 esc(_metrics_text(r.get("metrics"))), status, f'<span class="mono">{esc(record_data(r))}</span>',
                 f'<span class="mono">{esc(record_weights(r))}</span>',
                 f'<span class="mono">{esc(short_commit(r.get("git_commit")))}</span>',
                 f'<span class="mono small">{esc(str(r.get("group", ""))[:12])}</span>', link]
        body.append(f'<tr id="rec-{i}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="index sortable" data-table="records"><thead><tr>'
            f'{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')



def _img(src: str, alt: str, caption: str, anchor: str) -> str:
    return (f'<figure id="{esc(anchor)}"><a href="{esc(src)}"><img src="{esc(src)}" alt="{esc(alt)}" '
            f'loading="eager"></a><figcaption>{caption}</figcaption></figure>')



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
                curves_html: str, align_html: str, cost_html: str, sources: dict[str, str],
                own_sources: dict[str, str] | None = None) -> str:
    """The whole page (``own_sources``: each paper's own ``source`` tag -> whose numbers)."""
    sources_legend = {**{k: f"{v}'s own numbers" for k, v in (own_sources or {}).items()}, **SOURCES}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    legend = ('<p class="legend">Each column group: the paper\'s value, ours (mean ± sample std, <i>n</i> runs of one '
              'group), Δ = ours − paper: <span class="swatch" style="background:rgba(22,163,74,0.5)"></span>above '
              'the paper, <span class="swatch" style="background:rgba(220,38,38,0.5)"></span>below, stronger with '
              f'|Δ| (full at {DELTA_FULL:g} points). Rows: <code>paper</code> = a row of the paper (ours fill it only '
              'from real data in the paper\'s settings), else the dataset of our extra row (<code>mini</code> rows '
              'are never compared with the paper). Source: '
              + "; ".join(f"<code>{k}</code> = {esc(v)}" for k, v in sources_legend.items()) +
              '. <i>data</i>: the data our numbers come from (name:fingerprint); <i>weights</i>: what the '
              'evaluated model loaded from the checkpoint; <i>notes</i>: why a row of ours is not in the paper\'s '
              'settings (backbone, overrides, unfinished pretraining), or the <code>--row</code> a published '
              'checkpoint fills.</p>')
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
<h1>lewel-bench: our numbers beside the papers'</h1>
<p class="meta">Generated {esc(now)} at commit <code>{esc(short_commit(git_commit()))}</code> by
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

