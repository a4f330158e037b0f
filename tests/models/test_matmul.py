"""The matmul policy (tome_jax/models/matmul.py): bf16 dots ask for float32 output, forward and
backward; float32 programs are untouched; one switch sets every dense layer and attention."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax.models import matmul

_DOT = re.compile(r"stablehlo.dot_general.*?:\s*\(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\) -> tensor<[^>]*x(\w+)>")


def _train_program(dtype, policy: str) -> str:
    """StableHLO of the gradient of a 2-block ViT's loss (forward + backward) with ToMe."""
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=32, depth=2, dtype=dtype, r=2, matmul=policy)
    fn, params, rest = tome_jax.CompiledForward(model).compiled()
    loss = lambda p, x: fn(p, rest, x).astype(jnp.float32).sum()  # noqa: E731
    return jax.jit(jax.grad(loss)).lower(params, jnp.zeros((2, 32, 32, 3))).as_text()


@pytest.fixture(scope="module")
def programs():
    return {(str(jnp.dtype(d)), p): _train_program(d, p)
            for d in (jnp.float32, jnp.bfloat16) for p in matmul.POLICIES}


def test_float32_program_is_the_same_under_every_policy(programs):
    assert programs["float32", "float32_result"] == programs["float32", "native"]
    assert programs["bfloat16", "float32_result"] != programs["bfloat16", "native"]


def test_every_bf16_dot_asks_for_float32_output_forward_and_backward(programs):
    dots = collections.Counter(_DOT.findall(programs["bfloat16", "float32_result"]))
    # 2 blocks x (qkv, proj, fc1, fc2, 2 attention matmuls) + head: 13 forward dots, each with 2
    # gradient dots (the patch embedding is a convolution); the matching's 2 score dots are float32.
    assert dots == {("bf16", "bf16", "f32"): 13 * 3 - 1, ("f32", "f32", "f32"): 2}, dots
    native = collections.Counter(_DOT.findall(programs["bfloat16", "native"]))
    assert native[("bf16", "bf16", "bf16")] > 20  # what the policy replaces (XLA:CPU runs these in f32)


@pytest.mark.parametrize("spec, out_dtype", [("bhqd,bhkd->bhqk", jnp.float32), ("bhqk,bhkd->bhqd", None),
                                             ("ak,kn->an", None)])
def test_einsum_and_its_gradients_match_float32_within_bf16_rounding(spec, out_dtype):
    lhs, rhs = spec.split("->")[0].split(",")
    sizes = dict(b=2, h=3, q=5, k=7, d=4, a=6, n=3)
    keys = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(keys[0], [sizes[i] for i in lhs]).astype(jnp.bfloat16)
    b = jax.random.normal(keys[1], [sizes[i] for i in rhs]).astype(jnp.bfloat16)
    weights = jax.random.normal(keys[2], [sizes[i] for i in spec.split("->")[1]])

    def loss(a, b, f):
        return (f(a, b).astype(jnp.float32) * weights).sum()

    policy = lambda a, b: matmul.einsum(spec, a, b, preferred_element_type=out_dtype)  # noqa: E731
    exact = lambda a, b: jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))  # noqa: E731
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(a, b, policy)
    want_value, want_grads = jax.value_and_grad(loss, argnums=(0, 1))(a, b, exact)
    assert policy(a, b).dtype == (out_dtype or jnp.bfloat16)
    assert grads[0].dtype == grads[1].dtype == jnp.bfloat16
    np.testing.assert_allclose(value, want_value, rtol=2e-2)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=3e-2, atol=3e-2 * np.abs(want).max())


def test_one_switch_sets_every_dense_layer_and_rejects_unknown_policies():
    model = tome_jax.create_model("mae_vit_base_patch16", img_size=32, depth=1, decoder_depth=1, decoder_embed_dim=16,
                                  decoder_num_heads=2, embed_dim=32, num_heads=2, dtype=jnp.bfloat16, matmul="native")
    linears = lambda: [m.dot_general for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear)]  # noqa: E731
    assert model.matmul == "native" and set(linears()) == {jax.lax.dot_general}
    model.matmul = "float32_result"
    assert set(linears()) == {matmul.float32_result_dot_general} and len(linears()) >= 6  # decoder included
    with pytest.raises(ValueError, match="unknown matmul policy"):
        model.matmul = "amx"
    with pytest.raises(ValueError, match="not a product of two operands"):
        matmul.einsum("ij,jk->i", jnp.ones((2, 2), jnp.bfloat16), jnp.ones((2, 2), jnp.bfloat16))
