"""Shared pieces of the benchmarks: machine description, interleaved timing, per-schedule jit.

Timing rules (all benchmarks): compile excluded (every function runs `warmup` times first),
`jax.block_until_ready` on every result, and the candidates are timed *interleaved*: round k runs
every candidate once, so a burst of load from other processes hits all of them alike instead of
whichever was being timed at that moment. Reported: median wall time over the rounds (and the
minimum, the least disturbed run), plus the median process CPU time.
"""

from __future__ import annotations

import collections
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable

import jax
import numpy as np
from flax import nnx


# ----------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    """Command line, CPU, cores, library versions, device and XLA flags, one fact per line."""
    import flax
    import jaxlib

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average n/a"
    device = jax.devices()[0]
    return [
        "command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        f"cpu: {cpu_model()} ({cores} cores usable, {os.cpu_count()} online); {load} at start",
        f"python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}, numpy {np.__version__}",
        f"jax device: {len(jax.devices())} x {device.device_kind} ({jax.default_backend()} backend)",
        f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '(unset)')}",
    ]


# ----------------------------------------------------------------------------- timing

Stats = collections.namedtuple("Stats", "median min cpu_median runs")


def time_interleaved(candidates: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1,
                     min_time: float = 0.0) -> dict[str, Stats]:
    """Seconds per call of each zero-argument callable (which must block until its result is ready).

    `repeats` rounds; each round runs every candidate in turn. A candidate faster than `min_time`
    seconds runs several times in a row per round (enough to last `min_time`), which averages out
    timer resolution and dispatch jitter for sub-millisecond calls.
    """
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


def blocking(fn: Callable, *args) -> Callable[[], object]:
    """A zero-argument callable running fn(*args) to completion."""
    return lambda: jax.block_until_ready(fn(*args))


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    fmt = lambda row: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([fmt(cells[0]), rule, *(fmt(r) for r in cells[1:])])


# ----------------------------------------------------------------------------- jit per schedule


class ScheduleForward:
    """A model's forward as pure jitted functions of (state, images), one per ToMe schedule.

    The schedule (`r`, `prop_attn`, `trace_source`) is static graph structure, so each schedule is
    its own program: traced and compiled on first use, then reused from the cache for every later
    batch of the same shape and dtype. `traces[key]` counts the traces of each schedule (the Python
    body runs only while JAX traces), which proves that new batch *contents* never retrace.
    Splitting once per schedule, instead of `nnx.jit` on every call, leaves one jit dispatch of
    per-call Python overhead. Note: `__call__` / `compiled` set `model.r`.

        fwd = ScheduleForward(model)
        logits = fwd(images, r=16)
    """

    def __init__(self, model):
        self.model = model
        self.traces: collections.Counter = collections.Counter()
        self._cache: dict = {}

    def key(self, r) -> tuple:
        m = self.model
        m.r = r
        return (tuple(m.r_per_layer), m.prop_attn, m.trace_source)

    def compiled(self, r) -> tuple[Callable, object]:
        """(jitted fn(state, images) -> logits, state) of schedule r."""
        key = self.key(r)
        if key not in self._cache:
            graphdef, state = nnx.split(self.model)

            def forward(state, images):
                self.traces[key] += 1  # runs at trace time only
                return nnx.merge(graphdef, state)(images)

            self._cache[key] = (jax.jit(forward), state)
        return self._cache[key]

    def __call__(self, images, r):
        fn, state = self.compiled(r)
        return fn(state, images)
