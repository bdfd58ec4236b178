"""The one place that checks a dataset root against the layout a reader expects."""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import LewelError


class DataLayoutError(LewelError, FileNotFoundError):
    """A dataset root is missing or does not have the expected layout."""


class DataError(LewelError, ValueError):
    """A dataset file has the right place but bad contents (a malformed annotation, list or subset file)."""


def require_layout(root: str | Path, dataset: str, expected: Sequence[str] | Mapping[str, str]) -> Path:
    """Return ``Path(root)`` if every expected pattern matches at least one path under it.

    ``expected``: glob patterns relative to ``root`` (e.g. ``"train/*/*.JPEG"``), or a mapping
    ``{glob: human description}`` (e.g. ``{"train/*/*.JPEG": "train/<wnid>/*.JPEG"}``).
    Raises ONE :class:`DataLayoutError` naming the root, the dataset, everything expected and what is
    missing, e.g. ``ImageNet root '/data/in1k' is not a directory; expected <root>/train/<wnid>/*.JPEG``.
    """
    root = Path(root).expanduser()
    items = dict(expected) if isinstance(expected, Mapping) else {p: p for p in expected}
    want = "; ".join(f"<root>/{d}" for d in items.values())
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise DataLayoutError(f"{dataset} root '{root}' {what}; expected {want}")
    missing = [d for g, d in items.items() if next(itertools.islice(root.glob(g), 1), None) is None]
    if missing:
        raise DataLayoutError(f"{dataset} root '{root}' is malformed: nothing matches "
                              f"{', '.join('<root>/' + m for m in missing)}; expected {want}")
    return root


def require_file(path: str | Path, what: str) -> Path:
    """``Path(path)`` if it is a file, else a :class:`DataLayoutError` naming it and ``what`` it is."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataLayoutError(f"{what} '{path}' does not exist" if not path.exists()
                              else f"{what} '{path}' is not a file")
    return path
