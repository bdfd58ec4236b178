"""The errors a user can cause (bad input, a refused run), as opposed to bugs, and the exit statuses.

Every exception class the suite raises for bad input derives from :class:`LewelError`, so that each
command line turns it into ONE line naming the file or key and what was expected, and a non-zero exit
(:func:`lewel_bench.stage.cli_entry`), never a traceback. Anything else that escapes is a bug and keeps
its traceback.

Exit statuses, the same for every stage, tool and make target:

====  =========================================================================================
0     done (or already done: a finished run is reported, not run again)
1     the run started and failed: a non-finite loss or metric, a full disk, a rank that died
2     bad input or a refused run, before any work: a path, a number, a config, a folder holding
      another run (argparse and the make targets' own checks exit 2 as well)
130   interrupted by Ctrl-C (128 + SIGINT); files are written atomically, so nothing is half-written
====  =========================================================================================
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing.Self: Python 3.11+
    from typing import Self

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130


class LewelError(Exception):
    """Base of every user-facing error: its message is complete on its own (file or key, what was expected).

    ``exit_status``: the command line's exit status for it (:data:`EXIT_REFUSED` unless the class says
    the run failed)."""

    exit_status = EXIT_REFUSED


class StorageError(LewelError, OSError):
    """A file could not be written (disk full, permissions); the previous file at the path is intact."""

    exit_status = EXIT_FAILED


class NonFiniteError(LewelError, ValueError):
    """A tensor, a loss or a metric is NaN or infinite where a finite value is required."""

    exit_status = EXIT_FAILED


class PathError(LewelError, OSError):
    """A path argument is missing, of the wrong kind (a file for a folder, ...), not writable, under a file or a
    symlink loop; the message names the argument and the path."""


class ExitStatus(int):
    """An exit status that prints as its one-line message: ``SystemExit(ExitStatus(2, "eval_knn: ..."))`` makes
    the interpreter exit with 2, and whoever reads ``SystemExit.code`` as a message (a test, a job runner) gets
    the line."""

    message: str

    def __new__(cls, status: int, message: str) -> Self:
        obj = super().__new__(cls, status)
        obj.message = message
        return obj

    def __str__(self) -> str:
        return self.message

    __repr__ = __str__


class CommandExit(SystemExit):
    """The end of a command line with ``status`` and its one-line ``message`` (already printed on stderr)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(ExitStatus(status, message))
        self.message, self.status = message, status

    def __str__(self) -> str:
        return self.message


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
