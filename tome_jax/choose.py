"""Choose ToMe's r for a target: the smallest r that meets a FLOP ratio or a measured speedup.

    choice = tome_jax.choose_r(model, target_flops_ratio=0.5)                 # from count_flops
    choice = tome_jax.choose_r(model, target_speedup=1.5, batch_size=32)      # measured here
    choice = tome_jax.choose_r(model, target_flops_ratio=0.5, schedule="decreasing")  # (r, -1.0)
    model.r = choice.r

FLOP targets are exact (`count_flops(model, r) / count_flops(model, 0)`, scanned r = 0, 1, 2, ...).
Speed targets are measured on this machine the way the benchmarks measure: one compiled forward per
schedule (`CompiledForward`), timed interleaved with r=0 (`tome_jax.timing.time_interleaved`), and
found by bisection over r (speedup grows with r; about log2(max r) + 1 compiles).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tome_jax.models.compiled import CompiledForward
from tome_jax.models.flops import count_flops, token_counts
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


def choose_r(model, *, target_flops_ratio: float | None = None, target_speedup: float | None = None,
             schedule: str = "constant", batch_size: int = 32, repeats: int = 5,
             inputs: tuple | None = None, forward: CompiledForward | None = None) -> Choice:
    """The smallest r (schedule="constant") or `(r, -1.0)` (schedule="decreasing") that meets one target.

    target_flops_ratio: FLOPs at r over FLOPs at r=0 must be <= this (e.g. 0.5 halves the FLOPs).
    target_speedup: measured images/s over r=0 must be >= this, at `batch_size` on the model's own
    `example_inputs` (images, clips, spectrograms; MAE adds its key), or on `inputs` (the positional
    arguments of `model(*inputs)`, batch first), median of `repeats` interleaved rounds. Warns when a
    measured r > 0 is slower than r=0. Raises ValueError, naming the best reachable value, when no r
    meets the target. `model.r` and `model.trace_source` are left as they were.
    """
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
