"""Loss, learning-rate and kNN accuracy curves from pretraining metrics logs.

    python -m tools.plot_curves runs/lewel_b/metrics.jsonl results/figures/lewel_b_curves.png
    python -m tools.plot_curves runs/byol/metrics.jsonl runs/lewel_b/metrics.jsonl results/figures/byol_vs_lewel_b.png

Each input is a JSON-lines log (``pretrain``: lines with ``iter``, ``epoch``, ``loss``, ``lr`` and optional
``loss_g`` / ``loss_a``; kNN lines with ``knn_top1``). Several logs are overlaid, labelled by their run folder.
Panels: loss vs iteration (with the global / aligned terms when logged), lr vs iteration, kNN top-1 vs
epoch. Malformed lines are reported with their line number, not skipped silently.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger("tools.plot_curves")


class MetricsError(ValueError):
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


def plot(logs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr, ax_knn) = plt.subplots(1, 3, figsize=(15, 4))
    any_knn = False
    for i, p in enumerate(logs):
        df = read_metrics(p)
        name = labels[i] if labels else Path(p).parent.name or Path(p).stem
        x = "iter" if "iter" in df else None
        if "loss" in df and x:
            d = df.dropna(subset=["loss"]).sort_values(x)
            (line,) = ax_loss.plot(d[x], d["loss"], label=f"{name} loss")
            for term, style in (("loss_g", "--"), ("loss_a", ":")):
                if term in d and d[term].notna().any():
                    ax_loss.plot(d[x], d[term], style, color=line.get_color(), label=f"{name} {term}")
        if "lr" in df and x:
            d = df.dropna(subset=["lr"]).sort_values(x)
            ax_lr.plot(d[x], d["lr"], label=name)
        if "knn_top1" in df and df["knn_top1"].notna().any():
            any_knn = True
            d = df.dropna(subset=["knn_top1"])
            ex = "epoch" if "epoch" in d else x
            ax_knn.plot(d[ex], d["knn_top1"], "o-", label=name)
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss")
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="learning rate")
    ax_knn.set(xlabel="epoch", ylabel="top-1 (%)", title="kNN monitor (k=20)")
    if not any_knn:
        ax_knn.text(0.5, 0.5, "no kNN evaluations logged", ha="center", va="center", transform=ax_knn.transAxes)
    for ax in (ax_loss, ax_lr, ax_knn):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    log.info("wrote %s", out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.plot_curves", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="metrics.jsonl file(s) followed by the output PNG")
    p.add_argument("--labels", nargs="*", default=None, help="legend label per log (default: the run folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args.paths) < 2 or not args.paths[-1].endswith(".png"):
        p.error("give one or more metrics.jsonl files and then the output .png")
    logs, out = args.paths[:-1], args.paths[-1]
    if args.labels and len(args.labels) != len(logs):
        p.error(f"--labels: {len(args.labels)} labels for {len(logs)} logs")
    try:
        plot(logs, out, args.labels)
    except MetricsError as e:
        log.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
