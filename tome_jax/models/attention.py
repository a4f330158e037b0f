"""Scaled dot-product attention kernels used by the transformer blocks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    """softmax(q k^T / sqrt(D) + bias) v for q, k, v: [B, H, T, D] -> [B, H, T, D].

    bias broadcasts to the logits [B, H, Tq, Tk] (proportional attention: log(size) of the keys,
    [B, 1, 1, Tk]). The computation of `jax.nn.dot_product_attention`'s XLA path (float32 logits and
    softmax, probabilities cast back to v's dtype), with the heads in front: with [B, T, H, D]
    operands XLA:CPU transposes around both batched matmuls, which made attention ~2x slower.
    """
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        logits = logits + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", probs, v)
