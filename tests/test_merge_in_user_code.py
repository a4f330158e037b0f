"""`tome_jax.merge` inside a user's own Flax code: a linen module and an NNX module (README example)."""

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

from tome_jax import merge


class LinenMixer(nn.Module):
    """A toy token mixer that merges r tokens after its projection (user code, linen)."""

    r: int  # static: part of the module's definition, so each r compiles once

    @nn.compact
    def __call__(self, x, size=None):  # x: [B, T, C]
        x = nn.Dense(x.shape[-1])(x)
        merge_fn, _ = merge.bipartite_soft_matching(x, self.r, class_token=True)
        return merge.merge_wavg(merge_fn, x, size)


class NNXMixer(nnx.Module):
    """The same in Flax NNX: r is a plain attribute."""

    def __init__(self, dim: int, r: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(dim, dim, rngs=rngs)
        self.r = r

    def __call__(self, x, size=None):
        x = self.proj(x)
        merge_fn, _ = merge.bipartite_soft_matching(x, self.r, class_token=True)
        return merge.merge_wavg(merge_fn, x, size)


def test_linen_and_nnx_modules_merge_identically():
    x = jax.random.normal(jax.random.key(0), (2, 17, 8))
    linen = LinenMixer(r=4)
    variables = linen.init(jax.random.key(1), x)
    nnx_model = NNXMixer(8, 4, rngs=nnx.Rngs(0))
    # Same weights in both, so the outputs must agree.
    nnx_model.proj.kernel[...] = variables["params"]["Dense_0"]["kernel"]
    nnx_model.proj.bias[...] = variables["params"]["Dense_0"]["bias"]

    y_linen, size_linen = jax.jit(linen.apply)(variables, x)
    y_nnx, size_nnx = nnx.jit(lambda m, x: m(x))(nnx_model, x)
    assert y_linen.shape == y_nnx.shape == (2, 13, 8)
    np.testing.assert_allclose(y_linen, y_nnx, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(size_linen, size_nnx)
    np.testing.assert_array_equal(size_nnx.sum(axis=(1, 2)), [17, 17])

    # Stacked: the sizes carry from one merge to the next.
    y2, size2 = nnx_model(y_nnx, size_nnx)
    assert y2.shape == (2, 9, 8) and np.allclose(size2.sum(axis=(1, 2)), 17)

    # Gradients reach the user's parameters through the merged tokens.
    grads = nnx.grad(lambda m: m(x)[0].sum())(nnx_model)
    assert np.abs(np.asarray(grads.proj.kernel[...])).sum() > 0
