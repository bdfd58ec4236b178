"""The identity of a dataset root: what a result was computed on, so that results on different data never mix.

:func:`data_identity` returns ``{"name", "root", "fingerprint", "files"}``:

* ``fingerprint``: sha256 over the sorted relative paths of every file under the root's parts the stage
  reads (``train``/``val`` of an ImageNet root, ``VOC2007``/``VOC2012`` of a VOCdevkit, ...), plus the
  contents of its list and annotation files (``*.txt``, ``*.json``) and of a generator manifest. Image
  files count by name only, so the cost is one directory listing (seconds for ImageNet's 1.3M files).
  Two copies of the same dataset give the same fingerprint wherever they are mounted; a missing or extra
  file, an edited split list or annotation file, or another seed of the mini generator gives another.
* ``name``: ``mini`` for the embedded mini benchmark (its ``.complete`` manifest in the root or up to two
  folders above), ``imagenet100`` for a subset built by :mod:`lewel_bench.data.in100`, else the root
  folder's own name. The name is for people; the fingerprint is what makes two results comparable.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .layout import DataLayoutError

log = logging.getLogger(__name__)

MINI_MANIFEST = ".complete"
IN100_MANIFEST = ".in100.json"
_CONTENT_SUFFIXES = (".txt", ".json")


def _mini_manifest(root: Path) -> Path | None:
    """The mini generator's manifest for ``root`` (in it or up to two folders above), if any."""
    for d in (root, root.parent, root.parent.parent):
        m = d / MINI_MANIFEST
        if m.is_file():
            try:
                doc = json.loads(m.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and {"seed", "version", "sizes"} <= set(doc):
                return m
    return None


def _walk(base: Path, rel: str, out: list[str], content: list[Path]) -> None:
    """Relative paths of every file under ``base / rel`` (``os.scandir``; symlinks followed)."""
    stack = [rel]
    while stack:
        r = stack.pop()
        try:
            entries = list(os.scandir(base / r))
        except NotADirectoryError:
            out.append(r)
            if r.endswith(_CONTENT_SUFFIXES):
                content.append(base / r)
            continue
        for e in entries:
            sub = f"{r}/{e.name}" if r else e.name
            if e.is_dir():
                stack.append(sub)
            else:
                out.append(sub)
                if e.name.endswith(_CONTENT_SUFFIXES):
                    content.append(base / sub)


def data_identity(root: str | Path, parts: Sequence[str] = ()) -> dict[str, Any]:
    """Name and fingerprint of ``root`` over ``parts`` (sub-folders or files; those missing are skipped,
    at least one must exist); ``parts=()`` covers the whole root."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataLayoutError(f"data root '{root}' is not a directory")
    t0 = time.perf_counter()
    present = [p for p in parts if (root / p).exists()] if parts else [""]
    if not present:
        raise DataLayoutError(f"data root '{root}' has none of {', '.join(parts)}")
    files: list[str] = []
    content: list[Path] = []
    for p in present:
        _walk(root, p, files, content)
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.encode("utf-8", "surrogateescape") + b"\n")
    for c in sorted(content):
        h.update(hashlib.sha256(c.read_bytes()).digest())
    mini = _mini_manifest(root)
    if mini is not None:
        h.update(mini.read_bytes())
        name = "mini"
    elif (root / IN100_MANIFEST).is_file():
        name = "imagenet100"
    else:
        name = root.resolve().name
    ident = {"name": name, "root": str(root.resolve()), "fingerprint": h.hexdigest(), "files": len(files),
             "parts": list(present)}
    log.info("data %s (%s): %d files, fingerprint %s (%.1fs)", name, ident["root"], len(files),
             ident["fingerprint"][:12], time.perf_counter() - t0)
    return ident


def same_data(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two identities name the same data (same fingerprint; where it is mounted does not matter)."""
    return bool(a) and bool(b) and a.get("fingerprint") == b.get("fingerprint")
