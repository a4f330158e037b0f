"""Choose r for a target: the smallest r that meets a FLOP ratio or a measured speedup, for any
reduction method; and what a schedule's method costs on its own (`method_overhead`).

    choice = tome_jax.choose_r(model, target_flops_ratio=0.5)                 # from count_flops
    choice = tome_jax.choose_r(model, target_speedup=1.5, batch_size=32)      # measured here
    choice = tome_jax.choose_r(model, target_flops_ratio=0.5, schedule="decreasing")  # (r, -1.0)
    choice = tome_jax.choose_r(model, target_flops_ratio=0.5, method="diffrate")  # another method's r
    model.r = choice.r

A method's r means what its `tokens_after` says (tokens removed per block for most, k for "kth"),
so the search is the same for every registered method: r = 0, 1, 2, ... through the method's own
token counts.

FLOP targets are exact (`count_flops(model, r) / count_flops(model, 0)`, scanned r = 0, 1, 2, ...).
Speed targets are measured on this machine the way the benchmarks measure: one compiled forward per
schedule (`CompiledForward`), timed interleaved with r=0 (`tome_jax.timing.time_interleaved`), and
found by bisection over r (speedup grows with r; about log2(max r) + 1 compiles).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tome_jax.models.compiled import CompiledForward
from tome_jax.models.encoder import apply_tome
from tome_jax.models.flops import count_flops, token_counts
from tome_jax.reduction import resolve_schedule
from tome_jax.timing import blocking, time_interleaved

SCHEDULES = {"constant": lambda r: r, "decreasing": lambda r: (r, -1.0)}


@dataclasses.dataclass(frozen=True)
class Choice:
    """r: the schedule to set (`model.r = choice.r`); flops_ratio: its FLOPs over r=0's;
    speedup / images_per_sec / baseline_images_per_sec: measured (speed targets only, at batch_size);
    tried: every r looked at -> its FLOP ratio (FLOP target) or measured speedup (speed target)."""

    r: Any
    flops_ratio: float
    speedup: float | None = None
    images_per_sec: float | None = None
    baseline_images_per_sec: float | None = None
    batch_size: int | None = None
    tried: dict = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        text = f"r={self.r}: FLOPs {self.flops_ratio:.3f}x of r=0"
        if self.speedup is not None and self.baseline_images_per_sec is not None:
            text += (f", measured {self.speedup:.2f}x faster ({self.images_per_sec:.1f} vs "
                     f"{self.baseline_images_per_sec:.1f} images/s at batch {self.batch_size})")
        return text


def candidates(model, schedule: str = "constant") -> list:
    """Schedules r = 0, 1, ... up to the first that reaches the fewest tokens (larger r only clamp)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}.")
    make = SCHEDULES[schedule]
    fewest = token_counts(model, make(model.num_patches))
    out = [make(0)]
    while token_counts(model, out[-1]) != fewest:
        out.append(make(len(out)))
    return out


def smallest_meeting(values: Sequence, meets: Callable[[Any], bool]) -> int | None:
    """Index of the first value that meets, by bisection, assuming once met it stays met.

    `meets` is called about log2(len(values)) + 1 times, the last value first; None if it fails.
    """
    if not values or not meets(values[-1]):
        return None
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(values[mid]):
            hi = mid
        else:
            lo = mid + 1
    return hi


@contextlib.contextmanager
def method_set(model, method: str | None = None, options: Any = None):
    """Within the block, `model` reduces with `method` (its `options`; None: its defaults); its
    method, options and r are put back after. method=None changes nothing."""
    saved = (model.method, model.options, model.r)
    if method is not None:
        apply_tome(model, method=method, options=options)
    try:
        yield model
    finally:
        apply_tome(model, method=saved[0], options=saved[1], r=saved[2])


def choose_r(model, *, target_flops_ratio: float | None = None, target_speedup: float | None = None,
             schedule: str = "constant", batch_size: int = 32, repeats: int = 5,
             inputs: tuple | None = None, forward: CompiledForward | None = None,
             method: str | None = None, options: Any = None) -> Choice:
    """The smallest r (schedule="constant") or `(r, -1.0)` (schedule="decreasing") that meets one target.

    target_flops_ratio: FLOPs at r over FLOPs at r=0 must be <= this (e.g. 0.5 halves the FLOPs).
    target_speedup: measured images/s over r=0 must be >= this, at `batch_size` on the model's own
    `example_inputs` (images, clips, spectrograms; MAE adds its key), or on `inputs` (the positional
    arguments of `model(*inputs)`, batch first), median of `repeats` interleaved rounds. Warns when a
    measured r > 0 is slower than r=0. Raises ValueError, naming the best reachable value, when no r
    meets the target. method / options: search the r of that registered method (None: the model's
    own). `model.r`, `model.method`, its options and `model.trace_source` are left as they were.
    """
    with method_set(model, method, options):
        return _choose_r(model, target_flops_ratio, target_speedup, schedule, batch_size, repeats, inputs, forward)


def _choose_r(model, target_flops_ratio, target_speedup, schedule, batch_size, repeats, inputs, forward) -> Choice:
    if (target_flops_ratio is None) == (target_speedup is None):
        raise ValueError("pass exactly one of target_flops_ratio=... or target_speedup=....")
    values = candidates(model, schedule)
    base_flops = count_flops(model, r=0)
    ratio = {}

    def flops_ratio(r):
        if r not in ratio:
            ratio[r] = count_flops(model, r=r) / base_flops
        return ratio[r]

    if target_flops_ratio is not None:
        if not target_flops_ratio > 0:
            raise ValueError(f"target_flops_ratio must be > 0 (FLOPs at r / FLOPs at r=0), got {target_flops_ratio}.")
        for r in values:  # linear: FLOPs are cheap to count and need not fall at every step
            if flops_ratio(r) <= target_flops_ratio:
                return Choice(r, ratio[r], tried=dict(ratio))
        best = min(values, key=flops_ratio)
        raise ValueError(f"no {schedule} schedule reaches a FLOP ratio of {target_flops_ratio:g}: the best "
                         f"reachable is {ratio[best]:.4f} at r={best} ({token_counts(model, best)[-1]} tokens "
                         f"left); raise the target or try schedule={'decreasing' if schedule == 'constant' else 'constant'!r}.")

    if target_speedup <= 1.0:
        return Choice(values[0], 1.0, 1.0, batch_size=batch_size)
    inputs = model.example_inputs(batch_size) if inputs is None else tuple(inputs)
    measure = SpeedMeter(model, inputs, repeats=repeats, forward=forward)
    try:
        return search_speedup(values[1:], measure, target_speedup, flops_ratio=flops_ratio,
                              batch_size=measure.batch)
    finally:
        measure.restore()


class SpeedMeter:
    """measure(r) -> (speedup over r=0, images/s at r, images/s at r=0), timed interleaved with r=0.

    Source tracing is off while timing; `restore()` puts back `model.r` and `model.trace_source`."""

    def __init__(self, model, inputs: tuple, *, repeats: int, forward: CompiledForward | None = None):
        """inputs: the positional arguments of `model(*inputs)`, the batch on axis 0 of the first."""
        self.model, self.inputs, self.repeats = model, tuple(inputs), repeats
        self.batch = int(jnp.shape(self.inputs[0])[0])
        self.saved = (model.r, model.trace_source)
        model.trace_source = False
        self.forward = forward or CompiledForward(model)
        self.base = blocking(*self.forward.compiled(0), *self.inputs)

    def __call__(self, r) -> tuple[float, float, float]:
        run = blocking(*self.forward.compiled(r), *self.inputs)
        stats = time_interleaved({"base": self.base, "tome": run}, repeats=self.repeats, warmup=1, min_time=0.05)
        batch = self.batch
        return stats["base"].median / stats["tome"].median, batch / stats["tome"].median, batch / stats["base"].median

    def restore(self) -> None:
        self.model.r, self.model.trace_source = self.saved


def search_speedup(values: Sequence, measure: Callable, target: float, *, flops_ratio: Callable,
                   batch_size: int) -> Choice:
    """Bisection over schedules `values` (r > 0, ascending) for the first whose measured speedup
    (`measure(r)` -> (speedup, images/s, baseline images/s)) is >= target."""
    seen = {}
    bar = tqdm(total=int(np.ceil(np.log2(max(len(values), 1)))) + 1, desc="choose_r (compile + time)", leave=False)

    def meets(r):
        seen[r] = measure(r)
        bar.update(1)
        bar.set_postfix(r=str(r), speedup=f"{seen[r][0]:.2f}")
        return seen[r][0] >= target

    index = smallest_meeting(values, meets)
    bar.close()
    tried = {r: m[0] for r, m in seen.items()}
    slower = {r: s for r, s in tried.items() if s < 1.0}
    if slower:
        warnings.warn(f"ToMe was slower than r=0 at batch {batch_size} on this machine for r in "
                      f"{sorted(slower, key=str)} (speedups {', '.join(f'{s:.2f}x' for s in slower.values())}); "
                      "a larger batch usually helps (ToMe's matching is a fixed cost per layer).", stacklevel=3)
    if index is None:
        best = max(tried, key=tried.get)
        raise ValueError(f"no r reaches a measured speedup of {target:g}x at batch {batch_size}: the best "
                         f"reachable is {tried[best]:.2f}x at r={best}; lower the target, raise the batch, "
                         "or use target_flops_ratio for a machine-independent target.")
    r = values[index]
    speedup, ips, base = seen[r]
    return Choice(r, flops_ratio(r), speedup, ips, base, batch_size, tried)


def parse_target(text: str) -> dict:
    """"flops=0.5" -> {"target_flops_ratio": 0.5}; "speedup=1.5" -> {"target_speedup": 1.5}."""
    key, _, value = text.partition("=")
    names = {"flops": "target_flops_ratio", "speedup": "target_speedup"}
    try:
        return {names[key.strip()]: float(value)}
    except (KeyError, ValueError):
        raise ValueError(f"expected 'flops=RATIO' or 'speedup=FACTOR' (e.g. flops=0.5), got {text!r}.") from None


# ----------------------------------------------------------------------------- a method's own cost


def plan_program(model, r: Any, batch: int) -> tuple[Callable, tuple] | None:
    """(jitted fn, its arguments): every plan the model's method makes in one forward at schedule r,
    alone, on random inputs shaped as that forward's (per reducing block: x [B, T, C], metric
    [B, T, C // heads], size [B, T, 1], the attention probabilities [B, H, T, T] for a method that
    needs them, a key for one that draws). None when no block reduces.

    Timed next to the forward, it is the method's own work (matching, scores, sorting), which the
    forward's time includes; not the gather / scatter that applies the plan."""
    reduction = model.reduction
    reduction = dataclasses.replace(reduction, r=resolve_schedule(r, model.depth, model.num_tokens, reduction))
    counts = reduction.token_counts(model.num_tokens, model.depth)
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    layers, args = [], []
    rng = np.random.default_rng(0)  # NumPy draws: no eager JAX op to compile per shape

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape, np.float32))

    for layer, (t_in, t_out) in enumerate(zip(counts[:-1], counts[1:])):
        if t_out == t_in:
            continue
        attn = None
        if reduction.needs_attention:
            logits = rng.standard_normal((batch, heads, t_in, t_in), np.float32)
            attn = jnp.asarray(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
        layers.append(layer)
        args.append(dict(metric=normal(batch, t_in, dim // heads), x=normal(batch, t_in, dim),
                         size=jnp.ones((batch, t_in, 1), jnp.float32), attn=attn,
                         key=jax.random.key(layer) if reduction.needs_key(layer) else None))
    if not layers:
        return None

    @jax.jit
    def plans(args):
        return [reduction.plan(layer, a["metric"], a["key"], x=a["x"], size=a["size"], attn=a["attn"])
                for layer, a in zip(layers, args)]

    return plans, (args,)


def method_overhead(model, points: Sequence[tuple[str, Any]], inputs: tuple, *, repeats: int = 5,
                    forward: CompiledForward | None = None) -> dict[tuple[str, Any], dict]:
    """Images/s of the forward and the share of it spent in the method's own work, per (method, r)
    in `points`, all timed interleaved in one run (with r=0 of the model's own method, the
    baseline) on `inputs` (positional arguments of `forward`, default `model(*inputs)`; arrays or
    dicts of them with the batch on axis 0).

    Returns {(method, r): {"images_per_sec", "speedup" (over r=0), "baseline_images_per_sec",
    "overhead" (the method's plans timed alone / the forward at that point; 0 where nothing is
    reduced)}}. The model's method, r and trace_source are left as they were."""
    batch = int(jnp.shape(jax.tree.leaves(inputs)[0])[0])
    forward = forward or CompiledForward(model)
    saved_trace = model.trace_source
    model.trace_source = False
    candidates, plans = {}, {}
    try:
        candidates["base"] = blocking(*forward.compiled(0), *inputs)
        for method, r in points:
            with method_set(model, method):
                candidates[f"forward {method} {r}"] = blocking(*forward.compiled(r), *inputs)
                program = plan_program(model, r, batch)
            if program is not None:
                plans[(method, r)] = f"plans {method} {r}"
                candidates[plans[(method, r)]] = blocking(program[0], *program[1])
    finally:
        model.trace_source = saved_trace
    stats = time_interleaved(candidates, repeats=repeats, warmup=1, min_time=0.05)
    base = batch / stats["base"].median
    out = {}
    for method, r in points:
        seconds = stats[f"forward {method} {r}"].median
        own = stats[plans[(method, r)]].median if (method, r) in plans else 0.0
        out[(method, r)] = {"images_per_sec": batch / seconds, "speedup": batch / seconds / base,
                            "baseline_images_per_sec": base, "overhead": own / seconds}
    return out
