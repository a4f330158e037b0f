"""The transformer trunk shared by every model family: blocks with token reduction.

`Encoder` owns `blocks.i` (timm names) and the model's `TokenReduction`; a family subclasses it,
adds a stem (how inputs become tokens: 2-D patches, 3-D tubelets, spectrogram patches, MAE's
visible tokens) and a head, and calls `self.encode(tokens)`. Constructors know nothing of ToMe: it
is applied to a built model by `apply_tome(model, r=16, method=..., prop_attn=..., trace_source=...,
options=...)` (only the keywords given change). `model.r`, `model.method`, `model.prop_attn`,
`model.trace_source` and `model.options` read the settings, and assigning one is `apply_tome` with that keyword. The
reduction is a plain attribute, static under jit, so each schedule compiles once. Each block
reduces between attention and MLP (docs/semantics.md), or, for a method that
`reduces_before_attention` (MCTF), inside attention (docs/methods.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from tome_jax.models import matmul
from tome_jax.models.attention import attention_probabilities, attention_with_probabilities, dot_product_attention
from tome_jax.models.weight_rules import AdaptedStateDict, mae_pretraining_rule, timm_param_names
from tome_jax.reduction import TokenReduction, resolve_schedule

trunc_normal = nnx.initializers.truncated_normal(stddev=0.02)


def linear(din: int, dout: int, *, rngs: nnx.Rngs, dtype, use_bias: bool = True) -> nnx.Linear:
    """A dense layer multiplying under the default matmul policy (models/matmul.py)."""
    return matmul.linear(din, dout, use_bias=use_bias, kernel_init=trunc_normal, dtype=dtype, rngs=rngs)


def layer_norm(dim: int, *, rngs: nnx.Rngs, dtype, eps: float = 1e-6) -> nnx.LayerNorm:
    """timm's LayerNorm; eps 1e-6 (ViT, big_vision), 1e-5 for CLIP towers (torch's default)."""
    return nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)


def param_names(params) -> Any:
    """A tree like `params` whose leaves are the timm-style dotted names ("blocks.3.attn.qkv.kernel")."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), params)


class LayerScale(nnx.Module):
    """Per-channel scale `gamma` (timm `ls1` / `ls2`)."""

    def __init__(self, dim: int, init_value: float):
        self.gamma = nnx.Param(jnp.full((dim,), init_value, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)


class Attention(nnx.Module):
    """Multi-head self-attention that also returns ToMe's metric (keys averaged over heads)."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, proj_drop: float = 0.0,
                 rngs: nnx.Rngs, dtype=None):
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = linear(dim, 3 * dim, use_bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)

    def __call__(self, x: jax.Array, size: jax.Array | None = None, *,
                 return_probabilities: bool = False) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """x: [B, T, C]; size: [B, T, 1] token sizes for proportional attention, or None.

        Returns (out [B, T, C], metric [B, T, C // heads], probs): probs is None, or with
        `return_probabilities` the softmax probabilities [B, H, T, T] float32 of this same pass (the
        explicit-softmax kernel; otherwise `dot_product_attention` picks the fastest).
        """
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        metric = qkv[:, :, 1].astype(jnp.float32).mean(axis=2)  # keys averaged over heads: [B, T, D]
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # [B, H, T, D] each
        bias = self._size_bias(size, q.dtype)
        if return_probabilities:
            out, probs = attention_with_probabilities(q, k, v, bias, matmul=self.matmul_policy)
        else:
            out, probs = dot_product_attention(q, k, v, bias, matmul=self.matmul_policy), None
        return self._output(out), metric, probs

    # The same attention in two halves, for a method that reduces the tokens in between (MCTF): the
    # probabilities of the incoming tokens (q and k only), then probabilities applied to the values
    # of the reduced tokens (v only).

    def probabilities(self, x: jax.Array, size: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """x: [B, T, C] -> (softmax probabilities [B, H, T, T] float32, metric [B, T, C // heads])."""
        batch, tokens, dim = x.shape
        qk = self._qkv_columns(x, 0, 2).reshape(batch, tokens, 2, self.num_heads, dim // self.num_heads)
        metric = qk[:, :, 1].astype(jnp.float32).mean(axis=2)
        q, k = qk.transpose(2, 0, 3, 1, 4)
        return attention_probabilities(q, k, self._size_bias(size, q.dtype), matmul=self.matmul_policy), metric

    def attend(self, probs: jax.Array, x: jax.Array) -> jax.Array:
        """probs [B, H, T, T] applied to the values of x [B, T, C] -> out [B, T, C]."""
        batch, tokens, dim = x.shape
        v = self._qkv_columns(x, 2, 3).reshape(batch, tokens, self.num_heads, dim // self.num_heads)
        return self._output(matmul.einsum("bhqk,bkhd->bhqd", probs.astype(v.dtype), v, policy=self.matmul_policy))

    def _qkv_columns(self, x: jax.Array, start: int, stop: int) -> jax.Array:
        """`self.qkv(x)` restricted to its parts start..stop (0: q, 1: k, 2: v): [B, T, (stop - start) * C]."""
        dim = x.shape[-1]
        kernel = self.qkv.kernel[...][:, start * dim:stop * dim]
        bias = None if self.qkv.bias is None else self.qkv.bias[...][start * dim:stop * dim]
        x, kernel, bias = dtypes.promote_dtype((x, kernel, bias), dtype=self.qkv.dtype)
        y = self.qkv.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=self.qkv.precision)
        return y if bias is None else y + bias

    @property
    def matmul_policy(self) -> str:
        """Attention multiplies as its qkv layer does (`models/matmul.py`)."""
        return matmul.policy_of(self.qkv.dot_general)

    @staticmethod
    def _size_bias(size: jax.Array | None, dtype) -> jax.Array | None:
        """Proportional attention: a key that stands for s tokens counts s times ([B, 1, 1, T] or None)."""
        return None if size is None else jnp.log(size)[:, None, None, :, 0].astype(dtype)

    def _output(self, out: jax.Array) -> jax.Array:
        """Heads [B, H, T, D] -> proj -> [B, T, C]."""
        batch, heads, tokens, head_dim = out.shape
        return self.proj_drop(self.proj(out.transpose(0, 2, 1, 3).reshape(batch, tokens, heads * head_dim)))


# The MLP activation: torch's erf GELU, big_vision's tanh approximation, or OpenAI CLIP's QuickGELU
# (x * sigmoid(1.702 x)).
GELUS = ("exact", "tanh", "quick")


def gelu(x: jax.Array, kind: str) -> jax.Array:
    """The GELU named by `kind` (one of GELUS)."""
    if kind == "quick":
        return x * jax.nn.sigmoid(1.702 * x)
    return jax.nn.gelu(x, approximate=kind == "tanh")


class Mlp(nnx.Module):
    """fc1 -> GELU (`gelu`: exact as torch, tanh as big_vision, quick as OpenAI CLIP) -> fc2, timm's
    `mlp.fc1` / `mlp.fc2`."""

    def __init__(self, dim: int, hidden: int, *, drop: float = 0.0, rngs: nnx.Rngs, dtype=None,
                 gelu: str = "exact"):
        self.gelu = gelu  # static: which GELU
        self.fc1 = linear(dim, hidden, rngs=rngs, dtype=dtype)
        self.fc2 = linear(hidden, dim, rngs=rngs, dtype=dtype)
        self.drop = nnx.Dropout(drop, rngs=rngs)

    @property
    def approximate(self) -> bool:
        """Whether the GELU is big_vision's tanh approximation."""
        return self.gelu == "tanh"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.drop(gelu(self.fc1(x), self.gelu))
        return self.drop(self.fc2(x))


class Block(nnx.Module):
    """Pre-norm transformer block; the token reduction runs between attention and MLP (or, for a
    method that `reduces_before_attention`, on the block's input tokens, inside attention)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, drop: float = 0.0, drop_path: float = 0.0,
                 rngs: nnx.Rngs, dtype=None, gelu: str = "exact", norm_eps: float = 1e-6):
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=drop, rngs=rngs, dtype=dtype)
        self.ls1 = LayerScale(dim, init_values) if init_values else None
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, rngs=rngs, dtype=dtype, gelu=gelu)
        self.ls2 = LayerScale(dim, init_values) if init_values else None
        # Stochastic depth = dropout of a whole sample's residual branch.
        self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2), rngs=rngs)

    def __call__(self, x: jax.Array, size: jax.Array | None, source: jax.Array | None,
                 reduction: TokenReduction, layer: int, key: jax.Array | None = None):
        """x: [B, T, C]; size: [B, T, 1] or None; source: [B, T, T0] or None.

        Returns (x, size, source) with T' tokens and this layer's plan (None: nothing reduced).
        """
        attn_size = size if reduction.prop_attn else None
        if reduction.reduces_before_attention:
            # MCTF: the reduction is decided on the block's input tokens with this block's attention
            # probabilities, which, reduced, then act on the reduced tokens' values (one attention pass).
            probs, metric = self.attn.probabilities(self.norm1(x), attn_size)
            x, size, source, plan = self._reduce(reduction, layer, key, x, size, source, metric, probs)
            out = self.attn.attend(reduction.attention_after(plan, probs), self.norm1(x))
            x = x + self.drop_path(out if self.ls1 is None else self.ls1(out))
        else:
            out, metric, probs = self.attn(self.norm1(x), attn_size, return_probabilities=reduction.needs_attention)
            x = x + self.drop_path(out if self.ls1 is None else self.ls1(out))
            x, size, source, plan = self._reduce(reduction, layer, key, x, size, source, metric, probs)
        out = self.mlp(self.norm2(x))
        x = x + self.drop_path(out if self.ls2 is None else self.ls2(out))
        return x, size, source, plan

    @staticmethod
    def _reduce(reduction: TokenReduction, layer: int, key: jax.Array | None, x: jax.Array, size, source,
                metric: jax.Array, attn: jax.Array | None):
        """The reduction, in one place: the method plans from what the block has, then applies its plan."""
        plan = reduction.plan(layer, metric, key, x=x, size=size, attn=attn)
        return (*reduction.reduce(plan, x, size, source), plan)


class EncoderOutput(NamedTuple):
    """What the encoder returns: tokens [B, T', C], sizes [B, T', 1] (ones when nothing merged),
    sources [B, T', T] or None, and one MergePlan (or None) per block, to undo the merges."""

    x: jax.Array
    size: jax.Array
    source: jax.Array | None
    plans: tuple


class Encoder(nnx.Module):
    """Transformer blocks with token reduction; model families subclass it.

    A subclass builds its stem, then calls `Encoder.__init__(self, ...)` with the number of tokens
    the stem produces (for fractional r and FLOP counts) and how many of them are prefix tokens
    (class / distill token: never merged), then builds its head. The model starts without
    reduction (r=0, the `TokenReduction` defaults); `apply_tome` changes that. Class attributes name the family's parameters for the optimizer:
    `stem_params` (layer 0 of layer-wise lr decay) and `no_weight_decay_params`.
    """

    stem_params: tuple[str, ...] = ()
    no_weight_decay_params: tuple[str, ...] = ()
    block_class: type = Block  # a family whose blocks add to the encoder's (DiT's adaLN) names its subclass

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, num_tokens: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, init_values: float | None = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, num_prefix_tokens: int = 0,
                 dtype=None, rngs: nnx.Rngs, gelu: str = "exact", norm_eps: float = 1e-6):
        if gelu not in GELUS:
            raise ValueError(f"gelu must be one of {GELUS} (exact: torch/timm; tanh: big_vision; quick: OpenAI "
                             f"CLIP), got {gelu!r}.")
        self.embed_dim, self.depth, self.num_tokens = embed_dim, depth, num_tokens
        self.blocks = nnx.List([
            self.block_class(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                             init_values=init_values, drop=drop_rate,
                             drop_path=drop_path_rate * i / max(depth - 1, 1), rngs=rngs, dtype=dtype,
                             gelu=gelu, norm_eps=norm_eps)
            for i in range(depth)
        ])
        # Keys of the methods that draw at random ("random"); re-seeded by the train loop every step.
        self.reduction_rngs = nnx.Rngs(reduction=0)
        self._reduction = TokenReduction(r=(0,) * depth, protected=num_prefix_tokens)
        self._schedule = 0  # r as the user gave it (a list is kept as a tuple: static attributes are hashable)
        self._schedule_is_list = False

    @property
    def gelu(self) -> str:
        """The MLPs' GELU: "exact" (torch, timm), "tanh" (big_vision's approximation) or "quick" (OpenAI CLIP)."""
        return self.blocks[0].mlp.gelu

    @gelu.setter
    def gelu(self, value: str):
        if value not in GELUS:
            raise ValueError(f"gelu must be one of {GELUS}, got {value!r}.")
        for mlp in self.mlps():
            mlp.gelu = value

    def mlps(self) -> list[Mlp]:
        """The MLPs whose GELU is the model's: the blocks'; a head with an MLP (MAP) adds its own."""
        return [block.mlp for block in self.blocks]

    @property
    def matmul(self) -> str:
        """How 16-bit matmuls run (`matmul.POLICIES`); assigning it sets every dense layer's."""
        return matmul.policy_of(self.blocks[0].attn.qkv.dot_general)

    @matmul.setter
    def matmul(self, value: str):
        matmul.set_matmul(self, value)

    # --- the weights' preprocessing ----------------------------------------------------------------

    def set_pretrained_cfg(self, cfg: dict | None, **fixed) -> None:
        """Store the family's `pretrained_cfg` (+ `fixed` entries such as input_size) in a hashable
        form: it is static graph structure."""
        items = dict(cfg or {}, **fixed).items()
        self._pretrained_cfg = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items))

    @property
    def pretrained_cfg(self) -> dict:
        """Preprocessing of the weights: input_size, mean, std, crop_pct, interpolation, architecture."""
        return dict(getattr(self, "_pretrained_cfg", ()))

    # --- an example input (choose_r's timing, benchmarks) -------------------------------------------

    def example_inputs(self, batch: int, dtype=jnp.float32) -> tuple:
        """Positional arguments of one forward, `model(*inputs)`, on `batch` random inputs shaped by
        `pretrained_cfg["input_size"]`: images [B, H, W, C], clips [B, T, H, W, C], spectrograms
        [B, time, freq, 1]. A family whose forward takes more than its input extends this (MAE: + key)."""
        shape = (batch, *self.pretrained_cfg["input_size"])
        return (jax.random.normal(jax.random.key(0), shape, dtype),)

    # --- token reduction: one hashable value, set by `apply_tome` -------------------------------------

    @property
    def reduction(self) -> TokenReduction:
        return self._reduction

    @reduction.setter
    def reduction(self, value: TokenReduction):
        """Install a whole value (e.g. a `TokenReduction` subclass in a benchmark); settings go
        through `apply_tome`."""
        if len(value.r) != self.depth or value.protected != self._reduction.protected:
            raise ValueError(f"reduction must have {self.depth} entries in r and protected="
                             f"{self._reduction.protected} (the model's prefix tokens), got {value}.")
        self._reduction = value

    @property
    def r(self):
        """The schedule as set: int, (r, inflect), a per-layer list or a fraction."""
        return list(self._schedule) if self._schedule_is_list else self._schedule

    # Shorthands: `model.r = 16` is `apply_tome(model, r=16)`, and so on for every setting.
    @r.setter
    def r(self, value):
        apply_tome(self, r=value)

    method = property(lambda self: self._reduction.method, lambda self, v: apply_tome(self, method=v))
    options = property(lambda self: self._reduction.options, lambda self, v: apply_tome(self, options=v))
    prop_attn = property(lambda self: self._reduction.prop_attn, lambda self, v: apply_tome(self, prop_attn=v))
    trace_source = property(lambda self: self._reduction.trace_source,
                            lambda self, v: apply_tome(self, trace_source=v))

    @property
    def r_per_layer(self) -> list[int]:
        """The schedule's r of each block, before the per-block clamp."""
        return list(self._reduction.r)

    def token_counts(self, r: Any = None) -> list[int]:
        """Tokens entering each block, then the final count (depth + 1 numbers)."""
        reduction = self._reduction
        if r is not None:
            reduction = dataclasses.replace(reduction, r=resolve_schedule(r, self.depth, self.num_tokens, reduction))
        return reduction.token_counts(self.num_tokens, self.depth)

    # --- the forward --------------------------------------------------------------------------------

    def encode(self, x: jax.Array, size: jax.Array | None = None,
               source: jax.Array | None = None) -> EncoderOutput:
        """x: [B, T, C] tokens, protected prefix tokens first -> EncoderOutput."""
        reduction, plans = self._reduction, []
        for layer, block in enumerate(self.blocks):
            key = self.reduction_rngs.reduction() if reduction.needs_key(layer) else None
            x, size, source, plan = block(x, size, source, reduction, layer, key)
            plans.append(plan)
        if size is None:
            size = jnp.ones((*x.shape[:2], 1), jnp.float32)
        return EncoderOutput(x, size, source, tuple(plans))

    def unmerge(self, plans, y: jax.Array) -> jax.Array:
        """Undo every merge: y [B, T', C] -> [B, T, C] (each token holds its final group's value),
        by the model's method (`plans` as `encode` returned them under the same reduction)."""
        for plan in reversed(plans):
            if plan is not None:
                y = self._reduction.undo(plan, y)
        return y

    # --- what the optimizer needs to know -------------------------------------------------------------

    def layer_ids(self, params) -> Any:
        """A tree like `params` (an nnx.State of this model) of layer indices for layer-wise lr decay:
        0 for the stem, i + 1 for blocks.i, depth + 1 for everything after (norm, head, decoder)."""
        def layer(name: str) -> int:
            parts = name.split(".")
            if parts[0] in self.stem_params:
                return 0
            if parts[0] == "blocks":
                return int(parts[1]) + 1
            return self.depth + 1
        return jax.tree.map(layer, param_names(params))

    def weight_decay_mask(self, params) -> Any:
        """True where weight decay applies: matrices, except `no_weight_decay_params` (timm's rule:
        no decay for biases, norm scales, tokens and position embeddings)."""
        return jax.tree.map(lambda name, p: p.ndim > 1 and name.split(".")[0] not in self.no_weight_decay_params,
                            param_names(params), params)

    # --- FLOPs (paper convention: one multiply-add = one FLOP) -----------------------------------------

    def stem_flops(self) -> float:
        """FLOPs of one example's stem; a family with a matmul stem overrides this."""
        return 0.0

    def head_flops(self) -> float:
        """FLOPs of one example's head; a family with a classifier overrides this."""
        return 0.0

    def forward_flops(self, r: Any = None) -> float:
        """Forward FLOPs for one example, each block at its actual token count after reduction (one
        multiply-add = one FLOP, `tome_jax.count_flops`); a family whose blocks differ (windowed
        attention) overrides it.

        Counts every matmul: the stem (`stem_flops()`, e.g. patch embedding), qkv, q @ k, attention @ v,
        proj, the method's own matmuls where a block reduces (`ReductionMethod.extra_flops`: ToMe's
        A @ B^T similarity over head_dim by default), MLP and the head (`head_flops()`, plus
        `head_flops_per_token()` per final token). Norms, softmax and elementwise ops are ignored, as
        in the paper (fvcore). Works under `nnx.eval_shape` too. r=None: `model.r`.
        """
        dim = self.embed_dim
        hidden = self.blocks[0].mlp.fc1.out_features
        head_dim = dim // self.blocks[0].attn.num_heads
        counts = self.token_counts(r)
        flops = self.stem_flops()
        for t_in, t_out in zip(counts[:-1], counts[1:]):
            flops += t_in * dim * 3 * dim + 2 * t_in * t_in * dim + t_in * dim * dim  # attention
            if t_out < t_in:
                flops += self._reduction.extra_flops(t_in, t_out, head_dim, dim)  # the method's own matmuls
            flops += 2 * t_out * dim * hidden  # MLP after the reduction
        return float(flops + self.head_flops() + counts[-1] * self.head_flops_per_token())

    def head_flops_per_token(self) -> float:
        """FLOPs of one example's head for each token it reads (a MAP head's keys, values and scores),
        counted at the final token count; 0 for heads that read a fixed number of tokens."""
        return 0.0

    # --- checkpoints: the family's rules, applied by load_timm ------------------------------------------

    def adapt_state_dict(self, state_dict: dict[str, Any]) -> AdaptedStateDict:
        """This family's rules for a timm-named state dict {name: array}, applied by `load_timm` before
        the keys are matched to the parameters. A family with its own names or grids extends it with
        `super().adapt_state_dict(...)` (weight_rules.py holds the shared pieces).

        The default is the MAE pre-training rule: a checkpoint with an MAE decoder, loaded into a
        model without one, has its decoder ignored (and its final `norm`, with `fc_norm` left at its
        init, when the model pools with `fc_norm` instead), as the official MAE fine-tuning does."""
        return mae_pretraining_rule(state_dict, timm_param_names(self))


def apply_tome(model: Encoder, *, method: str | None = None, r: Any = None, prop_attn: bool | None = None,
               trace_source: bool | None = None, options: Any = None) -> Encoder:
    """Set token reduction on a built model (any `Encoder`); returns the model. Only the keywords
    given change (None: as it is). The keywords are `tome_jax.reduction.SETTINGS`, the fields of a
    recipe's `config.tome`.

    method: one of `reduction.METHODS`. r: an int for every block, (r, inflect) (the paper's linear
    schedule), a list of one int per block, or a fraction in (0, 1) of each block's unprotected
    tokens. prop_attn: proportional attention. trace_source: track which input tokens each token
    holds (`return_info["source"]`). options: the method's own settings, a dict of the fields of its
    options dataclass (docs/methods.md; {}: its defaults); a new method without options starts from
    its defaults.

        tome_jax.apply_tome(model, r=16, method="bipartite", prop_attn=True, trace_source=False)
        tome_jax.apply_tome(model, method="pitome", options=dict(margin=0.5))
    """
    given = dict(method=method, r=r, prop_attn=prop_attn, trace_source=trace_source, options=options)
    changes = {k: v for k, v in given.items() if v is not None and k != "r"}
    if method is not None and method != model.reduction.method and options is None:
        changes["options"] = None  # another method: its default options
    reduction = dataclasses.replace(model.reduction, **changes)  # validates the values
    schedule = model.r if r is None else r  # a fraction resolves against the new method's token counts
    per_layer = resolve_schedule(schedule, model.depth, model.num_tokens, reduction)
    model._schedule_is_list = isinstance(schedule, list)
    model._schedule = tuple(schedule) if model._schedule_is_list else schedule
    model._reduction = dataclasses.replace(reduction, r=per_layer)
    return model
