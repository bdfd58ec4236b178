"""The paper's Fig. 5: alignment maps W predicted by a LEWEL checkpoint.

    python -m tools.visualize_alignment runs/lewel_m/checkpoint.pth data/mini/imagenet/val results/figures/align.png

One row per image: the input (resized, centre-cropped), an augmented view drawn with the checkpoint's own
pretraining augmentation (first view of its pair), then the ``--maps`` strongest alignment maps of that
view overlaid on it. W comes from the online coupled head (``pretrain.heads.CoupledHead`` returns
``(z, z_aligned, W)`` with W of shape (B, d, HW), each map a softmax over positions, Sec. 3.2); "strongest"
= the largest peak value (the most concentrated maps). The model is rebuilt from the checkpoint's saved
config through the method registry, so any LEWEL_M / LEWEL_B checkpoint of ``make pretrain`` works.
"""
from __future__ import annotations

import dataclasses

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("tools.visualize_alignment")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class AlignmentError(ValueError):
    """The checkpoint is not a LEWEL pretraining checkpoint (the message says what it is)."""


def load_lewel(ckpt: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the pretraining method from ``ckpt['config']`` and load its online weights (eval mode)."""
    from pretrain.methods import METHODS

    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise AlignmentError(f"{ckpt}: not a full pretraining checkpoint (need 'model' and 'config'; "
                             f"backbone.pth files have no head: use runs/<exp>/checkpoint.pth)")
    cfg = ck["config"]
    if not str(cfg.get("method", "")).startswith("lewel"):
        raise AlignmentError(f"{ckpt}: method {cfg.get('method')!r} has no alignment maps (need lewel_m or lewel_b)")
    method = METHODS.get(cfg["method"])(cfg)
    missing, unexpected = method.load_state_dict(ck["model"], strict=False)
    missing = [k for k in missing if not k.startswith(("target.", "queue"))]
    if missing or unexpected:
        raise AlignmentError(f"{ckpt}: weights do not fit the {cfg['method']} model: {len(missing)} missing "
                             f"(first {missing[:3]}), {len(unexpected)} unexpected (first {unexpected[:3]})")
    method.eval()
    return method, cfg


def list_images(spec: str | Path, n: int, seed: int) -> list[Path]:
    """Image files: a file, or a folder searched recursively (``n`` of them picked with ``seed``)."""
    p = Path(spec)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"images: {p} is neither an image file nor a folder")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXT)
    if not files:
        raise FileNotFoundError(f"images: no image files ({', '.join(sorted(IMAGE_EXT))}) under {p}")
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))
    return [files[i] for i in idx]


def _denorm(x: torch.Tensor) -> np.ndarray:
    from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD

    m = torch.tensor(IMAGENET_MEAN)[:, None, None]
    s = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


@torch.no_grad()
def alignment_maps_for(method: torch.nn.Module, view: torch.Tensor) -> torch.Tensor:
    """W of one normalised view (3, S, S): (d, h, w) maps of the online coupled head."""
    from lewel_bench.models import backbone_features

    feat = backbone_features(method.online.backbone, view[None])["res5"]
    _, _, W = method.online.head(feat)
    h, w = feat.shape[2], feat.shape[3]
    W = W[0]
    # the head returns W as (HW, d) or (d, HW): the positions axis is the one each map sums to 1 over
    if W.shape[0] == h * w and (W.shape[1] != h * w or torch.allclose(W.sum(0), torch.ones(W.shape[1]), atol=1e-4)):
        W = W.t()
    if W.shape[1] != h * w:
        raise AlignmentError(f"alignment maps of shape {tuple(W.shape)} do not match the {h}x{w} feature map")
    return W.reshape(W.shape[0], h, w)


def strongest(maps: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` maps with the largest peak (each map sums to 1, so a high peak = concentrated)."""
    peaks = maps.flatten(1).max(1).values
    return peaks.argsort(descending=True)[:k].tolist()


def draw(ckpt: str | Path, images: str | Path, out: str | Path, n_images: int = 4, n_maps: int = 4,
         seed: int = 0, size: int | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from pretrain.augment import build_views, eval_transform, seeded, view_specs

    method, cfg = load_lewel(ckpt)
    aug = cfg.get("aug", {})
    size = int(size or aug.get("size", 224))
    spec = view_specs(aug)[0]
    view_tf = build_views([dataclasses.replace(spec, size=size)])[0]
    in_tf = eval_transform(size)
    files = list_images(images, n_images, seed)
    fig, axes = plt.subplots(len(files), 2 + n_maps, figsize=(2.0 * (2 + n_maps), 2.0 * len(files)), squeeze=False)
    for r, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        x_in = in_tf(img)
        view = seeded(lambda: view_tf(img), seed * 1000 + r)
        maps = alignment_maps_for(method, view)
        idx = strongest(maps, n_maps)
        up = F.interpolate(maps[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        axes[r, 0].imshow(_denorm(x_in))
        axes[r, 1].imshow(_denorm(view))
        for c, k in enumerate(idx):
            m = up[k]
            m = (m - m.min()) / (m.max() - m.min() + 1e-12)
            axes[r, 2 + c].imshow(_denorm(view))
            axes[r, 2 + c].imshow(m.numpy(), cmap="jet", alpha=0.5)
            axes[r, 2 + c].set_title(f"W[{k}] peak {maps[k].max():.2f}", fontsize=7)
        axes[r, 0].set_ylabel(f.name, fontsize=7)
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 1].set_title("augmented view", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    meta = ck.get("meta", {})
    fig.suptitle(f"Alignment maps W of {cfg['method']} ({meta.get('exp', Path(ckpt).parent.name)}, "
                 f"epoch {ck.get('epoch', '?')} of {cfg.get('epochs', '?')}; {Path(ckpt).name})", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    log.info("wrote %s (%d images x %d maps)", out, len(files), n_maps)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.visualize_alignment", description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", help="full LEWEL pretraining checkpoint (runs/<exp>/checkpoint.pth)")
    p.add_argument("images", help="an image file or a folder (searched recursively)")
    p.add_argument("out", help="output PNG (e.g. results/figures/lewel_m_alignment.png)")
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--maps", type=int, default=4, help="alignment maps per image (the strongest)")
    p.add_argument("--size", type=int, default=None, help="view size (default: the checkpoint's aug.size)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        draw(args.ckpt, args.images, args.out, args.num_images, args.maps, args.seed, args.size)
    except (AlignmentError, FileNotFoundError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
