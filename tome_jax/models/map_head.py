"""Multihead attention pooling over merged tokens: big_vision's `MAPHead` (SigLIP's image tower),
timm's `AttentionPoolLatent`.

A learned probe [1, 1, D] attends over every final token [B, T', D] with one multi-head attention
(query from the probe; keys and values from the tokens), then a LayerNorm + MLP residual:

    y = MHA(probe, x)        out = y + MLP(LN(y))        pooled = out[:, 0]   ([B, D])

Merged tokens count by their size: log(size) is added to the probe's attention logits, as ToMe's
proportional attention does in the blocks, so a token that stands for s patches weighs as s copies
of itself and merging two equal tokens leaves the pooled feature unchanged. With every size 1
(r=0) the bias is 0 and the head computes big_vision's `MAPHead` exactly.

Parameter names follow timm (`attn_pool.latent`, `.q`, `.kv`, `.proj`, `.norm`, `.mlp.fc1/.fc2`);
weight_layouts.py maps big_vision's `MAPHead_0/{probe, MultiHeadDotProductAttention_0, LayerNorm_0,
MlpBlock_0}` onto them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tome_jax.models.attention import batched_attention
from tome_jax.models.encoder import Mlp, layer_norm, linear, trunc_normal


class MapHead(nnx.Module):
    """Attention pooling with token sizes: tokens [B, T, D] (+ sizes [B, T, 1]) -> pooled [B, D]."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, gelu: str = "exact",
                 norm_eps: float = 1e-6, rngs: nnx.Rngs, dtype=None):
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.latent = nnx.Param(trunc_normal(rngs.params(), (1, 1, dim)))  # big_vision's `probe`
        self.q = linear(dim, dim, rngs=rngs, dtype=dtype)
        self.kv = linear(dim, 2 * dim, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)
        self.norm = layer_norm(dim, rngs=rngs, dtype=dtype, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype, gelu=gelu)

    def __call__(self, x: jax.Array, size: jax.Array | None = None) -> jax.Array:
        """x: [B, T, D] final tokens; size: [B, T, 1] how many patches each stands for (None: 1 each).

        Returns the pooled feature [B, D]."""
        batch, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        probe = self.q(self.latent[...].astype(x.dtype))  # [1, 1, D]
        q = jnp.broadcast_to(probe.reshape(1, heads, 1, head_dim), (batch, heads, 1, head_dim))
        k, v = self.kv(x).reshape(batch, tokens, 2, heads, head_dim).transpose(2, 0, 3, 1, 4)  # [B, H, T, hd]
        bias = None if size is None else jnp.log(size)[:, None, None, :, 0].astype(jnp.float32)
        y = batched_attention(q, k, v, bias).transpose(0, 2, 1, 3).reshape(batch, 1, dim)
        y = self.proj(y)
        y = y + self.mlp(self.norm(y))
        return y[:, 0]

    def flops_per_token(self) -> float:
        """Multiply-adds for each token read: its key and value, its score and its share of the sum."""
        dim = self.q.in_features
        return float(2 * dim * dim + 2 * dim)

    def fixed_flops(self) -> float:
        """Multiply-adds that do not depend on the token count: the probe's query, proj and the MLP."""
        dim, hidden = self.q.in_features, self.mlp.fc1.out_features
        return float(2 * dim * dim + 2 * dim * hidden)
