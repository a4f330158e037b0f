"""The windowed ViT (ViTDet layout) with tomesd-style merge / unmerge in every block.

A tiny model: 16x16 images, 2-px patches -> an 8x8 token grid, 4x4 windows (4 windows of 16 tokens),
block 0 windowed, block 1 global; 2x2 merge cells, so r=12 (per window; 48 of the 64 tokens in the
global block) merges every source.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax import visualize
from tome_jax.models.windowed import RelPosAttention

KW = dict(img_size=16, patch_size=2, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, window_size=4,
          global_attn_indexes=(1,), num_classes=5)
R_MAX = 12
FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="module")
def model():
    return tome_jax.create_model("vitdet_tiny_patch16_1024", **KW)


_forward = nnx.jit(lambda m, x: m(x, return_info=True))


def _cell_constant_images(key, batch=2):
    """Images whose pixels are constant over each 4x4 block = each 2x2 cell of 2-px patches."""
    return jnp.repeat(jnp.repeat(jax.random.normal(key, (batch, 4, 4, 3)), 4, axis=1), 4, axis=2)


def test_merging_identical_cells_changes_nothing(model):
    """When the 4 tokens of every 2x2 cell are equal (input and position embedding), each cell merges
    into one token (r = every source), attention sees each cell once instead of 4 times (same softmax)
    and the unmerge copies it back: the per-pixel logits equal the unmerged model's. A merge or unmerge
    that puts tokens in the wrong place, or windows that mix, would differ."""
    pos = model.pos_embed[...]
    model.pos_embed[...] = jnp.repeat(jnp.repeat(pos[:, ::2, ::2], 2, axis=1), 2, axis=2)
    try:
        images = _cell_constant_images(jax.random.key(0))
        model.r, model.method = 0, "bipartite"
        base, _ = _forward(model, images)
        model.r = R_MAX
        out, info = _forward(model, images)
        assert out.shape == (2, 16, 16, 5)  # the dense head's logits, upsampled to the pixels
        assert [p.num_out for p in info["plans"]] == [4, 16]  # 16 -> 4 per window, 64 -> 16 global
        np.testing.assert_allclose(out, base, rtol=1e-4, atol=1e-5)
    finally:
        model.pos_embed[...] = pos
        model.r, model.method = 0, "bipartite"


def test_window_block_stays_in_its_window_when_merging():
    """After the window block alone, changing one token's pixels changes only its own window's tokens,
    at r=0 and with merging."""
    single = tome_jax.create_model("vitdet_tiny_patch16_1024", **dict(KW, depth=1, global_attn_indexes=(),
                                                                       num_classes=0), r=8)
    images = jax.random.normal(jax.random.key(1), (1, 16, 16, 3))
    changed = images.at[0, 0:2, 0:2].add(3.0)  # the token at grid (0, 0): window (0, 0)
    out, _ = _forward(single, jnp.concatenate([images, changed]))  # the token grid [2, 8, 8, 16]
    moved = np.abs(np.asarray(out[1] - out[0])).max(axis=-1) > 1e-6  # [8, 8]
    assert moved[:4, :4].any() and not moved[4:, :].any() and not moved[:, 4:].any()


def test_groups_for_visualize_and_token_counts(model):
    """trace_source gives the last merging block's groups over the grid (random destinations here);
    tome_jax.visualize draws them (it checks that every patch is in exactly one group)."""
    model.r, model.method = 8, "random"
    try:
        image = np.asarray(jax.random.uniform(jax.random.key(3), (16, 16, 3)) * 255, np.uint8)
        merged = visualize.merged_image(model, image)  # the global block's: 64 - 8 * 64 // 16 = 32 groups
        assert merged.num_tokens == 32 and merged.picture.shape == (16, 16, 3)
        assert len(np.unique(merged.labels[:4, :4])) < 16  # tokens of one window did merge
    finally:
        model.r, model.method = 0, "bipartite"
    assert model.token_counts(8) == [4 * 8, 64 - 32, 64]
    assert model.token_counts(100) == [4 * 4, 16, 64]  # clamped to the sources


def test_unpatchify_head_puts_each_token_on_its_own_pixels():
    """dense_head="unpatchify": token (i, j)'s p*p*K outputs land on pixels [i*p:(i+1)*p, j*p:(j+1)*p] in
    row-major order (a head that outputs only its bias, the bias numbering the outputs)."""
    model = tome_jax.create_model("vitdet_tiny_patch16_1024", **dict(KW, depth=1, global_attn_indexes=(),
                                                                       dense_head="unpatchify"))
    model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
    model.head.bias[...] = jnp.arange(2 * 2 * 5, dtype=jnp.float32)
    out = np.asarray(_forward(model, jnp.zeros((1, 16, 16, 3)))[0])  # [1, 16, 16, 5]
    y, x, k = np.meshgrid(np.arange(16), np.arange(16), np.arange(5), indexing="ij")
    np.testing.assert_array_equal(out[0], ((y % 2) * 2 + x % 2) * 5 + k)
    d = 16
    assert tome_jax.count_flops(model, r=0) == 64 * 4 * 3 * d + 4 * (4 * 16 * d * d + 2 * 16 * 16 * d
                                                                     + 2 * 16 * d * 32) + 64 * d * 20


def test_flops_by_hand_and_methods(model):
    d, h = 16, 32
    embed, head = 64 * 4 * 3 * d, 64 * d * 5
    window_block = 4 * (4 * 16 * d * d + 2 * 16 * 16 * d + 2 * 16 * d * h)
    global_block = 4 * 64 * d * d + 2 * 64 * 64 * d + 2 * 64 * d * h
    assert tome_jax.count_flops(model, r=0) == embed + window_block + global_block + head
    merged = (embed + 4 * (4 * 8 * d * d + 2 * 8 * 8 * d + 2 * 8 * d * h + 12 * 4 * d)
              + 4 * 32 * d * d + 2 * 32 * 32 * d + 2 * 32 * d * h + 48 * 16 * d + head)
    assert tome_jax.count_flops(model, r=8) == merged
    model.method = "none"
    assert tome_jax.count_flops(model, r=8) == tome_jax.count_flops(model, r=0)
    model.method = "prune"
    with pytest.raises(ValueError, match="tomesd"):
        model.token_counts(8)
    model.method = "bipartite"



# ----------------------------------------------------------------------------- relative positions (SAM)

SAM_KW = dict(img_size=32, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, window_size=3,
              global_attn_indexes=(1,))


@pytest.fixture(scope="module")
def sam_model():
    """A tiny SAM image encoder loaded from segment-anything's weights (tests/fixtures/make_sam_fixture.py)."""
    fixture = np.load(FIXTURES / "sam_encoder.npz")
    model = tome_jax.create_model("sam_vit_b_encoder", **SAM_KW)
    report = tome_jax.load_timm(model, {k[len("sd/"):]: fixture[k] for k in fixture.files if k.startswith("sd/")})
    return model, report, fixture


_tokens = nnx.jit(lambda m, x: m.forward_features(x)[0])


def test_sam_image_encoder_matches_segment_anything(sam_model):
    """SAM's ImageEncoderViT (segment-anything's code, tests/fixtures/make_sam_fixture.py): an 8x8 grid
    in windows of 3 (padded to 9x9), block 1 global, random relative-position tables, the global
    block's stored at another grid's length (23 rows, resampled to 15 when loading, as SAM's forward
    interpolates them). Loaded under SAM's keys (prompt encoder and neck ignored), our tokens equal
    SAM's blocks' output (after our final norm at its init)."""
    model, report, fixture = sam_model
    assert report["resampled"] == ["blocks.1.attn.rel_pos_h", "blocks.1.attn.rel_pos_w"]
    assert report["initialized"] == ["norm.bias", "norm.weight"] and len(report["ignored"]) == 7
    np.testing.assert_allclose(_tokens(model, jnp.asarray(fixture["images"])), fixture["tokens_normed"],
                               rtol=1e-4, atol=2e-5)


def test_relative_positions_follow_the_tokens():
    """The merged path's bias (each token at the position it is given) equals SAM's on the whole grid
    when the positions are the grid's, and moves with the tokens: permuting the tokens together with
    their positions permutes the output (so a merged token is biased from its own position)."""
    attn = RelPosAttention(16, 2, (3, 4), rngs=nnx.Rngs(0))
    attn.rel_pos_h[...] = jax.random.normal(jax.random.key(1), attn.rel_pos_h.shape)
    attn.rel_pos_w[...] = jax.random.normal(jax.random.key(2), attn.rel_pos_w.shape)
    x = jax.random.normal(jax.random.key(3), (2, 12, 16))
    order = jnp.stack([jax.random.permutation(jax.random.key(4), 12), jnp.arange(12)[::-1]])

    @nnx.jit
    def outputs(attn, x, order):
        grid = jnp.broadcast_to(jnp.arange(12), order.shape)
        moved = attn(jnp.take_along_axis(x, order[..., None], axis=1), positions=order)[0]
        return attn(x)[0], attn(x, positions=grid)[0], moved, attn(x, positions=order)[0]

    base, at_grid, moved, misplaced = outputs(attn, x, order)
    np.testing.assert_allclose(at_grid, base, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moved, jnp.take_along_axis(base, order[..., None], axis=1), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(misplaced - base)).max() > 1e-3  # the positions count


def test_rel_pos_model_merges_and_counts_its_flops(sam_model):
    """With use_rel_pos a merging model runs (r=4 in each 3x3 window merges every source; 36 of the
    64 tokens stay in the global block) and its FLOPs, by hand, add the relative terms (tokens x
    (h + w) x embed_dim per block) at the merged counts."""
    model, _, fixture = sam_model
    model.r = 4
    try:
        tokens = _tokens(model, jnp.asarray(fixture["images"]))
        assert tokens.shape == (2, 8, 8, 16) and np.isfinite(np.asarray(tokens)).all()
        assert model.token_counts() == [9 * 5, 64 - 4 * 64 // 9, 64]
    finally:
        model.r = 0
    d, hidden, embed = 16, 32, 64 * 4 * 4 * 3 * 16

    def block(t):  # qkv + proj, q @ k and attention @ v, MLP
        return 4 * t * d * d + 2 * t * t * d + 2 * t * d * hidden
    window_rel, global_rel = (3 + 3) * d, (8 + 8) * d  # per token
    assert tome_jax.count_flops(model, r=0) == embed + 9 * (block(9) + 9 * window_rel) + block(64) + 64 * global_rel
    matching = 9 * 8 * 1 * d + 48 * 16 * d  # sources x destinations x width: 9 windows, then the grid
    assert tome_jax.count_flops(model, r=4) == (embed + 9 * (block(5) + 5 * window_rel) + block(36)
                                                + 36 * global_rel + matching)
