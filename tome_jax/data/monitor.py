"""How much of a training run is spent waiting for the input pipeline.

`InputWait.next(iterator)` times each batch fetch; the train loop hands it the wall time of each
logging interval. Since JAX dispatches steps asynchronously, the host only waits on the device at
logging points, so time inside `next` is time the device could have been fed faster: fraction =
time in `next` / interval time. Near 0: the model bounds the run; near 1: the pipeline does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


class InputWait:
    """Accumulates data-wait time over the counted intervals (the compile interval is left out)."""

    def __init__(self, warn_above: float = 0.1):
        self.warn_above = warn_above
        self.waited = 0.0  # Seconds in `next`, counted intervals.
        self.elapsed = 0.0  # Wall seconds of the counted intervals.
        self._pending = 0.0  # Seconds in `next` since the last `end_interval`.

    def next(self, iterator: Iterator[Any]) -> Any:
        """next(iterator), timed."""
        start = time.perf_counter()
        try:
            return next(iterator)
        finally:
            self._pending += time.perf_counter() - start

    def end_interval(self, elapsed: float, *, count: bool = True) -> float:
        """Closes an interval of `elapsed` wall seconds; returns its wait fraction. count=False drops it."""
        waited, self._pending = self._pending, 0.0
        if count:
            self.waited += waited
            self.elapsed += elapsed
        return min(waited / elapsed, 1.0) if elapsed > 0 else 0.0

    def fraction(self) -> float | None:
        """Fraction of counted training time spent waiting for data; None before any counted interval."""
        return min(self.waited / self.elapsed, 1.0) if self.elapsed > 0 else None

    def warning(self) -> str | None:
        """A message when the pipeline, not the model, bounds the run; else None."""
        fraction = self.fraction()
        if fraction is None or fraction <= self.warn_above:
            return None
        return (
            f"The input pipeline bounds this run: {100 * fraction:.0f}% of training time was spent waiting "
            "for data. Give it more CPU (data.num_threads, default one per core; data.image_backend="
            "'opencv'), cheaper examples (smaller source images, a prepared ArrayRecord dataset), or "
            "benchmark it: python benchmarks/input_pipeline.py."
        )
