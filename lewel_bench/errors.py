"""The errors a user can cause (bad input, a refused run), as opposed to bugs.

Every exception class the suite raises for bad input derives from :class:`LewelError`, so that each
command line turns it into ONE line naming the file or key and what was expected, and a non-zero exit
(:func:`lewel_bench.stage.cli_entry`), never a traceback. Anything else that escapes is a bug and keeps
its traceback.
"""
from __future__ import annotations

import errno


class LewelError(Exception):
    """Base of every user-facing error: its message is complete on its own (file or key, what was expected)."""


class StorageError(LewelError, OSError):
    """A file could not be written (disk full, permissions); the previous file at the path is intact."""


class NonFiniteError(LewelError, ValueError):
    """A tensor, a loss or a metric is NaN or infinite where a finite value is required."""


def one_line(e: BaseException) -> str:
    """The message of ``e`` without a DataLoader worker's re-raised traceback (its last line is the error)."""
    msg = str(e)
    if "Original Traceback" in msg:
        last = [line for line in msg.strip().splitlines() if line.strip()][-1]
        name = type(e).__name__
        msg = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return msg.strip().replace("\n", " ")


def is_no_space(e: BaseException) -> bool:
    """``e`` (or its cause / context chain) is an ENOSPC or EDQUOT ("disk full") error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False
