"""The paper's Fig. 5: alignment maps W predicted by a LEWEL checkpoint.

    python -m tools.visualize_alignment runs/lewel_m/checkpoint.pth results/figures/align.png
    python -m tools.visualize_alignment runs/lewel_m/checkpoint.pth data/mini/imagenet/val results/figures/align.png

One row per image: the image with the crop of its augmented view (dashed box) and the object's outline, the
augmented view drawn with the checkpoint's own pretraining augmentation (first view of its pair), then the
``--maps`` strongest alignment maps of that view overlaid on it. Each row is labelled with its class: the
image's class folder (ImageNet layout, ``<split>/<wnid>/<file>``) mapped through ``classes.txt`` (lines
``<wnid> <name>``, as the mini generator writes; or ImageNet's ``LOC_synset_mapping.txt``) in the image folder
or up to three folders above it, else the folder name itself.

Images default to the val split (``knn.split``) of the data the checkpoint was pretrained on: its config's
``data.root`` (else the data root in the ``backbone.pth`` meta beside it). They are picked one class after the
other (seeded), keeping an image only when the object is in both views: the image shown, and the augmented
view's crop holding at least ``--min-object`` (default 80 %) of the object (up to ``--tries`` view draws per
image). The object: on the mini data (a ``.complete`` manifest above the images) the class-agnostic
foreground of its shapes, which are uniformly lighter or darker than a smooth grey background (pixels more
than 25 grey levels off a cubic background surface fitted to the rest, after a two-class split; mean IoU
0.94 with the generator's own masks on the mini val set); on other data, where no mask is known, the image's
central region (the middle half in each direction), which is where ImageNet's objects mostly are
(``--object contrast|centre`` forces one).

W comes from the online coupled head (``pretrain.heads.CoupledHead`` returns ``(z, z_aligned, W)`` with W of
shape (B, d, HW), each map a softmax over positions, Sec. 3.2); "strongest" = the largest peak value (the
most concentrated maps). The model is rebuilt from the checkpoint's saved config through the method
registry, so any checkpoint of ``make pretrain`` whose method has alignment maps (its class's
``has_alignment_maps``: LEWEL_M, LEWEL_B) works.
"""
from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lewel_bench.args import COUNT, ArgumentParser, Number, check_path, seed_arg
from lewel_bench.errors import LewelError
from lewel_bench.stage import cli_entry

log = logging.getLogger("tools.visualize_alignment")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CLASS_FILES = ("classes.txt", "LOC_synset_mapping.txt")
MINI_MANIFEST = ".complete"
#: Foreground of the mini shapes: grey levels off the fitted background (the generator's object contrast
#: is 50-100 levels, its background varies smoothly, pixel noise is blurred away first).
FG_THRESHOLD = 25.0


class AlignmentError(LewelError, ValueError):
    """The checkpoint is not a LEWEL pretraining checkpoint (the message says what it is)."""


# --------------------------------------------------------------------------- the model
def _load_ckpt(ckpt: str | Path) -> dict:
    try:
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file: one line naming it
        raise AlignmentError(f"{ckpt}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from None
    return ck


def load_method(ckpt: str | Path, ck: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the pretraining method from ``ckpt['config']`` and load its online weights (eval mode); a method
    whose class has no alignment maps (``has_alignment_maps``) is refused."""
    from pretrain.methods import METHODS, method_class

    ck = _load_ckpt(ckpt) if ck is None else ck
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise AlignmentError(f"{ckpt}: not a full pretraining checkpoint (need 'model' and 'config'; "
                             f"backbone.pth files have no head: use runs/<exp>/checkpoint.pth)")
    cfg = ck["config"]
    try:
        cls = method_class(cfg)
    except LewelError as e:
        raise AlignmentError(f"{ckpt}: {e}") from None
    if not cls.has_alignment_maps:
        with_maps = [n for n in METHODS.names() if METHODS.get(n).has_alignment_maps]
        raise AlignmentError(f"{ckpt}: method {cfg.get('method')!r} has no alignment maps (methods that have: "
                             f"{', '.join(with_maps)})")
    method = cls(cfg)
    missing, unexpected = method.load_state_dict(ck["model"], strict=False)
    missing = [k for k in missing if not k.startswith(("target.", "queue"))]
    if missing or unexpected:
        raise AlignmentError(f"{ckpt}: weights do not fit the {cfg['method']} model: {len(missing)} missing "
                             f"(first {missing[:3]}), {len(unexpected)} unexpected (first {unexpected[:3]})")
    method.eval()
    return method, cfg


# --------------------------------------------------------------------------- images and their classes
def list_images(spec: str | Path, n: int, seed: int) -> list[Path]:
    """Image files: a file, or a folder searched recursively (``n`` of them picked with ``seed``)."""
    files = all_images(spec)
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))
    return [files[i] for i in idx]


def all_images(spec: str | Path) -> list[Path]:
    """Every image file of ``spec`` (a file, or a folder searched recursively), sorted."""
    p = Path(spec)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"images: {p} is neither an image file nor a folder")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXT)
    if not files:
        raise FileNotFoundError(f"images: no image files ({', '.join(sorted(IMAGE_EXT))}) under {p}")
    return files


def _up(p: Path, levels: int) -> list[Path]:
    p = p if p.is_dir() else p.parent
    return [p, *list(p.parents)[:levels]]


def class_names(where: str | Path) -> dict[str, str]:
    """``{wnid: name}`` from the first ``classes.txt`` / ``LOC_synset_mapping.txt`` in ``where`` or up to three
    folders above it (lines ``<wnid> <name>``; for ImageNet's "tench, Tinca tinca" the first name); {} if none."""
    for d in _up(Path(where), 3):
        for name in CLASS_FILES:
            f = d / name
            if not f.is_file():
                continue
            out = {}
            try:
                lines = f.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                log.warning("%s: cannot be read (%s); rows are labelled by folder name", f, e)
                return {}
            for line in lines:
                wnid, _, label = line.strip().partition(" ")
                if wnid and label.strip():
                    out[wnid] = label.split(",")[0].strip()
            return out
    return {}


def class_label(path: Path, names: dict[str, str]) -> str:
    """The class of an image in the ImageNet layout: its folder's name, through ``names`` when listed there."""
    folder = path.parent.name
    return names.get(folder, folder)


def is_mini(where: str | Path) -> bool:
    """Whether ``where`` lies in the embedded mini benchmark (its generator's manifest up to 4 folders above)."""
    return any((d / MINI_MANIFEST).is_file() for d in _up(Path(where), 4))


def _otsu(g: np.ndarray) -> int | None:
    h = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(float)
    p = h / h.sum()
    w, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        sb = (mu[-1] * w - mu) ** 2 / (w * (1 - w))
    if not np.isfinite(sb).any() or np.nanmax(sb) <= 0:
        return None  # a flat image: no two classes
    return int(np.nanargmax(sb))


def foreground_mask(img, threshold: float = FG_THRESHOLD, deg: int = 3, iters: int = 3) -> np.ndarray | None:
    """Class-agnostic foreground of a mini image (an object lighter or darker than a smooth background):
    (H, W) bool, or None when no such object stands out. A two-class split of the blurred grey image starts
    it; then, for either sign, a cubic surface is fitted to the background pixels and the object is what
    differs from it by more than ``threshold`` grey levels; the sign whose background fits best (and touches
    the image border least) wins."""
    from PIL import ImageFilter

    g = np.asarray(img.convert("L").filter(ImageFilter.GaussianBlur(1.5)), np.float64)
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx.ravel() / w - 0.5, yy.ravel() / h - 0.5
    A = np.stack([x ** i * y ** j for i in range(deg + 1) for j in range(deg + 1 - i)], 1)
    t = _otsu(g)
    if t is None:
        return None
    best: tuple[float, np.ndarray] | None = None
    for sign in (1.0, -1.0):
        m = g > t if sign > 0 else g <= t
        r = None
        for _ in range(iters):
            bg = ~m.ravel()
            if bg.sum() < 4 * A.shape[1] or not m.any():
                break
            coef, *_ = np.linalg.lstsq(A[bg], g.ravel()[bg], rcond=None)
            r = (g.ravel() - A @ coef).reshape(h, w)
            m = sign * r > threshold
        if r is None or not m.any() or m.all() or m.mean() < 0.01:
            continue
        border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]]).mean()
        score = float(np.abs(r[~m]).mean()) + 50.0 * float(border)
        if best is None or score < best[0]:
            best = (score, m)
    return None if best is None else best[1]


def centre_mask(img) -> np.ndarray:
    """The middle half of the image in each direction (where no object mask is known)."""
    w, h = img.size
    m = np.zeros((h, w), bool)
    m[h // 4: h - h // 4, w // 4: w - w // 4] = True
    return m


def coverage(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of ``mask`` inside ``box`` (x0, y0, x1, y1; x1, y1 exclusive)."""
    x0, y0, x1, y1 = box
    total = mask.sum()
    return float(mask[y0:y1, x0:x1].sum() / total) if total else 0.0


def view_with_box(view_tf: Any, img) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """``view_tf(img)`` (a ``T.Compose`` starting with ``RandomResizedCrop``) and the crop box it drew
    (x0, y0, x1, y1 in image pixels): the same random draws, in the same order, as calling ``view_tf``."""
    import torchvision.transforms.functional as TF

    ops = view_tf.transforms
    rrc = ops[0]
    i, j, h, w = rrc.get_params(img, rrc.scale, rrc.ratio)
    x = TF.resized_crop(img, i, j, h, w, rrc.size, rrc.interpolation, antialias=rrc.antialias)
    for t in ops[1:]:
        x = t(x)
    return x, (j, i, j + w, i + h)


@dataclasses.dataclass
class Pick:
    """One row of the figure."""
    file: Path
    label: str
    view: torch.Tensor
    box: tuple[int, int, int, int]
    coverage: float
    mask: np.ndarray
    image: Any = None


def class_order(files: Sequence[Path], seed: int) -> list[Path]:
    """``files`` one class folder after the other (round robin; classes and files within each shuffled with
    ``seed``), so the first rows show different classes."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[Path]] = {}
    for f in files:
        by.setdefault(str(f.parent), []).append(f)
    keys = sorted(by)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    queues = [[by[k][i] for i in rng.permutation(len(by[k]))] for k in keys]
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def pick_images(files: Sequence[Path], view_tf: Any, n: int, seed: int = 0, min_object: float = 0.8,
                tries: int = 8, mode: str = "auto", max_candidates: int | None = None) -> tuple[list[Pick], str]:
    """Up to ``n`` images whose augmented view holds at least ``min_object`` of the object (see the module
    docstring), and the criterion in words. When fewer qualify among the candidates, the best-covered others
    fill the rows (their coverage is shown)."""
    from lewel_bench.data import read_image
    from pretrain.augment import seeded

    if mode not in ("auto", "contrast", "centre"):
        raise ValueError(f"object mode {mode!r}: expected auto, contrast or centre")
    use_contrast = mode == "contrast" or (mode == "auto" and bool(files) and is_mini(files[0]))
    names = class_names(files[0]) if files else {}
    order = class_order(files, seed)[: max_candidates or max(60, 20 * n)]
    good: list[Pick] = []
    spare: list[Pick] = []
    used_labels: set[str] = set()
    for r, f in enumerate(order):
        if len(good) >= n:
            break
        try:
            img = read_image(f)  # every image mode the suite's readers take (lewel_bench.data.read_image)
        except OSError as e:
            log.warning("%s: unreadable image skipped (%s)", f, e)
            continue
        mask = foreground_mask(img) if use_contrast else centre_mask(img)
        if mask is None:
            continue
        best: Pick | None = None
        for t in range(tries):
            view, box = seeded(lambda img=img: view_with_box(view_tf, img), seed * 100003 + r * 101 + t)
            cov = coverage(mask, box)
            if best is None or cov > best.coverage:
                best = Pick(f, class_label(f, names), view, box, cov, mask, img)
            if cov >= min_object:
                break
        assert best is not None
        label_new = best.label not in used_labels
        if best.coverage >= min_object and (label_new or len(used_labels) >= len({x.parent for x in files})):
            good.append(best)
            used_labels.add(best.label)
        else:
            spare.append(best)
    if len(good) < n:
        spare.sort(key=lambda p: -p.coverage)
        good += [p for p in spare if p.coverage >= min_object][: n - len(good)]
        good += [p for p in spare if p.coverage < min_object][: n - len(good)]
    what = "the shape's contrast foreground" if use_contrast else "the image's central region"
    return good[:n], f"object = {what}, at least {min_object:.0%} of it inside the view's crop"


def default_images(cfg: dict, ckpt: str | Path) -> Path:
    """The val split (``knn.split``) of the checkpoint's pretraining data: its config's ``data.root`` (relative
    roots: from here, then from the repository), else the data root recorded in ``backbone.pth`` beside it."""
    from lewel_bench.utils import REPO_ROOT

    split = str((cfg.get("knn") or {}).get("split") or "val")
    roots: list[Path] = []
    root = (cfg.get("data") or {}).get("root")
    if root:
        p = Path(root).expanduser()
        roots += [p] if p.is_absolute() else [Path.cwd() / p, REPO_ROOT / p]
    bb = Path(ckpt).parent / "backbone.pth"
    if bb.is_file():
        try:
            meta = torch.load(bb, map_location="cpu", weights_only=True, mmap=True).get("meta") or {}
            if (meta.get("data") or {}).get("root"):
                roots.append(Path(meta["data"]["root"]))
        except Exception as e:  # noqa: BLE001 - only a fallback
            log.debug("%s: no data root in its meta (%s)", bb, e)
    for r in roots:
        if (r / split).is_dir():
            return r / split
    raise AlignmentError(f"{ckpt}: the {split} split of its pretraining data ({root or 'no data.root in its config'}"
                         f"/{split}) is not on this machine; pass an image folder")


def _denorm(x: torch.Tensor) -> np.ndarray:
    from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD

    m = torch.tensor(IMAGENET_MEAN)[:, None, None]
    s = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


@torch.no_grad()
def alignment_maps_for(method: torch.nn.Module, view: torch.Tensor) -> torch.Tensor:
    """W of one normalised view (3, S, S): (d, h, w) maps of the online coupled head."""
    if not getattr(method, "has_alignment_maps", False):
        raise AlignmentError(f"method {method.cfg.get('method')!r} has no alignment maps")
    return method.alignment_maps(view[None])[0]


def strongest(maps: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` maps with the largest peak (each map sums to 1, so a high peak = concentrated)."""
    peaks = maps.flatten(1).max(1).values
    return peaks.argsort(descending=True)[:k].tolist()


def draw(ckpt: str | Path, images: str | Path | None, out: str | Path, n_images: int = 4, n_maps: int = 4,
         seed: int = 0, size: int | None = None, min_object: float = 0.8, tries: int = 8,
         object_mode: str = "auto") -> Path:
    """Draw the figure of ``ckpt`` on ``images`` (None: the val split of its pretraining data) into ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from lewel_bench.io import atomic_write_bytes
    from pretrain.augment import build_views, view_specs

    ck = _load_ckpt(ckpt)
    method, cfg = load_method(ckpt, ck)
    aug = cfg.get("aug", {})
    size = int(size or aug.get("size", 224))
    spec = view_specs(aug)[0]
    view_tf = build_views([dataclasses.replace(spec, size=size)])[0]
    images = Path(images) if images is not None else default_images(cfg, ckpt)
    picks, criterion = pick_images(all_images(images), view_tf, n_images, seed, min_object, tries, object_mode)
    fig, axes = plt.subplots(len(picks), 2 + n_maps, figsize=(2.1 * (2 + n_maps), 2.2 * len(picks) + 0.5),
                             squeeze=False)
    for r, pk in enumerate(picks):
        maps = alignment_maps_for(method, pk.view)
        idx = strongest(maps, n_maps)
        up = F.interpolate(maps[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        ax = axes[r, 0]
        ax.imshow(np.asarray(pk.image))
        ax.contour(pk.mask.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        x0, y0, x1, y1 = pk.box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow",
                               linestyle="--", linewidth=1.2))
        ax.set_ylabel(f"{pk.label}\n({pk.file.name})", fontsize=8)
        axes[r, 1].imshow(_denorm(pk.view))
        axes[r, 1].set_title(f"view: {pk.coverage:.0%} of object", fontsize=7,
                             color="black" if pk.coverage >= min_object else "red")
        for c, k in enumerate(idx):
            m = up[k]
            m = (m - m.min()) / (m.max() - m.min() + 1e-12)
            axes[r, 2 + c].imshow(_denorm(pk.view))
            axes[r, 2 + c].imshow(m.numpy(), cmap="jet", alpha=0.5)
            axes[r, 2 + c].set_title(f"W[{k}] peak {maps[k].max():.2f}", fontsize=7)
    if len(picks):
        axes[0, 0].set_title("image, view crop, object", fontsize=8)
        if axes[0, 1].get_title():
            axes[0, 1].set_title("augmented view\n" + axes[0, 1].get_title(), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    meta = ck.get("meta", {}) if isinstance(ck.get("meta"), dict) else {}
    fig.suptitle(f"Alignment maps W of {cfg['method']} ({meta.get('exp', Path(ckpt).parent.name)}, epoch "
                 f"{ck.get('epoch', '?')} of {cfg.get('epochs', '?')}; {Path(ckpt).name}) on {images}\n"
                 f"rows: class (file); {criterion}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    out = atomic_write_bytes(Path(out), buf.getvalue())
    log.info("wrote %s (%d images x %d maps from %s; %s)", out, len(picks), n_maps, images, criterion)
    return out


@cli_entry("visualize_alignment")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.visualize_alignment", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="CKPT [IMAGES] OUT",
                   help="full LEWEL pretraining checkpoint (runs/<exp>/checkpoint.pth), optionally an image file or "
                        "folder (searched recursively; default: the val split of the checkpoint's pretraining data), "
                        "and the output PNG")
    p.add_argument("--num-images", type=COUNT, default=4)
    p.add_argument("--maps", type=COUNT, default=4, help="alignment maps per image (the strongest)")
    p.add_argument("--size", type=COUNT, default=None, help="view size (default: the checkpoint's aug.size)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--min-object", type=Number(float, 0, 1, lo_open=True), default=0.8,
                   help="fraction of the object the view's crop must hold (default 0.8)")
    p.add_argument("--tries", type=COUNT, default=8, help="view draws per image to find such a crop")
    p.add_argument("--object", choices=("auto", "contrast", "centre"), default="auto",
                   help="object estimate: the mini shapes' contrast foreground, the image centre, or auto (contrast "
                        "on the mini data, else centre)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args.paths) not in (2, 3):
        p.error("give CKPT [IMAGES] OUT")
    ckpt, out = args.paths[0], args.paths[-1]
    images = args.paths[1] if len(args.paths) == 3 else None
    check_path(ckpt, "file", "CKPT")
    if images is not None and not Path(images).is_dir():
        check_path(images, "file", "IMAGES")
    check_path(out, "out_file", "OUT")
    try:
        draw(ckpt, images, out, args.num_images, args.maps, args.seed, args.size, args.min_object, args.tries,
             args.object)
    except (AlignmentError, FileNotFoundError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
