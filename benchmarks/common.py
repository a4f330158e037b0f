"""Shared pieces of the benchmarks: machine description and tables.

Timing and per-schedule compilation are the library's own (`tome_jax.timing.time_interleaved`,
`tome_jax.models.compiled.CompiledForward`), so benchmarks time exactly what eval.py times.

Timing rules (all benchmarks): compile excluded (every function runs `warmup` times first),
`jax.block_until_ready` on every result, and the candidates are timed *interleaved*: round k runs
every candidate once, so a burst of load from other processes hits all of them alike instead of
whichever was being timed at that moment. Reported: median wall time over the rounds (and the
minimum, the least disturbed run), plus the median process CPU time.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys

import jax
import numpy as np


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


# ----------------------------------------------------------------------------- tables


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
