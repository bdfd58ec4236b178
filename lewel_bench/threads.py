"""Compute threads on a CPU that other programs share: measure which thread count is fastest now, keep it.

With as many compute threads as cores, every OpenMP barrier of a step waits for whichever thread another
process has descheduled: on 2 cores with one competing process, a mini pretraining step took 3x longer with
2 threads, under 2x with 1. A laptop or a shared node is rarely idle, and how busy it is changes during a run.
:class:`ThreadTuner` times a few steps at each candidate count (all cores, then halves down to 1), keeps the
fastest, re-measures when the step time moves away from what it measured (a competitor starts or stops) and
otherwise at intervals that double while the choice holds (a quiet 2-core mini MCL run spent 9 of its 279
steps at one thread).

The thread count changes speed only: results agree to floating-point rounding, as with any thread count.
"""
from __future__ import annotations

import logging
import statistics

import torch

log = logging.getLogger(__name__)


def candidates(max_threads: int) -> list[int]:
    """``max_threads``, its halves, 1 (e.g. 8 -> [8, 4, 2, 1]; 2 -> [2, 1])."""
    out, n = [], max(1, int(max_threads))
    while True:
        out.append(n)
        if n == 1:
            return out
        n //= 2


class ThreadTuner:
    """Chooses ``torch.set_num_threads`` from measured step times.

    Call :meth:`step` with each training step's duration (seconds, compute only). States: ``trial`` (the
    next ``trial_steps`` steps at each candidate; the first step after a change is not counted), then
    ``hold`` for ``interval`` steps at the fastest, with ``interval`` doubling from ``every`` up to
    ``max_every`` while the same count wins. During a hold, ``patience`` steps in a row slower than
    ``drift`` x the measured time, or faster than it / ``drift``, start a new trial at once. A trial step of
    another count that takes over ``abandon`` x the time of the count in use ends that count's trial (a
    crowded machine makes it several times slower; no need to confirm it)."""

    def __init__(self, max_threads: int, every: int = 50, max_every: int = 800, trial_steps: int = 3,
                 drift: float = 1.5, patience: int = 3, abandon: float = 2.0) -> None:
        if trial_steps < 2:
            raise ValueError("ThreadTuner: trial_steps must be >= 2 (the first step after a change is not counted)")
        self.options = candidates(max_threads)
        self.every, self.max_every, self.trial_steps = every, max_every, trial_steps
        self.drift, self.patience, self.abandon = drift, patience, abandon
        self.interval = every
        self.current = self.options[0]
        self.reference: float | None = None
        self.switches = 0
        self._best: int | None = None
        self._hold = 0
        self._begin_trial()

    @property
    def active(self) -> bool:
        return len(self.options) > 1

    def _set(self, n: int) -> None:
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.current = n

    def _begin_trial(self) -> None:
        self._trial: dict[int, list[float]] = {n: [] for n in self.options}
        self._queue = [(n, k > 0) for n in self.options for k in range(self.trial_steps)]  # (threads, counted)
        self._odd = 0
        self._set(self._queue[0][0])

    def step(self, seconds: float) -> None:
        """Record one step that ran at ``self.current`` threads; set the count for the next one."""
        if not self.active:
            return
        if self._queue:
            n, counted = self._queue.pop(0)
            abandon = n != self._best and self.reference is not None and seconds > self.abandon * self.reference
            if counted or abandon:
                self._trial[n].append(seconds)
            if abandon:  # clearly slower than the count in use: no more steps of it
                self._queue = [q for q in self._queue if q[0] != n]
            if self._queue:
                self._set(self._queue[0][0])
            else:
                self._decide()
            return
        self._hold -= 1
        ref = self.reference  # set by every trial's decision; a hold follows one
        odd = seconds > self.drift * ref or seconds * self.drift < ref
        self._odd = self._odd + 1 if odd else 0
        if self._odd >= self.patience:
            log.info("compute threads: steps now take %.3g s at %d threads against %.3g s measured; measuring again",
                     seconds, self.current, ref)
            self.interval = self.every
            self._begin_trial()
        elif self._hold <= 0:
            self._begin_trial()

    def _decide(self) -> None:
        times = {n: statistics.median(v) for n, v in self._trial.items() if v}
        best = min(times, key=times.get)
        if best != self._best:
            self.switches += self._best is not None
            log.info("compute threads: %d (median step %s)", best,
                     ", ".join(f"{n} threads {t:.3g} s" for n, t in sorted(times.items(), reverse=True)))
            self.interval = self.every
        else:
            self.interval = min(2 * self.interval, self.max_every)
        self._best, self.reference = best, times[best]
        self._hold = self.interval
        self._set(best)
