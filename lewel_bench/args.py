"""The argument types every command line shares: paths of each kind, seeds, ranged numbers, and a parser whose
errors are one line.

A path argument declares its kind with its ``type`` (:class:`PathArg`, :class:`CheckpointArg`,
:class:`ConfigArg`), so the check happens when the line is parsed, before any work, and the message names
the argument and the path (exit status 2, :mod:`lewel_bench.errors`):

==============  ===================================================================================
``dir``         an existing folder to read (a dataset root, a records folder)
``file``        an existing file to read (a checkpoint, a subset file, a launcher config)
``out_dir``     a folder to write into: an existing writable folder, or one that can be made (its
                first existing parent is a writable folder)
``out_file``    a file to write: not a folder, and its folder as ``out_dir``
==============  ===================================================================================

Refused, for every kind: a path under a file (``afile/x``), a symlink loop, a broken symlink; a folder
where a file is expected and the reverse; for ``dir`` / ``file`` a missing path; for ``out_*`` a
read-only file system or a folder without write permission. Spaces and non-ASCII characters are plain
characters. ``~`` is expanded.

Seeds (:func:`seed_arg`, :data:`SEED_MAX`): every ``--seed`` of every stage and tool, and the configs' ``seed``
keys (the schema type ``seed``, :mod:`lewel_bench.config`), are integers in ``0 .. 2**32 - 1``: the range
every generator a run seeds accepts (numpy's and mmengine's seeding refuse the rest; detectron2 reads a
negative seed as "draw one").
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import EXIT_REFUSED, CommandExit, PathError

#: The largest seed (numpy's legacy seeding, which mmengine and detectron2 use, takes 0 .. 2**32 - 1).
SEED_MAX = 2**32 - 1

PATH_KINDS = ("dir", "file", "out_dir", "out_file")


# --------------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------------
def _state(p: Path) -> str:
    """``dir``, ``file``, ``other`` (a device, a pipe), ``missing``, ``loop``, ``under_file``, ``broken_link``
    or ``denied`` (a folder on the way cannot be searched)."""
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "loop"
        if e.errno == errno.ENOTDIR:
            return "under_file"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "denied"
        if e.errno == errno.ENOENT:
            return "broken_link" if os.path.islink(p) else "missing"
        raise PathError(f"{p}: {e.strerror or e}") from None
    return "dir" if stat.S_ISDIR(st.st_mode) else ("file" if stat.S_ISREG(st.st_mode) else "other")


def _file_above(p: Path) -> Path | None:
    """The first ancestor of ``p`` that exists and is not a folder (``p`` is "under a file")."""
    for anc in reversed(p.parents):
        s = _state(anc)
        if s in ("file", "other"):
            return anc
        if s != "dir":
            return None
    return None


def _problem(p: Path, state: str, want: str) -> str:
    if state == "under_file":
        above = _file_above(p)
        return f"{p}: {above or 'a part of the path'} is a file, not a folder"
    if state == "loop":
        return f"{p}: a symlink loop"
    if state == "broken_link":
        return f"{p}: a broken symlink (to {os.readlink(p)})"
    if state == "denied":
        return f"{p}: permission denied on a folder of the path"
    if state == "missing":
        return f"{p}: no such {'folder' if want == 'dir' else 'file'}"
    if state == "other":
        return f"{p}: not a regular file or folder"
    got = "a folder" if state == "dir" else "a file"
    return f"{p}: is {got}, expected {'a folder' if want == 'dir' else 'a file'}"


def _writable_dir(folder: Path, path: Path) -> None:
    """``folder`` (an existing folder) can be written into; else :class:`PathError` naming ``path``."""
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            ro = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            ro = False
        why = "on a read-only file system" if ro else "not writable (permission denied)"
        raise PathError(f"{path}: is {why}" if folder == path else f"{path}: its folder {folder} is {why}")


def check_path(path: str | os.PathLike, kind: str, what: str = "") -> Path:
    """``path`` (``~`` expanded) if it fits ``kind`` (see the module docstring), else :class:`PathError` whose
    message starts with ``what`` (e.g. ``--data``) and names the path and the problem."""
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown path kind {kind!r}")
    p = Path(os.path.expanduser(os.fspath(path)))
    prefix = f"{what}: " if what else ""
    if str(path) == "":
        raise PathError(f"{prefix}an empty path")
    try:
        state = _state(p)
        if kind in ("dir", "file"):
            if state != kind:
                raise PathError(prefix + _problem(p, state, kind))
            if not os.access(p, os.R_OK | (os.X_OK if kind == "dir" else 0)):
                raise PathError(f"{prefix}{p}: not readable (permission denied)")
            return p
        want = "dir" if kind == "out_dir" else "file"
        if state in ("dir", "file"):
            if state != want:
                raise PathError(prefix + _problem(p, state, want))
            _writable_dir(p if want == "dir" else p.parent, p)
            return p
        if state != "missing":
            raise PathError(prefix + _problem(p, state, want))
        anc = p.parent
        while True:  # the first existing folder above: the one the new folders are made in
            s = _state(anc)
            if s == "dir":
                break
            if s != "missing" or anc == anc.parent:
                raise PathError(prefix + _problem(p, "under_file" if s in ("file", "other") else s, want))
            anc = anc.parent
        _writable_dir(anc, p)
        return p
    except PathError as e:
        if prefix and not str(e).startswith(prefix):
            raise PathError(prefix + str(e)) from None
        raise


def make_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``mkdir -p path`` with a :class:`PathError` naming ``what`` and the path instead of an ``OSError``."""
    p = check_path(path, "out_dir", what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PathError(f"{what}: {p}: cannot be made ({e.strerror or e})") from None
    return p


class PathArg:
    """An argparse ``type`` for a path of ``kind`` (see the module docstring); the value stays a ``str``."""

    def __init__(self, kind: str) -> None:
        if kind not in PATH_KINDS:
            raise ValueError(f"unknown path kind {kind!r}")
        self.kind = kind
        self.__name__ = f"path ({kind})"

    def __call__(self, text: str) -> str:
        try:
            check_path(text, self.kind)
        except PathError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    def __repr__(self) -> str:
        return f"PathArg({self.kind!r})"


#: The checkpoint specs that are not files (:func:`lewel_bench.checkpoint.resolve_backbone`).
CKPT_TAGS = ("random:", "supervised:")


class CheckpointArg(PathArg):
    """``--ckpt``: a checkpoint file, ``random:<arch>``, or ``supervised:<file>`` (the file is checked)."""

    def __init__(self) -> None:
        super().__init__("file")
        self.__name__ = "checkpoint"

    def __call__(self, text: str) -> str:
        if text.startswith("random:"):
            return text
        if text.startswith("supervised:"):
            super().__call__(text[len("supervised:"):])
            return text
        return super().__call__(text)


class ConfigArg(PathArg):
    """A config given by name (looked up in ``config_dir`` by the stage) or as a file path (checked here: it
    has one of ``suffixes``, or a folder in it).

    ``loader(spec, overrides)``: how the stage reads it (the tests read every stage's configs through it)."""

    def __init__(self, config_dir: str | os.PathLike, suffixes: Sequence[str] = (".yaml", ".yml"),
                 loader: Callable[[str, Sequence[str]], Any] | None = None) -> None:
        super().__init__("file")
        self.config_dir, self.suffixes, self.loader = Path(config_dir), tuple(suffixes), loader
        self.__name__ = "config"

    def is_path(self, text: str) -> bool:
        return os.sep in text or text.endswith(self.suffixes) or text.startswith("~")

    def __call__(self, text: str) -> str:
        if not self.is_path(text):
            return text  # a name: the stage looks it up in its configs folder (and lists the names if unknown)
        super().__call__(text)
        if not text.endswith(self.suffixes):
            raise argparse.ArgumentTypeError(f"{text}: a config file ends with {' or '.join(self.suffixes)}")
        return text


# --------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------
def check_seed(value: Any, key: str = "--seed") -> int:
    """``value`` as a seed (an integer in ``0 .. SEED_MAX``); :class:`ValueError` naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise ValueError(f"{key}: expected an integer in 0..{SEED_MAX}, got {value!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{key}: expected an integer in 0..{SEED_MAX}, got {value}")
    return value


def seed_arg(text: str) -> int:
    """The argparse ``type`` of every ``--seed`` (see the module docstring)."""
    try:
        return check_seed(text, "seed")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None


seed_arg.__name__ = "seed"


class Number:
    """An argparse ``type`` for an ``int`` / ``float`` within bounds: ``Number(int, lo=1)`` (counts),
    ``Number(float, lo=0, hi=100)``; ``lo_open`` / ``hi_open`` exclude the bound."""

    def __init__(self, kind: type = int, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False) -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        bounds = ([f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []) + \
                 ([f"{'<' if hi_open else '<='} {hi:g}"] if hi is not None else [])
        self.text = f"{'an integer' if kind is int else 'a number'}{' ' + ' and '.join(bounds) if bounds else ''}"
        self.__name__ = self.text

    def __call__(self, text: str) -> int | float:
        import math

        try:
            v = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.text}, got {text!r}") from None
        ok = (self.kind is int or math.isfinite(v)) and \
            (self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)) and \
            (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {self.text}, got {text}")
        return v

    def __repr__(self) -> str:
        return f"Number({self.text})"


#: counts (``--workers``, ``--iters``, ...)
COUNT = Number(int, lo=1)
NON_NEGATIVE = Number(int, lo=0)


# --------------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line naming the argument (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        name = self.prog.split()[-1]  # "python -m eval_knn" -> eval_knn, as the other errors of the command
        line = f"{name}: {message} (see {self.prog} --help)"
        print(line, file=sys.stderr, flush=True)
        raise CommandExit(line, EXIT_REFUSED)


def path_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments of ``parser`` whose type is a path (:class:`PathArg` and its kinds)."""
    return [a for a in parser._actions if isinstance(a.type, PathArg)]
