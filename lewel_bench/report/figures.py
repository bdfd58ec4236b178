"""The report's figures: every run's training curves on shared axes, and the alignment maps of the runs whose
method has them (drawn by a function the caller gives: the report library imports no stage)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .base import _slug, esc
from .output import Output
from .render import _img
from .runs import RunInfo

log = logging.getLogger(__name__)


def make_curves(runs: list[RunInfo], records: list[dict], out: Output, random_knn: float | None) -> str:
    from . import curves as pc

    have = [r for r in runs if r.metrics is not None]
    if not have:
        return '<p class="none">No metrics logs (<code>metrics.jsonl</code>) to draw.</p>'
    curves = pc.curves_for([r.path / "metrics.jsonl" for r in have], [r.name for r in have], random_knn, records)
    limits = pc.shared_limits(curves)
    parts = [('<p>Every run on the <b>same axes</b> (per panel: the range that holds all runs), so heights '
             'compare across methods. kNN panel: at least a 10-point range; dashed line = the kNN top-1 of a '
             'random-init backbone on the same data (from a record of <code>eval_knn --ckpt random:&lt;arch&gt;'
             '</code>, or <code>--random-knn</code>); without one the panel says why.</p>')]
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



def make_alignment(runs: list[RunInfo], out: Output, n_images: int, draw: Callable[..., Any],
                   has_maps: Callable[[Mapping[str, Any]], bool], errors: tuple[type[BaseException], ...] = ()) -> str:
    """The alignment maps of every run whose method has them (``has_maps(config)``: the method class's
    ``has_alignment_maps``), drawn by ``draw(checkpoint, images, out_png, n_images=, n_maps=)``; a run it cannot
    draw (``errors``) says why."""
    parts = []
    for r in runs:
        try:
            if not has_maps(r.cfg):
                continue
        except Exception as e:  # noqa: BLE001 - a run of a method this code cannot build: said, not fatal
            r.align_note = f"method {r.cfg.get('method')!r} unknown here ({e})"
            log.warning("alignment maps of %s: %s", r.name, r.align_note)
            continue
        ck = r.path / "checkpoint.pth"
        if not ck.is_file():
            r.align_note = "no checkpoint.pth"
            parts.append(f'<p class="none" id="align-{esc(_slug(r.name))}"><b>{esc(r.name)}</b>: no '
                         f'<code>checkpoint.pth</code>, no alignment maps.</p>')
            continue
        rel = f"img/align_{_slug(r.name)}.png"
        try:
            draw(ck, None, out.path(rel), n_images=n_images, n_maps=4)
        except (*errors, FileNotFoundError, OSError) as e:
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
        return ('<p class="none">No run of a method with alignment maps (a method class\'s '
                '<code>has_alignment_maps</code>: LEWEL_M, LEWEL_B).</p>')
    return "".join(parts)
