"""Preemption: SIGTERM/SIGINT finish the current step, save a checkpoint there on every host, stop.

Clouds preempt with SIGTERM and a short grace period. `StopSignal` turns SIGTERM and SIGINT into a
flag (a second Ctrl-C interrupts at once); `CheckpointPolicy.decide(step)` turns the flag, the step
interval and a wall-clock interval (`checkpoint_every_minutes`) into (save, stop). On several
processes the flags are OR-ed across hosts with one tiny all-gather every `sync_every` steps, so
all hosts save the same step and stop together.
"""

from __future__ import annotations

import signal
import threading
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Context manager: while active, SIGTERM/SIGINT set `requested` instead of killing the process.

    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:  # second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logging.warning("%s received: finishing the current step, then saving a checkpoint.", self.requested)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class CheckpointPolicy:
    """When to save and whether to stop, the same answer on every host.

    every_steps: save every N steps (and at the last); every_minutes: also save when this much wall
    time passed since the last save (0: off); sync_every: on several processes, how often (in steps)
    the hosts exchange their stop/clock flags."""

    def __init__(self, stop_signal: StopSignal, *, every_steps: int, every_minutes: float = 0.0,
                 sync_every: int = 10):
        self.stop_signal = stop_signal
        self.every_steps = every_steps
        self.every_seconds = 60.0 * every_minutes
        self.sync_every = sync_every
        self.last_save = time.monotonic()

    def decide(self, step: int, last: bool) -> tuple[bool, bool]:
        """(save, stop) after `step` was taken."""
        by_steps = step % self.every_steps == 0 or last
        flags = np.array([self.stop_signal.requested is not None,
                          self.every_seconds > 0 and time.monotonic() - self.last_save >= self.every_seconds])
        if jax.process_count() > 1:
            if step % self.sync_every and not by_steps:
                flags[:] = False  # hosts only act on flags at shared sync points
            else:
                flags = np.asarray(multihost_utils.process_allgather(flags)).reshape(-1, 2).any(axis=0)
        stop, by_time = bool(flags[0]), bool(flags[1])
        save = by_steps or by_time or stop
        if save:
            self.last_save = time.monotonic()
        return save, stop
