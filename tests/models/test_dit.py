"""The diffusion transformer (DiT) with tomesd-style merge / unmerge in every block.

A tiny model: 16x16x1 latents, 2-px patches -> an 8x8 grid of 64 tokens, width 16, 2 blocks; 2x2 merge
cells, so r=48 merges every source (tomesd's ratio 0.75) and r=32 is ratio 0.5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax import merge
from tome_jax.models import dit

KW = dict(input_size=16, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=10)


def _randomize_zero_layers(model, key):
    """adaLN-Zero starts every block as the identity and the output at 0; for tests that need a
    model that computes something, give the zero-initialised layers random weights."""
    layers = [block.adaLN_modulation for block in model.blocks]
    layers += [model.final_layer.adaLN_modulation, model.final_layer.linear]
    for layer, k in zip(layers, jax.random.split(key, len(layers))):
        layer.kernel[...] = 0.3 * jax.random.normal(k, layer.kernel.shape)


@pytest.fixture(scope="module")
def model():
    # Built inside one jit: one compile instead of one per initializer op.
    m = nnx.jit(lambda: tome_jax.create_model("dit_s_2", **KW))()
    _randomize_zero_layers(m, jax.random.key(1))
    return m


_forward = nnx.jit(lambda m, x, t, y: m(x, t, y, return_info=True))


@nnx.jit
def _block_merged_and_plain(block, tokens, c, key):
    """The block with every source merged (plan from `key`, or fixed destinations), and without."""
    plan = merge.random2d_plan(tokens, 8, 8, 2, 2, 48, key)
    return block(tokens, c, plan), block(tokens, c, None), plan.num_out


def _inputs(batch=2, seed=0):
    keys = jax.random.split(jax.random.key(seed), 2)
    x = jax.random.normal(keys[0], (batch, 16, 16, 1))
    return x, jax.random.randint(keys[1], (batch,), 0, 1000), jnp.arange(batch) % 10


def test_registered_names_and_dit_b_2_flops():
    """dit_b_2 is DiT-B/2: width 768, 12 blocks, 12 heads, 32x32x4 latents -> 256 tokens, 8 output
    channels (learn_sigma); 23.01 GFLOPs as in the DiT paper (Table 4); tomesd's ratio 0.5 (r=128)
    halves the tokens of attention and MLP in every block."""
    assert {"dit_s_2", "dit_b_2", "dit_l_2", "dit_xl_2", "dit_b_4", "dit_xl_8"} <= set(tome_jax.list_models("dit_"))
    abstract = nnx.eval_shape(lambda: tome_jax.create_model("dit_b_2"))
    assert (abstract.embed_dim, abstract.depth, abstract.blocks[0].attn.num_heads) == (768, 12, 12)
    assert (abstract.num_patches, abstract.out_channels) == (256, 8)
    assert abs(tome_jax.count_flops(abstract) / 1e9 - 23.01) < 0.01
    r = merge.ratio_r(256, 0.5)
    assert r == 128 and abstract.token_counts(r) == [128] * 12 + [256]
    assert 0.49 < tome_jax.count_flops(abstract, r=r) / tome_jax.count_flops(abstract) < 0.5


def test_flops_by_hand(model):
    """Tiny model at r=32: patchify, timestep MLP, per block adaLN + attention + MLP at 32 tokens +
    the matching (48 sources x 16 destinations x width), the final layer."""
    d, n, t, hidden = 16, 64, 32, 64
    block = 6 * d * d + 4 * t * d * d + 2 * t * t * d + 2 * t * d * hidden + 48 * 16 * d
    expected = n * 4 * 1 * d + 256 * d + d * d + 2 * block + 2 * d * d + n * d * 4 * 2
    assert tome_jax.count_flops(model, r=32) == expected


def test_shapes_and_ratio_zero_is_the_plain_model(model):
    """x [B, 16, 16, 1] -> [B, 16, 16, 2] (noise + variance channels); r=0 gives no plans and exactly
    the output of merging switched off; r>0 merges (a different output) yet returns the full grid."""
    x, t, y = _inputs()
    model.method, model.r = "none", 0
    plain, _ = _forward(model, x, t, y)
    model.method = "bipartite"
    out, info = _forward(model, x, t, y)
    assert out.shape == (2, 16, 16, 2) and info["plans"] == (None, None)
    np.testing.assert_array_equal(out, plain)
    model.r = 32
    merged, info = _forward(model, x, t, y)
    model.r = 0
    assert merged.shape == (2, 16, 16, 2) and [p.num_out for p in info["plans"]] == [32, 32]
    assert float(jnp.abs(merged - plain).max()) > 1e-5  # exactly 0 when nothing merges


def test_jit_equals_eager(model):
    """A merging block (plan, merge, attention, unmerge, MLP) run op by op equals its jitted run."""
    block = model.blocks[1]
    tokens = jax.random.normal(jax.random.key(0), (2, 64, 16))
    c = jax.random.normal(jax.random.key(1), (2, 16))
    run = lambda b, x, c: b(x, c, merge.random2d_plan(x, 8, 8, 2, 2, 32))  # noqa: E731
    np.testing.assert_allclose(nnx.jit(run)(block, tokens, c), run(block, tokens, c), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", [None, 3])
def test_unmerge_restores_every_position(model, key):
    """A block on tokens that are equal over every 2x2 cell, merging every source (each cell becomes one
    token; attention sees each cell once instead of 4 times: the same softmax) and unmerging: the same
    output as the block without merging, at every position. Fixed (key None) and random destinations.
    A merge or unmerge into the wrong place would differ."""
    block = model.blocks[0]
    cells = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
    tokens = jnp.repeat(jnp.repeat(cells, 2, axis=1), 2, axis=2).reshape(2, 64, 16)
    c = jax.random.normal(jax.random.key(1), (2, 16))
    merged, plain, num_out = _block_merged_and_plain(block, tokens, c, None if key is None else jax.random.key(key))
    assert num_out == 16
    np.testing.assert_allclose(merged, plain, rtol=1e-5, atol=1e-5)


def test_random_destinations_come_from_the_reduction_stream(model):
    """method "random": the plans' destinations are drawn from the model's `reduction` stream, so two
    seeds give two different outputs and re-seeding with the same seed repeats one."""
    x, t, y = _inputs()
    model.method, model.r = "random", 32
    try:
        outs = []
        for seed in (0, 1, 0):
            nnx.reseed(model, reduction=seed)
            outs.append(np.asarray(_forward(model, x, t, y)[0]))
    finally:
        model.method, model.r = "bipartite", 0
    np.testing.assert_array_equal(outs[0], outs[2])
    assert np.abs(outs[0] - outs[1]).max() > 1e-4


def test_adaln_zero_makes_blocks_the_identity_at_init():
    """At init the adaLN modulation and the final linear are zero: a block returns its input (gates 0),
    also when merging, and the final layer gives 0, whatever the conditioning."""
    block, final = nnx.jit(lambda: (dit.DiTBlock(16, 2, mlp_ratio=4.0, gelu="tanh", rngs=nnx.Rngs(0)),
                                    dit.FinalLayer(16, 2, 2, rngs=nnx.Rngs(1))))()
    tokens = jax.random.normal(jax.random.key(2), (2, 64, 16))
    c = jax.random.normal(jax.random.key(3), (2, 16))
    np.testing.assert_array_equal(block(tokens, c, merge.random2d_plan(tokens, 8, 8, 2, 2, 32)), tokens)
    np.testing.assert_array_equal(final(tokens, c), jnp.zeros((2, 64, 8)))


def test_patchify_and_unpatchify_are_inverse_layouts(model):
    """Token (i, j) of the grid holds pixels rows 2i.., columns 2j..: unpatchify of the per-token
    pixels in (row, column, channel) order gives the image back."""
    image = jax.random.normal(jax.random.key(0), (1, 16, 16, 2))
    tokens = image.reshape(1, 8, 2, 8, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(1, 64, 8)
    np.testing.assert_array_equal(model.unpatchify(tokens), image)


def test_sincos_position_embedding():
    """DiT's layout: [sin(j w), cos(j w), sin(i w), cos(i w)] for token (row i, column j),
    w_k = 10000**(-k / (D / 4))."""
    emb = dit.sincos_pos_embed_2d(8, 3)
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    i, j = 1, 2
    expected = np.concatenate([np.sin(j * omega), np.cos(j * omega), np.sin(i * omega), np.cos(i * omega)])
    assert emb.shape == (9, 8)
    np.testing.assert_allclose(emb[i * 3 + j], expected, rtol=1e-6)
