"""The report folder: every file written through :class:`Output` is atomic and remembered (stale ones removed)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..io import atomic_write_bytes
from .base import ReportError


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

