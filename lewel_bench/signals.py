"""Signals that ask a run to stop: Ctrl-C (SIGINT), SIGTERM (``scancel``, torchrun, a preempting SLURM) and
SIGUSR2 (submitit, ``signal_delay_s`` before a SLURM time limit or on preemption).

:class:`StopRequest` turns them into a request that a training loop honours at its next safe point: it
finishes the step, writes its checkpoint and raises :class:`Stopped`, whose ``exit_status`` is 128 + the
signal's number (130, 143, 140: the status of a process the signal ended, which shells, torchrun and SLURM
read as "stopped", never as "finished"). Before it raises, the handler that was installed before this one
runs: under submitit (``LAUNCHER=slurm``) that is submitit's own, which on the first task requeues the job
(``scontrol requeue``) and exits with submitit's status; the requeued job resumes from the checkpoint.

Outside the loop (set-up, writing the outputs) the handler stops at once (:meth:`StopRequest.immediate`):
nothing is half-written, because every file goes through :mod:`lewel_bench.io`. A second Ctrl-C during
the loop stops at once too, without waiting for the step. Under DDP every process must stop at the same
step: :meth:`StopRequest.agree` (or the loop's own reduction of the loss, which carries the flag) tells
all of them whether any was asked. A forked loader worker inherits the handler and ignores the signals: its
main process decides, and its loader ends the workers.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from .errors import LewelError

if TYPE_CHECKING:  # typing.Self: Python 3.11+
    from typing import Self

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


_QUIET_CHILDREN = False


def quiet_forked_children() -> None:
    """From now on, a forked child (a loader worker, a process pool's worker) ignores SIGINT from its first
    instruction: a terminal's Ctrl-C reaches the whole process group, and only the main process decides (it stops
    with one line; its loaders and pools end their children). SIGINT is blocked in the forking thread across the
    fork, so none can arrive in the child before it ignores it (a KeyboardInterrupt in a child's start-up code
    prints a traceback). SIGTERM keeps its meaning in children (process pools end their workers with it).
    Idempotent; called by every command line (``lewel_bench.stage.cli_entry``)."""
    global _QUIET_CHILDREN
    if _QUIET_CHILDREN or not hasattr(os, "register_at_fork"):
        return
    _QUIET_CHILDREN = True

    def block() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def unblock() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def child() -> None:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # forked from a thread other than the main one: keep the inherited handler
            pass
        unblock()

    os.register_at_fork(before=block, after_in_parent=unblock, after_in_child=child)


class Stopped(LewelError):
    """The run stopped on a signal; the message says what was saved. ``exit_status``: 128 + the signal."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = 128 + self.signum


def signal_name(signum: int) -> str:
    """``SIGINT (Ctrl-C)``, ``SIGTERM``, ``SIGUSR2``, ..."""
    name = signal.Signals(signum).name
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


class StopRequest:
    """Install the stop handlers for a ``with`` block (main thread only; elsewhere it is inert) and record the
    first stop signal. ``immediate`` is the set-up message used when a signal arrives outside a
    :meth:`deferred` block."""

    def __init__(self, immediate: str = "before training: nothing was trained") -> None:
        self.signum: int | None = None
        self.immediate = immediate
        self._deferred = False
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()
        self._depth = 0
        self.stopping = False

    # --- installation (re-entrant: a nested ``with`` of the same request installs nothing) -------------
    def __enter__(self) -> Self:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous.clear()

    @contextmanager
    def deferred(self) -> Iterator[StopRequest]:
        """Inside: a signal only sets :attr:`requested`; the loop stops at its next safe point."""
        self._deferred = True
        try:
            yield self
        finally:
            self._deferred = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A forked loader worker: its main process decides. A terminal's Ctrl-C reaches the whole process
            # group; a worker that ended on it would leave the main process's next batch unreadable before
            # the step could be saved. The loader ends its workers when the main process stops.
            return
        if self.stopping:
            return  # already on its way out
        first = self.signum is None
        if first:
            self.signum = signum
        if self._deferred and (first or signum != signal.SIGINT):
            return  # the loop stops at its next safe point
        self.forward()
        where = (self.immediate if not self._deferred else "again (a second Ctrl-C): stopped at once, the step in "
                 "progress is lost and the last checkpoint stands")
        raise self.stopped(f"stopped by {signal_name(signum)} {where}", signum)

    def stopped(self, message: str, signum: int) -> Stopped:
        """The :class:`Stopped` to raise; from now on further signals are ignored (the run is on its way out)."""
        self.stopping = True
        return Stopped(message, signum)

    # --- the loop's side ---------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agree(self, device: Any = None) -> bool:
        """Whether any process was asked to stop (every process calls this at the same point)."""
        from . import dist as ldist

        if not ldist.is_dist():
            return self.requested
        import torch

        flag = torch.tensor([float(self.requested)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def agreed_signal(self, device: Any = None) -> int:
        """The signal to stop with, the same on every process (the highest number any received; processes that
        received none take it from the others). Every process calls this at the same point."""
        from . import dist as ldist

        own = int(self.signum or 0)
        if not ldist.is_dist():
            return own or signal.SIGTERM
        import torch

        s = torch.tensor([float(own)], device=device)
        torch.distributed.all_reduce(s, op=torch.distributed.ReduceOp.MAX)
        self.signum = self.signum or int(s.item()) or signal.SIGTERM
        return int(s.item()) or signal.SIGTERM

    def forward(self) -> None:
        """Run the handler that was installed before this one for the received signal, if it is Python code
        (submitit's: requeue the job and exit); Python's own Ctrl-C handler is not run (it would raise
        KeyboardInterrupt instead of the clean stop)."""
        prev = self._previous.get(self.signum) if self.signum is not None else None
        if callable(prev) and prev is not signal.default_int_handler:
            log.info("passing %s on to the handler installed before the run's (%s)", signal_name(self.signum),
                     getattr(prev, "__qualname__", prev))
            prev(self.signum, None)
