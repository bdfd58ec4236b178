"""ImageNet-100: the 100-class ImageNet-1k subset of CMC, used by the LEWEL ablations (Sec. 4.4).

The class list ships as ``lewel_bench/data/imagenet100.txt`` (:data:`IN100_WNIDS`). :func:`build_in100`
turns an ImageNet-1k root into the subset as a tree of per-image symlinks, in the layout the readers
expect (``<out>/<split>/<wnid>/<name>.JPEG``), so ``make pretrain EXP=lewel_b_in100 DATA=<out>`` reads it
with :class:`~lewel_bench.data.ImageNetFolder`. A complete build ends with ``<out>/.in100.json``.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .imagenet import IMG_EXTENSIONS
from .layout import DataLayoutError, require_layout

log = logging.getLogger(__name__)

WNIDS_FILE = "imagenet100.txt"
MANIFEST = ".in100.json"
MANIFEST_FORMAT = 1
LINK_MODES = ("symlink", "hardlink")
_WNID_RE = re.compile(r"n\d{8}")
_SHOW = 10  # missing classes named in an error before "... and N more"


def load_wnids(path: str | Path | None = None, expected: int = 100) -> tuple[str, ...]:
    """Sorted wnids of a class-list file (default: the shipped ``imagenet100.txt``).

    One wnid per line; blank lines and lines starting with ``#`` are skipped. Raises ``ValueError``
    naming the file (and line) unless it lists exactly ``expected`` unique ids of the form ``n`` + 8 digits.
    """
    if path is None:
        ref = resources.files(__package__) / WNIDS_FILE
        name, text = f"{__package__}/{WNIDS_FILE}", ref.read_text()
    else:
        name, text = str(path), Path(path).read_text()
    seen: dict[str, int] = {}
    for i, line in enumerate(text.splitlines(), 1):
        wnid = line.strip()
        if not wnid or wnid.startswith("#"):
            continue
        if not _WNID_RE.fullmatch(wnid):
            raise ValueError(f"{name}:{i}: '{wnid}' is not a WordNet id (expected n + 8 digits, e.g. n01558993)")
        if wnid in seen:
            raise ValueError(f"{name}:{i}: '{wnid}' is listed twice (first on line {seen[wnid]})")
        seen[wnid] = i
    if len(seen) != expected:
        raise ValueError(f"{name}: {len(seen)} wnids, expected {expected}")
    return tuple(sorted(seen))


IN100_WNIDS: tuple[str, ...] = load_wnids()


def _images(class_dir: Path) -> list[str]:
    """Sorted image file names of one class folder (the extensions :class:`ImageNetFolder` reads)."""
    if not class_dir.is_dir():
        return []
    return sorted(e.name for e in os.scandir(class_dir)
                  if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))


def _named(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def _scan_source(root: Path, splits: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """``{split: {wnid: image names}}`` of the 100 classes; ONE ``DataLayoutError`` for everything missing."""
    want = {f"{s}/*/*": f"{s}/<wnid>/*.JPEG" for s in splits}
    require_layout(root, "ImageNet", want)
    found: dict[str, dict[str, list[str]]] = {}
    problems: list[str] = []
    for split in splits:
        found[split] = {w: _images(root / split / w) for w in IN100_WNIDS}
        missing = [w for w in IN100_WNIDS if not (root / split / w).is_dir()]
        empty = [w for w in IN100_WNIDS if w not in missing and not found[split][w]]
        if missing:
            problems.append(f"{split}: {len(missing)} of the {len(IN100_WNIDS)} classes missing: {_named(missing)}")
        if empty:
            problems.append(f"{split}: {len(empty)} class folder(s) without images "
                            f"({'/'.join(IMG_EXTENSIONS)}): {_named(empty)}")
    if problems:
        raise DataLayoutError(f"ImageNet root '{root}' lacks ImageNet-100 classes: {'; '.join(problems)}; "
                              f"expected <root>/<split>/<wnid>/*.JPEG for every wnid of "
                              f"{__package__}/{WNIDS_FILE}")
    return found


def _manifest(source: Path, splits: Sequence[str], link: str,
              found: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "source": str(source),
        "splits": list(splits),
        "link": link,
        "wnids": list(IN100_WNIDS),
        "images": {s: sum(len(v) for v in found[s].values()) for s in splits},
        "class_images": {s: {w: len(found[s][w]) for w in IN100_WNIDS} for s in splits},
    }


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check_out(out: Path, source: Path, want: dict[str, Any]) -> bool:
    """True if ``out`` is a complete build of ``want`` (no-op); False if it is absent or empty; else raise."""
    if out == source or source in out.parents:
        raise DataLayoutError(f"ImageNet-100 output '{out}' is inside the ImageNet root '{source}'; "
                              f"expected a folder outside it (the source is never written to)")
    if not out.exists():
        return False
    if not out.is_dir():
        raise DataLayoutError(f"ImageNet-100 output '{out}' exists and is not a directory; "
                              f"expected a new or empty folder")
    if next(out.iterdir(), None) is None:
        return False
    have = _read_manifest(out / MANIFEST)
    if have is None:
        raise DataLayoutError(f"ImageNet-100 output '{out}' is not empty and has no readable {MANIFEST} "
                              f"(not a complete ImageNet-100 build); expected a new or empty folder "
                              f"(remove an interrupted build and run again)")
    if have != want:
        diff = sorted(k for k in want.keys() | have.keys() if have.get(k) != want.get(k))
        raise DataLayoutError(f"ImageNet-100 output '{out}' holds a build of '{have.get('source')}' "
                              f"(splits {have.get('splits')}) that differs from this one in "
                              f"{', '.join(diff)} of {MANIFEST}; expected a new or empty folder "
                              f"(remove it to rebuild)")
    return True


def build_in100(imagenet_root: str | Path, out_root: str | Path, splits: Sequence[str] = ("train", "val"),
                link: str = "symlink") -> Path:
    """Build ImageNet-100 under ``out_root`` from an ImageNet-1k root; returns ``out_root``.

    Creates ``out_root/<split>/<wnid>/<name>`` as one link (``symlink`` to the absolute source path,
    or ``hardlink``) per image of ``imagenet_root/<split>/<wnid>/``, then writes ``out_root/.in100.json``
    (source, splits, image counts) last. Raises :class:`DataLayoutError` before creating anything if the
    source misses a class or has a class folder without images in any split, or if ``out_root`` is
    not empty and not a complete build of the same source, splits and link mode (that is a no-op).
    """
    if link not in LINK_MODES:
        raise ValueError(f"link: '{link}' is not one of {', '.join(LINK_MODES)}")
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits: expected one or more distinct split names, got {list(splits)}")
    source = Path(imagenet_root).expanduser().resolve()
    out = Path(out_root).expanduser().resolve()
    found = _scan_source(source, splits)
    want = _manifest(source, splits, link, found)
    if _check_out(out, source, want):
        log.info("ImageNet-100 at %s is already built from %s (%s); nothing to do", out, source,
                 ", ".join(f"{s}: {n} images" for s, n in want["images"].items()))
        return out
    make_link = os.symlink if link == "symlink" else os.link
    for split in splits:
        for wnid in IN100_WNIDS:
            dst_dir = out / split / wnid
            dst_dir.mkdir(parents=True, exist_ok=True)
            src_dir = source / split / wnid
            for name in found[split][wnid]:
                make_link(src_dir / name, dst_dir / name)
        log.info("ImageNet-100 %s: %d images in %d classes (%ss of %s)", split, want["images"][split],
                 len(IN100_WNIDS), link, source / split)
    atomic_write_json(out / MANIFEST, want)
    log.info("ImageNet-100 built at %s (%s)", out, MANIFEST)
    return out
