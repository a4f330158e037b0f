"""How a transformer reduces its tokens, as one small frozen (hashable, so jit-static) value.

A `TokenReduction` says which method merges tokens, how many per layer, and what the blocks carry
along (proportional attention, source tracing). Those four are the user's `SETTINGS`, set on a built
model by `tome_jax.apply_tome(model, r=16, method=..., prop_attn=..., trace_source=...)`; the fifth
field, `protected` (how many prefix tokens, class / distill, are never merged), is the model's
architecture and is set by the encoder. Every block of the shared encoder receives the value with
its layer index.

    red = TokenReduction(method="bipartite", r=(8, 8, 8, 8), protected=1)
    plan = red.plan(layer, metric)                    # MergePlan or None (nothing to do)
    x, size, source = red.reduce(plan, x, size, source)

Methods (`METHODS`):
- "bipartite": ToMe's bipartite soft matching (the paper; official semantics, docs/semantics.md).
- "prune": the same matching, but the merged tokens are dropped instead of averaged into their
  partner (the paper's merge-versus-prune ablation). Sizes of the kept tokens are unchanged.
- "random": a random set of r unprotected tokens merges into its most similar partner among the
  rest (the paper's random-matching ablation); needs a PRNG key per layer.
- "kth": groups of k consecutive unprotected tokens merge to one; here r is k (1 = nothing).
- "none": no reduction, whatever r says.
Pure Python + `tome_jax.merge`: no Flax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from tome_jax import merge as tome

METHODS = ("bipartite", "prune", "random", "kth", "none")
# The user's settings: the keywords of `apply_tome`, the fields of a recipe's `config.tome` (r as
# given there is a schedule, resolved to one int per layer by `resolve_schedule`).
SETTINGS = ("method", "r", "prop_attn", "trace_source")


@dataclasses.dataclass(frozen=True)
class TokenReduction:
    """Token reduction of a whole encoder (hashable: part of the compiled program's structure).

    method: one of METHODS. r: per-layer tokens to remove (k for "kth"), one entry per block.
    prop_attn: add log(size) of the keys to the attention logits. trace_source: track which input
    tokens each token holds. protected: the model's prefix tokens that are never merged: 0, 1 (a
    class token) or 2 (class and distill token), tokens 0 (and 1).
    """

    method: str = "bipartite"
    r: tuple[int, ...] = ()
    prop_attn: bool = True
    trace_source: bool = False
    protected: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown token reduction method {self.method!r}; known methods: "
                             f"{', '.join(METHODS)}.")
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

    def layer_r(self, layer: int) -> int:
        return self.r[layer] if self.method != "none" and layer < len(self.r) else 0

    def tokens_after(self, layer: int, tokens: int) -> int:
        """Token count after `layer` for `tokens` entering it: the per-layer clamp, in one place."""
        r, p = self.layer_r(layer), self.protected
        if self.method == "kth":
            k = min(r, tokens - p)
            return tokens if k <= 1 else p + (tokens - p) // k
        if self.method == "random":
            return tokens - min(r, max(tokens - p - 1, 0))
        return tokens - min(r, tome.max_r(tokens, p))

    def token_counts(self, tokens: int, depth: int | None = None) -> list[int]:
        """Tokens entering each layer, then the final count (depth + 1 numbers)."""
        counts = [tokens]
        for layer in range(len(self.r) if depth is None else depth):
            counts.append(self.tokens_after(layer, counts[-1]))
        return counts

    def plan(self, layer: int, metric: jax.Array, key: jax.Array | None = None) -> tome.MergePlan | None:
        """The merge plan of `layer` for metric [B, T, C'] (None: this layer keeps every token)."""
        r = self.layer_r(layer)
        tokens = metric.shape[1]
        if self.tokens_after(layer, tokens) == tokens:
            return None
        if self.method in ("bipartite", "prune"):
            return tome.bipartite_plan(metric, r, class_token=self.protected >= 1,
                                       distill_token=self.protected == 2)
        p = self.protected  # random / kth: plan over the unprotected tokens, prefix kept in front
        if self.method == "random":
            if key is None:
                raise ValueError("method='random' needs a PRNG key per layer (the model's 'reduction' "
                                 "RNG stream).")
            plan = tome.random_plan(metric[:, p:], r, key)
        else:
            plan = tome.kth_plan(metric[:, p:], min(r, tokens - p))
        return tome.shift_plan(plan, p)

    def reduce(self, plan: tome.MergePlan | None, x: jax.Array, size: jax.Array | None,
               source: jax.Array | None) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """Apply `plan` to x [B, T, C], size [B, T, 1] (None = ones) and, when traced, source [B, T, T0]."""
        if plan is None:
            return x, size, source
        if self.trace_source:
            if source is None:
                batch, tokens = x.shape[:2]
                source = jnp.broadcast_to(jnp.eye(tokens, dtype=jnp.float32), (batch, tokens, tokens))
            source = tome.keep_rows(plan, source) if self.method == "prune" else tome.apply_plan(plan, source, "amax")
        if self.method == "prune":
            if size is None:
                size = jnp.ones((*x.shape[:2], 1), jnp.float32)
            return tome.keep_rows(plan, x), tome.keep_rows(plan, size), source
        merge_fn = lambda v, mode="mean": tome.apply_plan(plan, v, mode)  # noqa: E731
        x, size = tome.merge_wavg(merge_fn, x, size)
        return x, size, source


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
