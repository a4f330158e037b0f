"""One way to time compiled JAX calls: warm-up, interleaved rounds, `block_until_ready`.

Used by the train loop, eval.py and the benchmarks alike. Compile time is excluded (every candidate
runs `warmup` times first); candidates are timed *interleaved* (round k runs every candidate once),
so a burst of load from other processes hits all of them alike instead of whichever was being timed
at that moment. Reported: median wall time over the rounds, the minimum (the least disturbed run)
and the median process CPU time.
"""

from __future__ import annotations

import collections
import statistics
import time
from typing import Callable

import jax

Stats = collections.namedtuple("Stats", "median min cpu_median runs")


def blocking(fn: Callable, *args) -> Callable[[], object]:
    """A zero-argument callable running fn(*args) to completion."""
    return lambda: jax.block_until_ready(fn(*args))


def time_interleaved(candidates: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1,
                     min_time: float = 0.0) -> dict[str, Stats]:
    """Seconds per call of each zero-argument callable (which must block until its result is ready).

    `repeats` rounds; each round runs every candidate in turn. A candidate faster than `min_time`
    seconds runs several times in a row per round (enough to last `min_time`), which averages out
    timer resolution and dispatch jitter for sub-millisecond calls.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    inner = {}
    for name, fn in candidates.items():
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            fn()
            once = time.perf_counter() - t0
        inner[name] = max(1, int(min_time / max(once, 1e-6)))
    wall = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner[name]):
                fn()
            wall[name].append((time.perf_counter() - t0) / inner[name])
            cpu[name].append((time.process_time() - c0) / inner[name])
    return {
        name: Stats(statistics.median(wall[name]), min(wall[name]), statistics.median(cpu[name]),
                    len(wall[name]))
        for name in candidates
    }


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class CompileTimer:
    """Seconds JAX spends making programs from the moment this is created: tracing, lowering, and
    compiling or loading from the persistent compilation cache (JAX's own monitoring events).

    `programs` counts backend compiles requested, `cache_hits` those the persistent cache answered.
    JAX has no public way to remove a listener, so make one per command (eval.py makes one).
    """

    def __init__(self):
        self.seconds, self.programs, self.cache_hits = 0.0, 0, 0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, duration: float, **_):
        if event in _COMPILE_EVENTS:
            self.seconds += duration
            self.programs += event == _COMPILE_EVENTS[-1]

    def _on_event(self, event: str, **_):
        self.cache_hits += event == "/jax/compilation_cache/cache_hits"

    def __str__(self) -> str:
        return (f"{self.seconds:.1f} s making {self.programs} XLA programs "
                f"({self.cache_hits} loaded from the compilation cache)")
