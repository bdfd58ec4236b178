"""Loss, learning-rate, EMA-momentum and kNN accuracy curves from pretraining metrics logs (``make curves``,
``python -m tools.plot_curves``, and the report's curves).

Each input is a JSON-lines log (``pretrain``: lines with ``iter``, ``epoch``, ``loss``, ``lr``, ``momentum`` and
the method's loss terms ``loss_*`` such as ``loss_g`` / ``loss_a``; kNN lines with ``knn_top1``). Several logs
are compared on the same axes: overlaid (default), or one row per log (``--rows``) with every column sharing
its x and y axes, so equal heights mean equal values. Panels: loss and its terms vs iteration, lr vs
iteration, EMA momentum vs iteration, kNN top-1 vs epoch.

The kNN panel has a random-init reference line: the kNN top-1 of a random-init backbone on the *same data*,
taken from the result records (eval ``knn``, method ``random``, the run's data fingerprint from its
``identity.json``; the same arch and k when both sides say), else given with ``--random-knn``; without one the
legend says so and the panel says why (no number is made up). Its y-range spans at least
:data:`KNN_MIN_SPAN` points, so a 1-point change does not look steep. Malformed lines are reported with their line number, not skipped silently.
"""
from __future__ import annotations

import io
import json
import logging
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LewelError

log = logging.getLogger(__name__)

#: The kNN panel's y-range spans at least this many accuracy points.
KNN_MIN_SPAN = 10.0
PANELS = ("loss", "lr", "momentum", "knn")
TERM_STYLES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 1)))


class MetricsError(LewelError, ValueError):
    """A metrics log cannot be read (the message names the file and line)."""


def read_metrics(path: str | Path) -> pd.DataFrame:
    """All JSON lines of ``path`` as a DataFrame (a bad line -> ``MetricsError`` naming file and line)."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"{path}: no such metrics log (runs/<EXP>/metrics.jsonl is written by make pretrain)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{path}:{n}: not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise MetricsError(f"{path}:{n}: expected a JSON object")
        rows.append(obj)
    if not rows:
        raise MetricsError(f"{path}: empty metrics log")
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the random-init reference
def run_info(run_dir: str | Path) -> dict[str, Any]:
    """What identifies a pretraining run folder's data and kNN monitor: ``fingerprint``, ``data_name`` (from
    ``identity.json``), ``arch``, ``k``, ``method`` (from ``config.yaml``); keys are missing when unknown."""
    run_dir = Path(run_dir)
    info: dict[str, Any] = {}
    try:
        ident = json.loads((run_dir / "identity.json").read_text())
        data = (ident.get("identity") or {}).get("data") or {}
        if data.get("fingerprint"):
            info["fingerprint"] = str(data["fingerprint"])
            info["data_name"] = str(data.get("name", "?"))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        for key, val in (("arch", cfg.get("arch")), ("k", (cfg.get("knn") or {}).get("k")),
                         ("method", cfg.get("method"))):
            if val is not None:
                info[key] = val
    except (OSError, ValueError, AttributeError, ImportError):
        pass
    return info


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def random_knn_reference(records: Iterable[dict], fingerprint: str | None, arch: str | None = None,
                         k: int | None = None) -> tuple[float, str] | None:
    """(mean kNN top-1, description) of the records of a random-init backbone evaluated by ``eval_knn`` on the
    data with ``fingerprint`` (and the same ``arch`` / ``k`` where both sides say), or None when there is none."""
    if not fingerprint:
        return None
    vals = []
    for r in records:
        if r.get("eval") != "knn" or r.get("method") != "random" or r.get("status", "ok") != "ok":
            continue
        data = r.get("data") if isinstance(r.get("data"), dict) else {}
        if data.get("fingerprint") != fingerprint:
            continue
        if arch and r.get("arch") and r["arch"] != arch:
            continue
        if k is not None and r.get("k") is not None and int(r["k"]) != int(k):
            continue
        top1 = (r.get("metrics") or {}).get("top1")
        if _finite(top1):
            vals.append(float(top1))
    if not vals:
        return None
    n = len(vals)
    return sum(vals) / n, f"random init (kNN record{'s' if n > 1 else ''}, n={n})"


# --------------------------------------------------------------------------- figure
@dataclass
class Curve:
    """One run's log, its legend name and its random-init kNN reference (None: not known)."""
    name: str
    df: pd.DataFrame
    random_knn: float | None = None
    random_note: str = ""


def loss_terms(df: pd.DataFrame) -> list[str]:
    """The logged loss terms (``loss_*`` columns with values), e.g. ``loss_a``, ``loss_g``."""
    return sorted(c for c in df.columns if c.startswith("loss_") and df[c].notna().any())


def _series(df: pd.DataFrame, y: str, x: str = "iter") -> pd.DataFrame:
    if y not in df or x not in df:
        return df.iloc[0:0]
    return df.dropna(subset=[y, x]).sort_values(x)


def knn_ylim(values: Sequence[float], min_span: float = KNN_MIN_SPAN) -> tuple[float, float]:
    """A y-range around ``values`` spanning at least ``min_span`` points, padded, within [0, 100]."""
    vals = [float(v) for v in values if _finite(v)]
    if not vals:
        return 0.0, 100.0
    lo, hi = min(vals), max(vals)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    if lo < 0:
        lo, hi = 0.0, max(hi - lo, min_span)
    if hi > 100:
        lo, hi = min(lo - (hi - 100), 100 - min_span), 100.0
    return max(lo, 0.0), min(hi, 100.0)


def _range(vals: list[float], pad: float = 0.05, floor: float | None = None) -> tuple[float, float] | None:
    vals = [v for v in vals if _finite(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    span = hi - lo or max(abs(hi), 1e-3) * 0.1
    lo, hi = lo - pad * span, hi + pad * span
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi


def shared_limits(curves: Sequence[Curve]) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Per panel, the x and y limits that hold every curve (and reference line): figures drawn with them
    (one per run, or one row per run) can be compared by eye."""
    def col(c: str) -> list[float]:
        return [float(v) for cv in curves for v in (cv.df[c].dropna() if c in cv.df else [])]

    loss = col("loss") + [v for cv in curves for t in loss_terms(cv.df) for v in cv.df[t].dropna()]
    knn = col("knn_top1") + [cv.random_knn for cv in curves if cv.random_knn is not None]
    iters = col("iter")
    knn_x = [float(v) for cv in curves for v in _series(cv.df, "knn_top1", "epoch")["epoch"]] if any(
        "epoch" in cv.df for cv in curves) else []
    xi = (0.0, max(iters)) if iters else None
    return {"loss": {"x": xi, "y": _range(loss)},
            "lr": {"x": xi, "y": _range(col("lr"), floor=0.0)},
            "momentum": {"x": xi, "y": _range(col("momentum"))},
            "knn": {"x": (0.0, max(knn_x) + 0.5) if knn_x else None, "y": knn_ylim(knn)}}


def _draw(axes: dict[str, Any], cv: Curve, color: Any, drawn_refs: set, label_prefix: str) -> None:
    name = label_prefix
    d = _series(cv.df, "loss")
    if len(d):
        axes["loss"].plot(d["iter"], d["loss"], color=color, label=f"{name} loss")
        for term, style in zip(loss_terms(cv.df), TERM_STYLES * 4):
            dt = _series(cv.df, term)
            axes["loss"].plot(dt["iter"], dt[term], linestyle=style, color=color, alpha=0.8, label=f"{name} {term}")
    d = _series(cv.df, "lr")
    if len(d):
        axes["lr"].plot(d["iter"], d["lr"], color=color, label=name)
    d = _series(cv.df, "momentum")
    if len(d):
        axes["momentum"].plot(d["iter"], d["momentum"], color=color, label=name)
    x = "epoch" if "epoch" in cv.df else "iter"
    d = _series(cv.df, "knn_top1", x)
    ax = axes["knn"]
    if len(d):
        ax.plot(d[x], d["knn_top1"], "o-", color=color, label=name)
    if cv.random_knn is not None:
        key = round(float(cv.random_knn), 6)
        if key not in drawn_refs:
            drawn_refs.add(key)
            ax.axhline(cv.random_knn, linestyle="--", color="0.35", linewidth=1.2,
                       label=f"{cv.random_note or 'random init'}: {cv.random_knn:.1f}")
    else:
        ax.plot([], [], " ", label=f"{name}: no random-init reference")


def figure(curves: Sequence[Curve], layout: str = "overlay",
           limits: dict[str, dict[str, tuple[float, float] | None]] | None = None, title: str | None = None):
    """The matplotlib figure: ``overlay`` (one row of 4 panels, every run on them) or ``rows`` (one row per
    run, each column sharing x and y). ``limits`` (:func:`shared_limits`, default: of ``curves``) fixes the
    axes, e.g. to the same ranges as other figures of a comparison."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if layout not in ("overlay", "rows"):
        raise ValueError(f"layout {layout!r}: expected 'overlay' or 'rows'")
    limits = limits or shared_limits(curves)
    nrows = len(curves) if layout == "rows" else 1
    fig, grid = plt.subplots(nrows, len(PANELS), figsize=(18, 3.6 * nrows + 0.4), squeeze=False,
                             sharex="col" if nrows > 1 else False, sharey="col" if nrows > 1 else False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn: list[set] = [set() for _ in range(nrows)]
    for i, cv in enumerate(curves):
        r = i if layout == "rows" else 0
        axes = dict(zip(PANELS, grid[r]))
        _draw(axes, cv, colors[i % len(colors)], drawn[r], cv.name)
    for r in range(nrows):
        axes = dict(zip(PANELS, grid[r]))
        row_curves = [curves[r]] if layout == "rows" else list(curves)
        axes["loss"].set(xlabel="iteration", ylabel="loss", title="training loss and its terms")
        axes["lr"].set(xlabel="iteration", ylabel="learning rate", title="learning rate")
        axes["momentum"].set(xlabel="iteration", ylabel="EMA momentum", title="target EMA momentum")
        axes["knn"].set(xlabel="epoch", ylabel="top-1 (%)", title="kNN monitor (top-1)")
        if not any("momentum" in cv.df and cv.df["momentum"].notna().any() for cv in row_curves):
            axes["momentum"].text(0.5, 0.5, "no EMA momentum logged", ha="center", va="center",
                                  transform=axes["momentum"].transAxes)
        if not any("knn_top1" in cv.df and cv.df["knn_top1"].notna().any() for cv in row_curves):
            axes["knn"].text(0.5, 0.5, "no kNN evaluations logged", ha="center", va="center",
                             transform=axes["knn"].transAxes)
        notes = list(dict.fromkeys(f"{cv.name}: {cv.random_note}" if len(row_curves) > 1 else cv.random_note
                                   for cv in row_curves if cv.random_knn is None and cv.random_note))
        if notes:  # why there is no reference line (the legend says that there is none)
            axes["knn"].text(0.02, 0.02, "\n".join(textwrap.fill(n, 48) for n in notes), fontsize=6.5,
                             color="0.3", va="bottom", transform=axes["knn"].transAxes)
        for p, ax in axes.items():
            lim = limits.get(p, {})
            if lim.get("x"):
                ax.set_xlim(*lim["x"])
            if lim.get("y"):
                ax.set_ylim(*lim["y"])
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if layout == "rows":
            axes["loss"].annotate(curves[r].name, xy=(0, 1.12), xycoords="axes fraction", fontsize=10,
                                  fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_png(fig, out: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as a PNG, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(Path(out), buf.getvalue())


def curves_for(logs: Sequence[str | Path], labels: Sequence[str] | None = None,
               random_knn: float | Sequence[float | None] | None = None,
               records: Iterable[dict] | None = None) -> list[Curve]:
    """A :class:`Curve` per log. The random-init reference: looked up in ``records`` by each run folder's data
    fingerprint (:func:`random_knn_reference`), else ``random_knn`` (one value for every log, or one per log),
    else none."""
    if random_knn is None or isinstance(random_knn, (int, float)):
        refs: list[float | None] = [random_knn] * len(logs)  # type: ignore[list-item]
    else:
        refs = list(random_knn)
        if len(refs) != len(logs):
            raise ValueError(f"random_knn: {len(refs)} values for {len(logs)} logs")
    records = list(records) if records is not None else None
    out = []
    for i, p in enumerate(logs):
        df = read_metrics(p)
        name = labels[i] if labels else Path(p).parent.name or Path(p).stem
        info = run_info(Path(p).parent)
        found = random_knn_reference(records, info.get("fingerprint"), info.get("arch"), info.get("k")) \
            if records is not None else None
        if found:
            ref, note = found
        elif refs[i] is not None:
            ref, note = float(refs[i]), "random init (given)"
        elif not info.get("fingerprint"):
            ref, note = None, "the run's data fingerprint is unknown (no identity.json beside its log)"
        else:
            ref, note = None, (f"no kNN record of method random on data {info.get('data_name', '?')}:"
                               f"{info['fingerprint'][:8]} (eval_knn --ckpt random:<arch>, or --random-knn)")
        out.append(Curve(name, df, ref, note))
    return out


def plot(logs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
         random_knn: float | Sequence[float | None] | None = None, records: Iterable[dict] | None = None,
         layout: str = "overlay", limits: dict | None = None, title: str | None = None) -> Path:
    """Draw the curves of ``logs`` into the PNG ``out`` (see :func:`curves_for`, :func:`figure`)."""
    curves = curves_for(logs, labels, random_knn, records)
    out = save_png(figure(curves, layout, limits, title), out)
    log.info("wrote %s", out)
    return out
