"""Atomic file writes: nothing is ever left half-written.

Every writer goes to a temporary file in the destination folder (``.<name>.<random>.tmp``), flushes and
fsyncs it, then ``os.replace``s it over the destination (atomic on POSIX within one file system). The
file gets the mode a plain ``open`` would give it (``0o666`` minus the umask), so a research group's
shared folders stay readable. A write that fails (a full disk, a kill) leaves the destination as it was;
a disk-full error is reported as :class:`~lewel_bench.errors.StorageError` naming the path (torch's own
message for it is an opaque ``inline_container.cc ... unexpected pos``). Temporary files a killed run left
behind are removed by :func:`remove_stale_temp` when the same run starts again.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import StorageError, is_no_space

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


def _umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched; a full disk raises
    :class:`StorageError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_no_space(e):
            raise StorageError(f"no space left on device while writing {path} (ENOSPC); the previous "
                               f"{path.name} is intact: free disk space and run again") from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line (metrics logs). A single ``write`` of a short line is atomic enough for logs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True, default=str) + "\n")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line of text (job id files): one short ``write``, like :func:`append_jsonl`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line.rstrip("\n") + "\n")


def remove_stale_temp(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that killed atomic writes left in ``folder``.

    Call it when a run starts in its own output folder (no other writer is active there); returns what
    was removed, logged with the sizes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if p.is_file() and _TEMP.match(p.name):
            size = p.stat().st_size
            p.unlink()
            removed.append(p)
            log.info("removed %s (%.1f MB), the temporary file of a write that was interrupted", p, size / 2**20)
    return removed


def require_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Refuse, before any work, a folder a run will write into at its end and could not: a file in its place or
    above it, or a missing folder whose nearest existing parent is not writable. Nothing is created."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"is under the file {probe}"
        raise StorageError(f"{what} {path} {where}: expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StorageError(f"{what} {path} cannot be written ({probe} is not writable)")
    return path
