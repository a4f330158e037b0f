"""Scaled dot-product attention kernels used by the transformer blocks.

`dot_product_attention` is the one entry point; it picks a kernel by sequence length:

- "batched": every head's logits at once, one [B, H, Tq, Tk] float32 tensor. Fastest for short
  sequences (ViT-B/16@224: 197 tokens).
- "head_loop": the heads in a loop (`jax.lax.map`), a few heads per step, so that one step's
  logits stay in the CPU caches (<= `LOGITS_BUDGET_BYTES`) instead of streaming a tensor of
  100+ MB through memory several times (ViT-L/16@512: [2, 16, 1025, 1025] float32 = 134 MB).
  Same math per head, the softmax normalization applied after the second matmul.

Both compute softmax(q k^T / sqrt(D) + bias) v with float32 logits and softmax (probabilities
cast to v's dtype before the second matmul), so they agree within float32 rounding. Both matmuls
run under the model's matmul policy (models/matmul.py) when q, k, v are bf16.
`attention_implementation("batched")` forces a kernel while tracing (benchmarks, tests).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math

import jax
import jax.numpy as jnp

from tome_jax.models import matmul as matmul_policy

IMPLEMENTATIONS = ("auto", "batched", "head_loop")
# "auto" loops over heads from this many key tokens on (measured on XLA:CPU, benchmarks/RESULTS.md).
HEAD_LOOP_MIN_TOKENS = 256
# Logits of one loop step (heads per step x Tq x Tk x 4 bytes) are kept below this, >= 1 head.
LOGITS_BUDGET_BYTES = 1 << 20

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("attention_implementation", default=None)


def _check(implementation: str) -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; "
                         f"use one of {', '.join(IMPLEMENTATIONS)}.")
    return implementation


@contextlib.contextmanager
def attention_implementation(implementation: str):
    """Within the block, `dot_product_attention` traces with `implementation` instead of "auto".

    Read at trace time only: jit a fresh function inside the block (a function jitted and traced
    before keeps its kernel). Used by the benchmarks to time the kernels in the same model.
    """
    token = _forced.set(_check(implementation))
    try:
        yield
    finally:
        _forced.reset(token)


def choose_implementation(q_tokens: int, k_tokens: int) -> str:
    """The kernel "auto" uses for these sequence lengths."""
    del q_tokens  # the loop pays off by key length (each query row's softmax spans all keys)
    return "head_loop" if k_tokens >= HEAD_LOOP_MIN_TOKENS else "batched"


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, *,
                          implementation: str | None = None, matmul: str = matmul_policy.DEFAULT) -> jax.Array:
    """softmax(q k^T / sqrt(D) + bias) v for q: [B, H, Tq, D], k, v: [B, H, Tk, D] -> [B, H, Tq, D].

    bias broadcasts to the logits [B, H, Tq, Tk] (proportional attention: log(size) of the keys,
    [B, 1, 1, Tk]). implementation: "auto" (by sequence length, `choose_implementation`),
    "batched" or "head_loop"; None: "auto" unless `attention_implementation` forces one.
    matmul: the matmul policy of 16-bit operands (`matmul.POLICIES`).
    """
    implementation = _check(implementation or _forced.get() or "auto")
    if implementation == "auto":
        implementation = choose_implementation(q.shape[2], k.shape[2])
    if implementation == "batched":
        return batched_attention(q, k, v, bias, matmul=matmul)
    return head_loop_attention(q, k, v, bias, matmul=matmul)


def batched_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, *,
                      matmul: str = matmul_policy.DEFAULT) -> jax.Array:
    """All heads at once: the logits are one [B, H, Tq, Tk] float32 tensor.

    The computation of `jax.nn.dot_product_attention`'s XLA path (float32 logits and softmax,
    probabilities cast back to v's dtype), with the heads in front: with [B, T, H, D] operands
    XLA:CPU transposes around both batched matmuls, which made attention ~2x slower.
    """
    return attention_with_probabilities(q, k, v, bias, matmul=matmul)[0]


def attention_with_probabilities(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, *,
                                 matmul: str = matmul_policy.DEFAULT) -> tuple[jax.Array, jax.Array]:
    """`batched_attention` that also returns its softmax probabilities: (out [B, H, Tq, D],
    probs [B, H, Tq, Tk] float32), from the same pass (for reduction methods that read them)."""
    probs = attention_probabilities(q, k, bias, matmul=matmul)
    einsum = functools.partial(matmul_policy.einsum, policy=matmul)
    return einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v), probs


def attention_probabilities(q: jax.Array, k: jax.Array, bias: jax.Array | None, *,
                            matmul: str = matmul_policy.DEFAULT) -> jax.Array:
    """softmax(q k^T / sqrt(D) + bias) [B, H, Tq, Tk] float32 for q: [B, H, Tq, D], k: [B, H, Tk, D]."""
    einsum = functools.partial(matmul_policy.einsum, policy=matmul)
    logits = einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        logits = logits + bias
    return jax.nn.softmax(logits, axis=-1)


def _one_head(q, k, v, bias, matmul):
    """q: [Tq, D], k, v: [Tk, D], bias: [Tq or 1, Tk] or None -> [Tq, D]; normalizes after p @ v."""
    einsum = functools.partial(matmul_policy.einsum, policy=matmul)
    logits = einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        logits = logits + bias
    # The row max only keeps exp() in range; it cancels in the quotient (no gradient through it).
    unnormalized = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
    total = unnormalized.sum(axis=-1, keepdims=True)
    out = einsum("qk,kd->qd", unnormalized.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / total).astype(v.dtype)


def head_loop_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, *,
                        logits_budget_bytes: int = LOGITS_BUDGET_BYTES,
                        matmul: str = matmul_policy.DEFAULT) -> jax.Array:
    """The B x H heads in a loop, as many per step as keep one step's float32 logits within budget."""
    batch, heads, q_tokens, dim = q.shape
    k_tokens = k.shape[2]
    flat = lambda x: x.reshape(batch * heads, *x.shape[2:])  # noqa: E731
    xs = [flat(q), flat(k), flat(v)]
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.ndim > 4:
            raise ValueError(f"bias must broadcast to [B, H, Tq, Tk], got shape {bias.shape}.")
        bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
        bias = flat(jnp.broadcast_to(bias, (batch, heads, bias.shape[2], k_tokens)))
        xs.append(bias)
    per_step = max(1, logits_budget_bytes // (4 * q_tokens * k_tokens))
    step = (lambda a: _one_head(*a, matmul)) if bias is not None else (lambda a: _one_head(*a, None, matmul))
    out = jax.lax.map(step, tuple(xs), batch_size=per_step if per_step > 1 else None)
    return out.reshape(batch, heads, q_tokens, dim)
