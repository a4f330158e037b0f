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
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import jax
from flax import nnx


def _call(model, *args):
    return model(*args)


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

    def __call__(self, *args, r: Any = None):
        fn, params, rest = self.compiled(r)
        return fn(params, rest, *args)
