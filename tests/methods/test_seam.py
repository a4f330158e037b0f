"""The reduction-method seam: a method from outside the library (registered here, one class) gets the
block's attention probabilities and runs in a model; options are typed and checked; the registry
refuses what it cannot hold."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax import merge
from tome_jax.methods import METHODS, LayerInputs, ReductionMethod, register_method
from tome_jax.models.encoder import Attention
from tome_jax.reduction import TokenReduction


@dataclasses.dataclass(frozen=True)
class LeastAttendedOptions:
    keep_order: bool = True


@register_method("test_least_attended", options=LeastAttendedOptions)
class LeastAttended(ReductionMethod):
    """Drop the r unprotected tokens the class token attends to least (EViT-like), from the block's
    own attention probabilities."""

    needs_attention = True

    def tokens_after(self, r, tokens, protected):
        return tokens - min(r, tokens - protected - 1)

    def plan(self, inputs: LayerInputs):
        p, tokens = inputs.protected, inputs.metric.shape[1]
        score = inputs.attn[:, :, 0, p:].mean(1)  # [B, T - p]: the class token's attention
        keep = tokens - p - inputs.r
        order = jnp.argsort(-score, axis=-1, stable=True)
        kept = jnp.sort(order[:, :keep], axis=-1) if self.options.keep_order else order[:, :keep]
        batch = score.shape[0]
        return merge.shift_plan(merge.MergePlan(kept, order[:, keep:], jnp.zeros((batch, inputs.r), jnp.int32),
                                                tokens - p), p)

    def reduce(self, plan, x, size, source):
        size = jnp.ones((*x.shape[:2], 1), jnp.float32) if size is None else size
        keep = lambda v: None if v is None else merge.keep_rows(plan, v)  # noqa: E731
        return keep(x), keep(size), keep(source)


def test_attention_returns_the_probabilities_of_the_same_pass():
    attn = Attention(16, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    size = jnp.arange(1.0, 11.0).reshape(2, 5, 1)
    both = nnx.jit(lambda a, x, s: (a(x, s), a(x, s, return_probabilities=True)))  # one program
    (out, metric, probs), (out2, metric2, probs2) = both(attn, x, size)
    assert probs is None and probs2.shape == (2, 2, 5, 5) and probs2.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(probs2).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(metric2), np.asarray(metric))


def test_a_method_registered_outside_gets_the_blocks_attention_in_a_model():
    assert "test_least_attended" in METHODS
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=16, depth=2,
                                  num_heads=2, num_classes=3, r=3, method="test_least_attended",
                                  options=dict(keep_order=False), trace_source=True)
    assert model.options == LeastAttendedOptions(keep_order=False) and model.token_counts() == [17, 14, 11]
    _, info = nnx.jit(lambda m, x: m(x, return_info=True))(model, jnp.ones((2, 16, 16, 3)))
    assert info["size"].shape == (2, 11, 1) and info["source"].shape == (2, 11, 17)
    np.testing.assert_array_equal(np.asarray(info["source"]).sum(-1), 1.0)  # kept tokens hold themselves
    model.method = "bipartite"  # another method starts from its own (default) options
    assert model.options == TokenReduction().options


def test_options_are_typed_and_checked_like_data_options():
    red = TokenReduction(method="test_least_attended", r=(2,), options=dict(keep_order=False))
    assert red.options == LeastAttendedOptions(False) and hash(red)
    assert TokenReduction(method="test_least_attended", options={}).options == LeastAttendedOptions()
    with pytest.raises(ValueError, match=r"Unknown tome.options \(method 'test_least_attended'\) field\(s\) "
                                         r"\['keep'\]; known fields: \['keep_order'\]"):
        TokenReduction(method="test_least_attended", options=dict(keep=True))
    with pytest.raises(ValueError, match=r"keep_order: expected bool \(default True\), got 'no'"):
        TokenReduction(method="test_least_attended", options=dict(keep_order="no"))
    with pytest.raises(ValueError, match="tome.options is a LeastAttendedOptions, but method='bipartite' takes "
                                         "NoOptions; pass a dict of its fields"):
        TokenReduction(method="bipartite", options=LeastAttendedOptions())
    model = nnx.eval_shape(lambda: tome_jax.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8,
                                                         embed_dim=8, depth=1, num_heads=1, num_classes=2))
    with pytest.raises(ValueError, match="Unknown tome.options"):
        tome_jax.apply_tome(model, options=dict(margin=0.1))  # ToMe takes none
    assert model.reduction == TokenReduction(r=(0,), protected=1)  # a refused setting changes nothing


def test_the_registry_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="'bipartite' is already registered"):
        register_method("bipartite")(LeastAttended)
    with pytest.raises(TypeError, match="decorates a ReductionMethod subclass"):
        register_method("test_not_a_method")(object)
    with pytest.raises(TypeError, match="options must be a frozen dataclass"):
        register_method("test_bad_options", options=dict)
    assert "test_not_a_method" not in METHODS
    with pytest.raises(ValueError, match="unknown token reduction method 'merge'; known methods: bipartite, prune"):
        TokenReduction(method="merge")
