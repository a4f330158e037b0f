"""Shared pieces of the benchmarks: machine description and tables.

Timing and per-schedule compilation are the library's own (`tome_jax.timing.time_interleaved`,
`tome_jax.models.compiled.CompiledForward`), so benchmarks time exactly what eval.py times.

Timing rules (all benchmarks): compile excluded (every function runs `warmup` times first),
`jax.block_until_ready` on every result, and the candidates are timed *interleaved*: round k runs
every candidate once, so a burst of load from other processes hits all of them alike instead of
whichever was being timed at that moment. Reported: median wall time over the rounds (and the
minimum, the least disturbed run), plus the median process CPU time.

Results: every benchmark prints its tables through a `Report` and, with `--json PATH` (by convention
benchmarks/results/NAME.json), writes the same tables as JSON with the command line, the machine and
the date. `benchmarks/render_results.py` rewrites the marked tables of benchmarks/RESULTS.md and
docs/*.md from those files, so a stated number is always the output of a stated command.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tome_jax.merge import MergePlan
from tome_jax.reduction import TokenReduction


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
    """A Markdown table (also readable as plain text). The one formatter of printed and rendered tables."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    fmt = lambda row: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([fmt(cells[0]), rule, *(fmt(r) for r in cells[1:])])


# ----------------------------------------------------------------------------- results as JSON


def add_json_arg(parser: argparse.ArgumentParser, name: str) -> None:
    """`--json PATH`: also write the printed tables as JSON (see `Report`)."""
    parser.add_argument("--json", default="", metavar="PATH",
                        help=f"also write the tables as JSON, e.g. benchmarks/results/{name}.json "
                             "(benchmarks/render_results.py puts them into the docs)")


class Report:
    """What a benchmark prints, kept to be written as JSON: the machine lines, then named tables.

    `table(key, header, rows, align)` returns the Markdown it records, so the printed table and the
    one rendered from the JSON file are the same text.
    """

    def __init__(self):
        self.machine = machine_lines()
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.tables: dict[str, dict] = {}

    def table(self, key: str, header: list[str], rows: list[list], align: str | None = None) -> str:
        cells = [[str(c) for c in row] for row in rows]
        self.tables[key] = {"header": [str(h) for h in header], "rows": cells, "align": align}
        return table(header, cells, align)

    def note(self, key: str, text: str) -> str:
        """A line printed under table `key` (rendered with it)."""
        self.tables[key].setdefault("notes", []).append(text)
        return text

    def write(self, path: str) -> None:
        """The JSON file: {"command", "machine", "date", "tables": {key: {header, rows, align, notes}}}."""
        if not path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])
        data = {"command": command, "machine": self.machine[1:],
                "date": self.date, "tables": self.tables}
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(f"wrote {path}")


# ----------------------------------------------------------------------------- the recipe's train step


def recipe_train_step(config, model):
    """(jitted train step, state, setup): the recipe's train step and its initial state exactly as the
    loop builds them (`tome_jax.train.state.build_train_state` + `loop.make_train_step`), nothing
    donated, so the same state can be passed to every timed call."""
    from tome_jax.train import loop, tasks
    from tome_jax.train.state import build_train_state

    setup = build_train_state(config, model, total_steps=1000, warmup_steps=10)
    state = setup.init()
    train_step = jax.jit(loop.make_train_step(setup.graphdef, setup.rest, setup.tx, setup.schedule, config,
                                              tasks.make_task(config)))
    return train_step, state, setup


# ----------------------------------------------------------------------------- a reduction at zero cost


@dataclasses.dataclass(frozen=True)
class FreeTokenDrop(TokenReduction):
    """Keeps the first T' tokens of each block (T' as the wrapped method's `tokens_after` clamps it):
    that method's token counts with no matching and no merging. Installed through `model.reduction`,
    it tells a method's own work apart from the cheaper blocks it buys."""

    def plan(self, layer, metric, key=None, **block_inputs):
        batch, tokens = metric.shape[:2]
        out = self.tokens_after(layer, tokens)
        if out == tokens:
            return None
        rows = jnp.broadcast_to(jnp.arange(tokens), (batch, tokens))
        return MergePlan(rows[:, :out], rows[:, out:], jnp.zeros((batch, tokens - out), jnp.int32), tokens)


def staged_merge_work(plans):
    """Three jitted functions doing only a forward's merging work, cumulatively: the matchings, + the
    merges, + the unmerges (so differences of their times are each part's cost). `plans(inputs)` ->
    [(MergePlan, tokens [B, N, C])], one per block; merges are plain means (tomesd's), two per block
    (before attention and before the MLP), each undone once."""
    from tome_jax import merge

    def match(inputs):
        return [plan for plan, _ in plans(inputs)]

    def match_merge(inputs):
        return [(merge.apply_plan(plan, tokens, "mean"), merge.apply_plan(plan, tokens + 1.0, "mean"))
                for plan, tokens in plans(inputs)]

    def match_merge_unmerge(inputs):
        return [(merge.undo_plan(plan, merge.apply_plan(plan, tokens, "mean")),
                 merge.undo_plan(plan, merge.apply_plan(plan, tokens + 1.0, "mean")))
                for plan, tokens in plans(inputs)]

    return jax.jit(match), jax.jit(match_merge), jax.jit(match_merge_unmerge)


MERGE_STAGES = ("matching", "+ merges", "+ unmerges")


def time_forwards_and_merging(model, inputs, schedules, steps, merge_input, *, repeats: int):
    """A merging model's forward at each schedule and the forward's merging work alone, timed in the
    same interleaved rounds (`tome_jax.timing.time_interleaved`, one warm-up).

    schedules: [(key, r, method)], the r=0 baseline among them; inputs: the forward's arguments.
    steps(r): the `staged_merge_work` functions for r, called on merge_input, for every r > 0 of
    schedules. Returns (stats per key, {r: [matching, merges, unmerges] seconds per forward}), each
    part the difference of the cumulative stages' medians."""
    from tome_jax.models.compiled import CompiledForward
    from tome_jax.timing import blocking, time_interleaved

    forward = CompiledForward(model)
    candidates = {}
    for key, r, method in schedules:
        model.method = method
        fn, params, rest = forward.compiled(r)
        candidates[key] = blocking(fn, params, rest, *inputs)
    merge_rs = list(dict.fromkeys(r for _, r, _ in schedules if r))
    for r in merge_rs:
        for stage, fn in zip(MERGE_STAGES, steps(r)):
            candidates[(r, stage)] = blocking(fn, merge_input)
    stats = time_interleaved(candidates, repeats=repeats, warmup=1)
    costs = {}
    for r in merge_rs:
        cumulative = [stats[(r, stage)].median for stage in MERGE_STAGES]
        costs[r] = [cumulative[0], cumulative[1] - cumulative[0], cumulative[2] - cumulative[1]]
    return stats, costs
