"""One compiled forward per token-reduction schedule, cached: `CompiledForward`.

The reduction (`model.reduction`: r, method, prop_attn, trace_source, set by `apply_tome`) is static graph
structure, so every schedule is its own XLA program. `CompiledForward` splits the model once per
schedule, jits a pure function of (state, *args) and reuses it for every later call with inputs
of the same shape and dtype. The train loop's eval, eval.py, `choose_r` and the benchmarks all use
it, so "images/s at r" means one thing everywhere.

    forward = CompiledForward(model)
    logits = forward(images, r=16)             # compiles on first use of r=16
    fn, params, rest = forward.compiled(r=16)  # the jitted pure function and the model's state
    logits = fn(params, rest, images)          # params: nnx.Param state (e.g. a train state's)
    forward.precompile([0, 8, 16], images)     # several schedules' XLA compiles in parallel threads
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import jax
from flax import nnx


def _call(model, *args):
    return model(*args)


def compile_in_background(lowered) -> Future:
    """Start XLA compiling `lowered` (a `jax.jit(f).lower(...)`) in a thread; later calls of the jitted
    function with arguments like the lowered ones reuse the executable (JAX's in-memory cache). XLA
    releases the GIL, so the caller can trace and compile another program meanwhile."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(lowered.compile)
    pool.shutdown(wait=False)
    return future


class CompiledForward:
    """Cache of jitted `apply(model, *args)`, one entry per model graph (= per schedule and mode).

    apply: what to run (default `model(*args)`), e.g. `lambda m, batch: m(batch["image"])`.
    `traces[key]` counts how often each schedule was traced (the Python body runs only while JAX
    traces), which proves that new batch contents never retrace. `compiled(r)` / `__call__(..., r=)`
    set `model.r` (None keeps the model's current schedule) and return the model's current state.
    """

    def __init__(self, model: nnx.Module, apply: Callable[..., Any] = _call):
        self.model = model
        self.apply = apply
        self.traces: collections.Counter = collections.Counter()
        self._cache: dict = {}

    def compiled(self, r: Any = None) -> tuple[Callable, Any, Any]:
        """(jitted fn(params, rest, *args), params, rest) for schedule `r` (None: the model's current
        one); params / rest are the model's current nnx.Param state and the remaining state."""
        if r is not None:
            self.model.r = r
        graphdef, params, rest = nnx.split(self.model, nnx.Param, ...)
        if graphdef not in self._cache:
            key = getattr(self.model, "reduction", None) or graphdef

            def forward(params, rest, *args):
                self.traces[key] += 1  # runs at trace time only
                return self.apply(nnx.merge(graphdef, params, rest), *args)

            self._cache[graphdef] = jax.jit(forward)
        return self._cache[graphdef], params, rest

    def precompile(self, schedules: Sequence[Any], *args) -> None:
        """Compile the programs of `schedules` for `args` now: traced one after the other, then XLA
        compiles them in parallel threads (it releases the GIL), one per core. Later calls with
        arguments of the same shapes and shardings reuse them (JAX's in-memory executable cache);
        the model's schedule is left as it was."""
        current = self.model.r
        lowered = []
        for r in schedules:
            fn, params, rest = self.compiled(r)
            lowered.append(fn.lower(params, rest, *args))
        self.model.r = current
        with ThreadPoolExecutor(max(1, min(len(lowered), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda program: program.compile(), lowered))

    def __call__(self, *args, r: Any = None):
        fn, params, rest = self.compiled(r)
        return fn(params, rest, *args)
