"""The reduction-method seam: `ReductionMethod`, `LayerInputs`, `register_method`, `METHODS`.

A method is one file in `tome_jax/methods/` with a class and a registration:

    @dataclasses.dataclass(frozen=True)
    class MyOptions:                     # scalar / tuple fields with defaults (hashable: jit-static)
        margin: float = 0.5

    @register_method("mine", options=MyOptions)
    class Mine(ReductionMethod):
        def tokens_after(self, r, tokens, protected): ...   # the per-layer clamp (int arithmetic)
        def plan(self, inputs): ...                         # LayerInputs -> any pytree, or None
        # reduce / undo / extra_flops have defaults (below); override where the method differs

Every module of this package is imported by `tome_jax/methods/__init__.py`, so the file is the whole
change: `apply_tome(model, method="mine", options=dict(margin=0.3))` and `config.tome.method` /
`config.tome.options` take it; `METHODS` lists it; `tests/methods/test_properties.py` tests it.

What a block hands a method: one `LayerInputs` (the layer index and the depth, its r, the protected prefix-token
count, x [B, T, C] after attention's residual, the metric [B, T, C'] float32 (keys averaged over
heads), size [B, T, 1] or None, the attention probabilities [B, H, T, T] or None, a PRNG key or None,
and the method's options). A method asks for the optional inputs with class attributes:
- `needs_attention = True`: the block's `Attention` also returns its softmax probabilities, from the
  same pass (the explicit-softmax kernel; other methods keep the fast kernel, unchanged).
- `needs_key = True`: the encoder draws a key per reducing layer from the model's `reduction` RNG
  stream (re-seeded by the train loop every step).

A plan is any pytree (e.g. `merge.MergePlan`); `None` means "this layer keeps every token". The
defaults treat a plan as a `MergePlan`: `reduce` merges x by the size-weighted mean
(`merge.merge_wavg`), the sizes by sum and the sources by amax; `undo` is `merge.undo_plan`. A
method whose outputs are not one-to-one with groups of input tokens (DCT) overrides `reduce` and
`undo` and documents what sizes and sources mean for it (or raises where nothing sensible exists).

Pure `jax.numpy` + `tome_jax.merge`; no Flax. Sits between merge.py and reduction.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.typed_fields import typed


class LayerInputs(NamedTuple):
    """Everything one block offers its method to plan a reduction (a pytree of arrays + statics).

    layer: the block's index; depth: how many blocks the encoder has. r: its schedule entry (before
    any clamp). protected: prefix tokens (class / distill) that are never reduced, tokens 0 (and 1).
    x: [B, T, C] the tokens the reduction applies to (None when called through
    `TokenReduction.plan(layer, metric)` alone).
    metric: [B, T, C'] float32, the attention keys averaged over heads. size: [B, T, 1] token sizes
    or None (all ones). attn: [B, H, T, T] softmax probabilities (only for `needs_attention`
    methods, else None). key: a PRNG key (only for `needs_key` methods, else None). options: the
    method's options dataclass.
    """

    layer: int
    depth: int
    r: int
    protected: int
    x: jax.Array | None
    metric: jax.Array
    size: jax.Array | None
    attn: jax.Array | None
    key: jax.Array | None
    options: Any


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a method that takes none: `tome.options` must be empty."""


class ReductionMethod:
    """One token-reduction method; subclasses override `tokens_after` and `plan` (and where they
    differ, `reduce`, `undo`, `extra_flops`). An instance carries its options (`self.options`)."""

    needs_attention: bool = False  # the block returns its softmax probabilities as inputs.attn
    needs_key: bool = False  # the encoder draws a PRNG key per reducing layer as inputs.key
    one_to_one: bool = True  # every output token is a group of input tokens (sources partition them)
    # The block plans and reduces its INPUT tokens with this block's attention probabilities, then
    # attends with `attention_after` (MCTF's one-step-ahead attention); False: reduce between
    # attention and MLP (ToMe).
    reduces_before_attention: bool = False

    def __init__(self, options: Any):
        self.options = options

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        """Tokens left after a layer with schedule entry `r` for `tokens` entering it (the clamp:
        used by the forward, token counts, FLOPs and choose_r alike)."""
        raise NotImplementedError

    def layer_tokens_after(self, layer: int, r: int, tokens: int, protected: int) -> int:
        """`tokens_after` at block `layer`: what `TokenReduction` asks. The default ignores the
        layer; a method whose count depends on the block (DiffRate: per-block schedules, and its
        first block's extra prune) overrides this instead."""
        return self.tokens_after(r, tokens, protected)

    def not_applicable(self, protected: int) -> str | None:
        """Why this method, with its options, cannot run on a model with `protected` prefix tokens
        (0: no class token), or None when it can. A method whose rule reads a token the model lacks
        (DiffRate's importance is the class token's attention) says so here; its `plan` raises the
        same reason, and `evaluate.compare_methods` lists it as not applicable with it."""
        return None

    def plan(self, inputs: LayerInputs) -> Any:
        """The layer's plan (a pytree), or None when nothing is reduced. Called only when
        `tokens_after` says the count changes."""
        raise NotImplementedError

    def reduce(self, plan: Any, x: jax.Array, size: jax.Array | None,
               source: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Apply `plan` to x [B, T, C], size [B, T, 1] (None = ones) and source [B, T, T0] (None:
        not traced) -> (x [B, T', C], size [B, T', 1], source [B, T', T0] or None).

        Default: merge by the size-weighted mean, sizes add, sources by amax (a group's union)."""
        if source is not None:
            source = tome.apply_plan(plan, source, "amax")
        x, size = tome.merge_wavg(lambda v, mode="mean": tome.apply_plan(plan, v, mode), x, size)
        return x, size, source

    def attention_after(self, plan: Any, attn: jax.Array) -> jax.Array:
        """For `reduces_before_attention` methods: the attention probabilities [B, H, T', T'] the block
        applies to the reduced tokens' values, from its probabilities attn [B, H, T, T] on the
        incoming tokens and this layer's plan (not None)."""
        raise NotImplementedError(f"{type(self).__name__} reduces after attention; it has no attention_after.")

    def undo(self, plan: Any, y: jax.Array) -> jax.Array:
        """y [B, T', C] -> [B, T, C]: each input position gets its output token's value."""
        return tome.undo_plan(plan, y)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The method's own matmul FLOPs at one layer (one multiply-add = one FLOP), counted by
        `count_flops` where the layer reduces. Default: ToMe's bipartite similarity (A @ B^T)."""
        return float(((tokens_in + 1) // 2) * (tokens_in // 2) * head_dim)


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    cls: type  # a ReductionMethod subclass
    options: type  # its options dataclass (scalar / tuple fields with defaults)


_REGISTRY: dict[str, MethodEntry] = {}


def register_method(name: str, *, options: type | None = None) -> Callable[[type], type]:
    """Class decorator registering a `ReductionMethod` subclass under `name` with its options
    dataclass (None: the method takes no options). Registering a name twice is an error."""
    options = NoOptions if options is None else options
    if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
        raise TypeError(f"register_method({name!r}): options must be a frozen dataclass, got {options!r}.")

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, ReductionMethod)):
            raise TypeError(f"register_method({name!r}) decorates a ReductionMethod subclass, got {cls!r}.")
        if name in _REGISTRY:
            raise ValueError(f"token reduction method {name!r} is already registered.")
        _REGISTRY[name] = MethodEntry(cls, options)
        return cls
    return decorator


def method_entry(name: str) -> MethodEntry:
    """The entry registered as `name`; an unknown name is a ValueError listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown token reduction method {name!r}; known methods: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def resolve_options(name: str, options: Any) -> Any:
    """`options` (None or {}: the defaults, a dict / ConfigDict of fields, or the options object) ->
    the options dataclass of method `name`. Unknown fields and wrong types are ValueErrors."""
    kind = method_entry(name).options
    if isinstance(options, kind):
        return options
    if dataclasses.is_dataclass(options):
        fields = ", ".join(f.name for f in dataclasses.fields(kind)) or "none"
        raise ValueError(f"tome.options is a {type(options).__name__}, but method={name!r} takes "
                         f"{kind.__name__}; pass a dict of its fields ({fields}).")
    return typed(kind, options, f"tome.options (method {name!r})")


class _MethodNames(Sequence):
    """The registered method names, in registration order (a read-only view of the registry)."""

    def __getitem__(self, index):
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


METHODS: Sequence[str] = _MethodNames()


def ones_size(x: jax.Array) -> jax.Array:
    """Sizes [B, T, 1] of ones for tokens x [B, T, C] (nothing merged yet)."""
    return jnp.ones((*x.shape[:2], 1), jnp.float32)
