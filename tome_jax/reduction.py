"""How a transformer reduces its tokens, as one small frozen (hashable, so jit-static) value.

A `TokenReduction` says which method reduces tokens, how many per layer, with which options, and
what the blocks carry along (proportional attention, source tracing). Those five are the user's
`SETTINGS`, set on a built model by `tome_jax.apply_tome(model, r=16, method=..., prop_attn=...,
trace_source=..., options=...)`; the sixth field, `protected` (how many prefix tokens, class /
distill, are never merged), is the model's architecture and is set by the encoder. Every block of
the shared encoder receives the value with its layer index.

    red = TokenReduction(method="bipartite", r=(8, 8, 8, 8), protected=1)
    plan = red.plan(layer, metric, x=x, size=size)     # the method's plan, or None (nothing to do)
    x, size, source = red.reduce(plan, x, size, source)

The methods (`METHODS`: "bipartite", "prune", "random", "kth", "none", and every other file of
`tome_jax/methods/`) are registered classes (`tome_jax.methods.register_method`); this value only
names one and delegates to it, so adding a method touches nothing here. A method's own settings
are `options`: a dict of the fields of its registered options dataclass, resolved (checked) to
that dataclass here, so the value stays hashable.
Pure Python + `tome_jax.methods`: no Flax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.methods import (METHODS, LayerInputs, ReductionMethod, method_entry,  # noqa: F401 (METHODS)
                              resolve_options)

# The user's settings: the keywords of `apply_tome`, the fields of a recipe's `config.tome` (r as
# given there is a schedule, resolved to one int per layer by `resolve_schedule`).
SETTINGS = ("method", "r", "prop_attn", "trace_source", "options")


@dataclasses.dataclass(frozen=True)
class TokenReduction:
    """Token reduction of a whole encoder (hashable: part of the compiled program's structure).

    method: one of METHODS. r: per-layer schedule entries (tokens to remove for most methods, k for
    "kth"), one per block. prop_attn: add log(size) of the keys to the attention logits.
    trace_source: track which input tokens each token holds. options: the method's options (None or
    a dict of fields: its defaults / those fields; resolved to the method's options dataclass).
    protected: the model's prefix tokens that are never merged: 0, 1 (a class token) or 2 (class
    and distill token), tokens 0 (and 1).
    """

    method: str = "bipartite"
    r: tuple[int, ...] = ()
    prop_attn: bool = True
    trace_source: bool = False
    options: Any = None
    protected: int = 0

    def __post_init__(self):
        method_entry(self.method)  # an unknown name lists the known ones
        if not isinstance(self.r, tuple) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                for v in self.r):
            raise ValueError(f"TokenReduction.r must be a tuple of per-layer ints >= 0, got {self.r!r}; "
                             "use resolve_schedule() to expand 16, (16, -1) or a fraction.")
        for name in ("prop_attn", "trace_source"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.protected not in (0, 1, 2):
            raise ValueError(f"protected must be 0, 1 (class token) or 2 (class and distill token), "
                             f"got {self.protected!r}.")
        object.__setattr__(self, "options", resolve_options(self.method, self.options))

    @property
    def reducer(self) -> ReductionMethod:
        """The registered method, with this value's options."""
        return method_entry(self.method).cls(self.options)

    @property
    def needs_attention(self) -> bool:
        """Whether blocks must hand the method their softmax attention probabilities."""
        return self.reducer.needs_attention

    @property
    def reduces_before_attention(self) -> bool:
        """Whether blocks reduce their input tokens before attention (`ReductionMethod.reduces_before_attention`)."""
        return self.reducer.reduces_before_attention

    def attention_after(self, plan: Any, attn: jax.Array) -> jax.Array:
        """The probabilities a `reduces_before_attention` block applies to its reduced tokens (attn
        [B, H, T, T] itself when the layer reduced nothing)."""
        return attn if plan is None else self.reducer.attention_after(plan, attn)

    def needs_key(self, layer: int) -> bool:
        """Whether `layer` must be given a PRNG key (a keyed method at a layer with r > 0)."""
        return self.reducer.needs_key and self.layer_r(layer) > 0

    def layer_r(self, layer: int) -> int:
        return self.r[layer] if layer < len(self.r) else 0

    def tokens_after(self, layer: int, tokens: int) -> int:
        """Token count after `layer` for `tokens` entering it: the method's per-layer clamp, in one place."""
        return self.reducer.layer_tokens_after(layer, self.layer_r(layer), tokens, self.protected)

    def token_counts(self, tokens: int, depth: int | None = None) -> list[int]:
        """Tokens entering each layer, then the final count (depth + 1 numbers)."""
        counts = [tokens]
        for layer in range(len(self.r) if depth is None else depth):
            counts.append(self.tokens_after(layer, counts[-1]))
        return counts

    def plan(self, layer: int, metric: jax.Array, key: jax.Array | None = None, *, x: jax.Array | None = None,
             size: jax.Array | None = None, attn: jax.Array | None = None) -> Any:
        """The plan of `layer` for metric [B, T, C'] float32 (None: this layer keeps every token).

        x [B, T, C], size [B, T, 1] and attn [B, H, T, T] are what the block has (a method that
        needs one of them raises when it is missing)."""
        tokens = metric.shape[1]
        if self.tokens_after(layer, tokens) == tokens:
            return None
        inputs = LayerInputs(layer, len(self.r), self.layer_r(layer), self.protected, x, metric, size, attn, key,
                             self.options)
        return self.reducer.plan(inputs)

    def reduce(self, plan: Any, x: jax.Array, size: jax.Array | None,
               source: jax.Array | None) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """Apply `plan` to x [B, T, C], size [B, T, 1] (None = ones) and, when traced, source [B, T, T0]."""
        if plan is None:
            return x, size, source
        if self.trace_source and source is None:
            batch, tokens = x.shape[:2]
            source = jnp.broadcast_to(jnp.eye(tokens, dtype=jnp.float32), (batch, tokens, tokens))
        if not self.trace_source:
            return (*self.reducer.reduce(plan, x, size, None)[:2], source)
        return self.reducer.reduce(plan, x, size, source)

    def undo(self, plan: Any, y: jax.Array) -> jax.Array:
        """Undo one layer's `plan` (not None): y [B, T', C] -> [B, T, C]."""
        return self.reducer.undo(plan, y)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The method's own matmul FLOPs at a layer that reduces tokens_in -> tokens_out."""
        return self.reducer.extra_flops(tokens_in, tokens_out, head_dim, dim)


def resolve_schedule(r: Any, depth: int, tokens: int, reduction: TokenReduction) -> tuple[int, ...]:
    """A user's schedule -> per-layer r for `depth` layers, `tokens` entering the first.

    int: every layer; a 2-tuple (r, inflect): the paper's linear schedule (`merge.parse_r`); a list of
    `depth` ints: as given (unlike `parse_r`, a shorter list is an error, not zero-padded); a float in (0, 1): that fraction of each layer's unprotected tokens
    (floor), following the token count down the layers.
    """
    if isinstance(r, float):
        if not 0.0 < r < 1.0:
            raise ValueError(f"a fractional r must be in (0, 1) (a share of each layer's tokens), got {r}.")
        fraction, values = r, []
        for layer in range(depth):
            values.append(int(fraction * (tokens - reduction.protected)))
            tokens = dataclasses.replace(reduction, r=tuple(values)).tokens_after(layer, tokens)
        return tuple(values)
    if isinstance(r, list) or (isinstance(r, tuple) and len(r) != 2):
        if len(r) != depth:
            raise ValueError(f"the r schedule has {len(r)} entries but the model has {depth} blocks; "
                             f"give one r per block (0 where nothing is merged), an int, or (r, inflect).")
    return tuple(tome.parse_r(depth, list(r) if isinstance(r, list) else r))
