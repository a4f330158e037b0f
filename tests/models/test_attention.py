"""The attention kernels: the head loop equals the batched kernel; "auto" picks by key length."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tome_jax
from tome_jax.models.compiled import CompiledForward
from tome_jax.models import attention as attn


def qkv(tokens, *, batch=1, heads=2, dim=16, q_tokens=None, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    shape = lambda t: (batch, heads, t, dim)  # noqa: E731
    q = rng.standard_normal(shape(q_tokens or tokens))
    k, v = rng.standard_normal(shape(tokens)), rng.standard_normal(shape(tokens))
    # Proportional attention's bias: log(size) of the keys, sizes 1..9.
    bias = np.log(rng.integers(1, 10, (batch, 1, 1, tokens)))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v, bias))


def max_err(a, b):
    return float(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)).max())


@pytest.mark.parametrize("tokens", [11, 197, 577, 1025])
@pytest.mark.parametrize("with_bias", [False, True])
def test_head_loop_equals_batched(tokens, with_bias):
    q, k, v, bias = qkv(tokens, batch=2)
    bias = bias if with_bias else None
    want = jax.jit(attn.batched_attention)(q, k, v, bias)
    got = jax.jit(attn.head_loop_attention)(q, k, v, bias)
    assert got.shape == want.shape == q.shape
    assert max_err(got, want) < 2e-6


@pytest.mark.parametrize("budget_heads", [1, 3, 4, 100])
def test_head_loop_any_heads_per_step(budget_heads):
    """Steps of several heads, with a remainder (6 heads, 4 per step) and all heads in one step."""
    q, k, v, bias = qkv(37, batch=2, heads=3)
    loop = functools.partial(attn.head_loop_attention, logits_budget_bytes=budget_heads * 4 * 37 * 37)
    assert max_err(jax.jit(loop)(q, k, v, bias), attn.batched_attention(q, k, v, bias)) < 2e-6


def test_full_bias_and_fewer_queries():
    """A bias of the logits' full shape [B, H, Tq, Tk] and Tq != Tk; a 2-D bias broadcasts too."""
    q, k, v, _ = qkv(45, q_tokens=13, batch=2)
    bias = jnp.asarray(np.random.default_rng(1).standard_normal((2, 2, 13, 45)), jnp.float32)
    for b in (bias, bias[0, 0]):
        assert max_err(attn.head_loop_attention(q, k, v, b), attn.batched_attention(q, k, v, b)) < 2e-6


def test_bfloat16_within_tolerance():
    q, k, v, bias = qkv(577, batch=1)
    want = attn.batched_attention(q, k, v, bias)  # float32
    lo = [x.astype(jnp.bfloat16) for x in (q, k, v, bias)]
    got = jax.jit(attn.head_loop_attention)(*lo)
    assert got.dtype == jnp.bfloat16
    assert max_err(got, want) < 2e-2
    # No worse than the batched kernel in bfloat16.
    assert max_err(got, want) <= 1.5 * max_err(attn.batched_attention(*lo), want) + 1e-3


@pytest.mark.parametrize("tokens", [11, 577])
def test_gradients_equal(tokens):
    q, k, v, bias = qkv(tokens)
    w = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), jnp.float32)

    def grads(kernel):
        loss = lambda q, k, v, b: jnp.sum(kernel(q, k, v, b) * w)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, k, v, bias)

    for got, want in zip(grads(attn.head_loop_attention), grads(attn.batched_attention)):
        assert max_err(got, want) < 1e-5 * max(1.0, float(jnp.abs(want).max()))


def _kernel_used(tokens, **kwargs):
    # More heads than one loop step holds, so that the loop is a loop.
    heads = 2 * max(1, attn.LOGITS_BUDGET_BYTES // (4 * tokens * tokens)) + 1
    q, k, v, bias = qkv(tokens, heads=heads, dim=4)
    jaxpr = str(jax.make_jaxpr(functools.partial(attn.dot_product_attention, **kwargs))(q, k, v, bias))
    return "head_loop" if ("scan" in jaxpr or "while" in jaxpr) else "batched"


def test_auto_choice_at_both_sides_of_threshold():
    n = attn.HEAD_LOOP_MIN_TOKENS
    assert attn.choose_implementation(n - 1, n - 1) == "batched"
    assert attn.choose_implementation(n, n) == "head_loop"
    assert _kernel_used(n - 1) == "batched"
    assert _kernel_used(n) == "head_loop"
    assert _kernel_used(n, implementation="batched") == "batched"
    assert _kernel_used(n - 1, implementation="head_loop") == "head_loop"
    with attn.attention_implementation("batched"):
        assert _kernel_used(n) == "batched"
    assert _kernel_used(n) == "head_loop"  # the override ends with the block


def test_unknown_implementation_is_an_error():
    with pytest.raises(ValueError, match="batched"):
        attn.dot_product_attention(*qkv(5), implementation="flash")
    with pytest.raises(ValueError, match="head_loop"):
        with attn.attention_implementation("cudnn"):
            pass


def test_model_forward_same_with_either_kernel():
    """A small ViT above the threshold (patch 4: (4 * side)^2 / 16 + 1 >= threshold tokens), r=0 and r=8."""
    side = int(np.ceil(np.sqrt(attn.HEAD_LOOP_MIN_TOKENS)))
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=4 * side, patch_size=4, embed_dim=32,
                                  depth=2, num_heads=2, num_classes=5)
    assert model.num_patches + 1 >= attn.HEAD_LOOP_MIN_TOKENS
    images = jnp.asarray(np.random.default_rng(3).standard_normal((2, 4 * side, 4 * side, 3)), jnp.float32)
    for r in (0, 8):
        model.r = r
        auto = CompiledForward(model)(images)
        with attn.attention_implementation("batched"):
            batched = CompiledForward(model)(images)
        assert max_err(auto, batched) < 1e-5 * max(1.0, float(jnp.abs(batched).max()))
