"""One compiled forward per token-reduction schedule, cached: `CompiledForward`.

The reduction (`model.r`, `model.prop_attn`, `model.trace_source`, the method) is static graph
structure, so every schedule is its own XLA program. `CompiledForward` splits the model once per
schedule, jits a pure function of (state, *args) and reuses it for every later call with inputs
of the same shape and dtype. The train loop's eval, eval.py, `choose_r` and the benchmarks all use
it, so "images/s at r" means one thing everywhere.

    forward = CompiledForward(model)
    logits = forward(images, r=16)             # compiles on first use of r=16
    fn, state = forward.compiled(r=16)         # the jitted pure function and its state
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import jax
from flax import nnx


def _call(model, *args):
    return model(*args)


class CompiledForward:
    """Cache of jitted `apply(model, *args)`, one entry per model graph (= per schedule).

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

    def compiled(self, r: Any = None) -> tuple[Callable, Any]:
        """(jitted fn(state, *args), state) for schedule `r` (None: the model's current one)."""
        if r is not None:
            self.model.r = r
        graphdef, state = nnx.split(self.model)
        if graphdef not in self._cache:
            key = self.model.reduction if hasattr(self.model, "reduction") else graphdef

            def forward(state, *args):
                self.traces[key] += 1  # runs at trace time only
                return self.apply(nnx.merge(graphdef, state), *args)

            self._cache[graphdef] = jax.jit(forward)
        return self._cache[graphdef], state

    def __call__(self, *args, r: Any = None):
        fn, state = self.compiled(r)
        return fn(state, *args)
