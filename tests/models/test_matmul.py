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


def _train_programs(dtype) -> dict[str, str]:
    """StableHLO of the gradient of a 2-block ViT's loss (forward + backward) with ToMe, per policy;
    one model, switched with `model.matmul`."""
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=32, depth=2, dtype=dtype, r=2, matmul="native")
    programs = {}
    for policy in matmul.POLICIES:
        model.matmul = policy
        fn, params, rest = tome_jax.CompiledForward(model).compiled()
        loss = lambda p, x: fn(p, rest, x).astype(jnp.float32).sum()  # noqa: E731
        programs[policy] = jax.jit(jax.grad(loss)).lower(params, jnp.zeros((2, 32, 32, 3))).as_text()
    return programs


@pytest.fixture(scope="module")
def programs():
    return {(str(jnp.dtype(d)), p): text for d in (jnp.float32, jnp.bfloat16) for p, text in _train_programs(d).items()}


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
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=[sizes[i] for i in lhs]), jnp.bfloat16)
    b = jnp.asarray(rng.normal(size=[sizes[i] for i in rhs]), jnp.bfloat16)
    weights = rng.normal(size=[sizes[i] for i in spec.split("->")[1]]).astype(np.float32)

    def loss(a, b, f):
        return (f(a, b).astype(jnp.float32) * weights).sum()

    policy = lambda a, b: matmul.einsum(spec, a, b, preferred_element_type=out_dtype)  # noqa: E731
    exact = lambda a, b: jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))  # noqa: E731
    grads = jax.jit(jax.grad(lambda a, b: loss(a, b, policy), argnums=(0, 1)))(a, b)
    want_grads = jax.jit(jax.grad(lambda a, b: loss(a, b, exact), argnums=(0, 1)))(a, b)
    value, want = policy(a, b), exact(a, b)
    assert value.dtype == (out_dtype or jnp.bfloat16)
    assert grads[0].dtype == grads[1].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(value, np.float32), want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=3e-2, atol=3e-2 * np.abs(want).max())


def test_one_switch_sets_every_dense_layer_and_rejects_unknown_policies():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=32, depth=2, matmul="native")
    linears = lambda: [m.dot_general for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Linear)]  # noqa: E731
    assert model.matmul == "native" and set(linears()) == {jax.lax.dot_general}
    model.matmul = "float32_result"
    assert set(linears()) == {matmul.float32_result_dot_general} and len(linears()) == 2 * 4 + 1  # + the head
    assert tome_jax.create_model("vit_tiny_patch16_224", img_size=32, depth=2).matmul == matmul.DEFAULT
    with pytest.raises(ValueError, match="unknown matmul policy"):
        model.matmul = "amx"
    with pytest.raises(ValueError, match="not a product of two operands"):
        matmul.einsum("ij,jk->i", jnp.ones((2, 2), jnp.bfloat16), jnp.ones((2, 2), jnp.bfloat16))
