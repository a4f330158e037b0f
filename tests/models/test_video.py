"""The video family (MAE-ST layout): tubelets, separable positions, ToMe across frames, official weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax.models.video import to_mae_st_state_dict
from tome_jax.models.weights import CheckpointMismatchError

# 4 frames of 16x16, tubelets 2x4x4: 2 x 4 x 4 = 32 tokens.
TINY = dict(num_frames=4, img_size=16, patch_size=4, tubelet_size=2, embed_dim=32, depth=3, num_heads=2,
            num_classes=5)


def tiny(name="video_vit_base_patch16", seed=0, **kwargs):
    return tome_jax.create_model(name, **{**TINY, **kwargs}, rngs=nnx.Rngs(seed))


forward = nnx.jit(lambda model, x: model(x))
forward_info = nnx.jit(lambda model, x: model(x, return_info=True))


def clips(batch=2, frames=4, size=16, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, frames, size, size, 3))


def test_token_counts_per_layer_for_a_clip():
    model = tiny(r=4, trace_source=True)
    assert model.num_patches == 32 and model.grid_size == (2, 4, 4)
    assert model.token_counts() == [32, 28, 24, 20]
    logits, info = forward_info(model, clips())
    assert logits.shape == (2, 5) and info["size"].shape == (2, 20, 1) and info["source"].shape == (2, 20, 32)
    np.testing.assert_array_equal(np.asarray(info["size"]).sum(1), 32.0)
    with_cls = tiny("video_vit_base_patch16.mae_st", r=4)
    assert with_cls.token_counts() == [33, 29, 25, 21] and with_cls.prop_attn is False
    # Official ViT-L: 16 x 224 x 224 with 2x16x16 tubelets -> 8 x 14 x 14 = 1568 tokens.
    large = nnx.eval_shape(lambda: tome_jax.create_model("video_vit_large_patch16"))
    assert large.num_patches == 1568 and large.token_counts(65)[:3] == [1568, 1503, 1438]
    assert tome_jax.count_flops(large, r=65) < tome_jax.count_flops(large, r=0) / 2


def test_tubelet_embedding_and_separable_positions_equal_numpy():
    model = tiny("video_vit_base_patch16.mae_st")
    x = np.asarray(clips(batch=2, seed=1))
    kernel = np.asarray(model.patch_embed.proj.kernel[...])  # [2, 4, 4, 3, D]
    bias = np.asarray(model.patch_embed.proj.bias[...])
    spatial = np.asarray(model.pos_embed_spatial[...])[0]  # [16, D]
    temporal = np.asarray(model.pos_embed_temporal[...])[0]  # [2, D]
    expected = []
    for b in range(2):
        tokens = [np.asarray(model.cls_token[...])[0, 0] + np.asarray(model.pos_embed_class[...])[0, 0]]
        for t in range(2):
            for h in range(4):
                for w in range(4):
                    tube = x[b, 2 * t:2 * t + 2, 4 * h:4 * h + 4, 4 * w:4 * w + 4, :]  # [2, 4, 4, 3]
                    tokens.append(np.einsum("thwc,thwcd->d", tube, kernel) + bias
                                  + spatial[h * 4 + w] + temporal[t])
        expected.append(tokens)
    np.testing.assert_allclose(np.asarray(model.embed(jnp.asarray(x))), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_pooling_is_the_size_weighted_mean_so_merging_identical_tokens_changes_nothing():
    model = tiny(num_frames=2, tubelet_size=1)
    model.pos_embed_temporal[...] = jnp.zeros_like(model.pos_embed_temporal[...])
    frame = clips(batch=1, frames=1, seed=3)
    static = jnp.concatenate([frame, frame], axis=1)  # two identical frames
    x = nnx.jit(lambda m, v: m.embed(v))(model, static)
    pooled = model.forward_head(x, jnp.ones((1, 32, 1)))
    merged = model.forward_head(x[:, :16], 2 * jnp.ones((1, 16, 1)))  # each token stands for 2
    np.testing.assert_allclose(np.asarray(merged), np.asarray(pooled), rtol=1e-5, atol=1e-5)


def test_merges_cross_frames_when_a_patch_repeats_over_time():
    # 2 frames of 12x12, one-frame tubelets, 3x3 patches: token (t, s) has index 9t + s, so the two
    # copies of a patch fall into different sets of the bipartite split and can match each other.
    model = tiny(num_frames=2, tubelet_size=1, img_size=12, depth=1, r=4, trace_source=True)
    model.pos_embed_temporal[...] = jnp.zeros_like(model.pos_embed_temporal[...])
    frame = clips(batch=1, frames=1, size=12, seed=4)
    _, info = forward_info(model, jnp.concatenate([frame, frame], axis=1))
    source = np.asarray(info["source"][0]) > 0  # [14, 18]
    spans = source[:, :9].any(1) & source[:, 9:].any(1)
    assert spans.sum() == 4  # every merge joined a patch with itself one frame later
    for row in np.flatnonzero(spans):
        first, second = np.flatnonzero(source[row, :9]), np.flatnonzero(source[row, 9:])
        np.testing.assert_array_equal(first, second)


def test_merges_never_cross_the_batch():
    model = tiny(r=6)
    x = clips(batch=3, seed=5)
    y = x.at[1].set(jax.random.normal(jax.random.key(9), x.shape[1:]))
    a, b = np.asarray(forward(model, x)), np.asarray(forward(model, y))
    np.testing.assert_array_equal(a[[0, 2]], b[[0, 2]])  # example 1 changed: only its logits move
    assert not np.allclose(a[1], b[1])


def _official_state_dict(model, *, pretrained: bool, seed: int = 0) -> dict:
    """The key names and torch layouts of MAE-ST's models_vit / models_mae, filled with random values."""
    rng = np.random.default_rng(seed)
    dim, depth = model.embed_dim, model.depth
    hidden = model.blocks[0].mlp.fc1.out_features
    t, h, w = model.grid_size
    shapes = {"patch_embed.proj.weight": (dim, 3, model.tubelet_size, model.patch_size, model.patch_size),
              "patch_embed.proj.bias": (dim,), "cls_token": (1, 1, dim), "pos_embed_spatial": (1, h * w, dim),
              "pos_embed_temporal": (1, t, dim), "pos_embed_class": (1, 1, dim),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        p = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            shapes |= {p + n + ".weight": (dim,), p + n + ".bias": (dim,)}
        for n in ("q", "k", "v", "proj"):
            shapes |= {p + f"attn.{n}.weight": (dim, dim), p + f"attn.{n}.bias": (dim,)}
        shapes |= {p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                   p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)}
    if pretrained:  # models_mae: the decoder and mask token ride along
        shapes |= {"mask_token": (1, 1, 16), "decoder_embed.weight": (16, dim), "decoder_embed.bias": (16,),
                   "decoder_pos_embed_spatial": (1, h * w, 16), "decoder_pos_embed_temporal": (1, t, 16),
                   "decoder_pos_embed_class": (1, 1, 16), "decoder_cls_token": (1, 1, 16),
                   "decoder_blocks.0.attn.q.weight": (16, 16), "decoder_norm.weight": (16,),
                   "decoder_pred.weight": (96, 16), "decoder_pred.bias": (96,)}
    else:
        shapes |= {"head.weight": (model.num_classes, dim), "head.bias": (model.num_classes,)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_official_fine_tuned_names_load_and_round_trip(tmp_path):
    source = tiny("video_vit_base_patch16.mae_st", seed=1)
    official = to_mae_st_state_dict(source)
    assert set(official) == set(_official_state_dict(source, pretrained=False))  # exactly MAE-ST's keys
    target = tiny("video_vit_base_patch16.mae_st", seed=2)
    report = tome_jax.load_timm(target, {"model": official})
    assert {k: report[k] for k in ("missing", "unused", "resampled")} == {"missing": [], "unused": [], "resampled": []}
    x = clips(seed=6)
    np.testing.assert_array_equal(np.asarray(forward(target, x)), np.asarray(forward(source, x)))
    path = tmp_path / "video.safetensors"  # our own (timm-style) names round-trip too
    tome_jax.save_timm(source, path)
    again = tiny("video_vit_base_patch16.mae_st", seed=3)
    tome_jax.load_timm(again, path)
    np.testing.assert_array_equal(np.asarray(forward(again, x)), np.asarray(forward(source, x)))


def test_official_pretrained_checkpoint_every_key_accounted_for():
    model = tiny("video_vit_base_patch16.mae_st")
    sd = _official_state_dict(model, pretrained=True, seed=4)
    report = tome_jax.load_timm(model, {"model_state": sd}, skip=("head",))  # PySlowFast wrapper key
    decoder = sorted(k for k in sd if k.startswith(("decoder_", "mask_token")))
    assert report == {"missing": [], "unused": [], "resampled": [], "ignored": decoder, "initialized": []}
    torch_names = to_mae_st_state_dict(model)
    for name, value in sd.items():
        if name not in decoder:
            np.testing.assert_array_equal(torch_names[name], value, err_msg=name)


def test_position_embeddings_resample_to_other_frame_counts_and_sizes():
    small = tiny("video_vit_base_patch16.mae_st")
    sd = to_mae_st_state_dict(small)
    bigger = tiny("video_vit_base_patch16.mae_st", num_frames=8, img_size=24)  # grid (4, 6, 6)
    report = tome_jax.load_timm(bigger, sd)
    assert sorted(report["resampled"]) == ["pos_embed_spatial", "pos_embed_temporal"]
    temporal = np.asarray(bigger.pos_embed_temporal[...])[0]
    old = np.asarray(small.pos_embed_temporal[...])[0]
    np.testing.assert_allclose(temporal[0], old[0], atol=1e-6)  # linear, half-pixel centers: edges kept
    np.testing.assert_allclose(temporal[-1], old[-1], atol=1e-6)
    assert bigger.embed(clips(batch=1, frames=8, size=24)).shape == (1, 4 * 6 * 6 + 1, 32)


def test_checkpoint_layout_errors_name_the_fix():
    sd = to_mae_st_state_dict(tiny("video_vit_base_patch16.mae_st"))
    with pytest.raises(CheckpointMismatchError, match=r"class token.*\.mae_st"):
        tome_jax.load_timm(tiny(), sd)
    joint = {k: v for k, v in sd.items() if not k.startswith("pos_embed_")} | {"pos_embed": np.zeros((1, 33, 32))}
    with pytest.raises(CheckpointMismatchError, match="joint pos_embed"):
        tome_jax.load_timm(tiny("video_vit_base_patch16.mae_st"), joint)


def test_bad_clips_raise_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"clips of shape \[B, 4, 16, 16, 3\].*image batch"):
        model(jnp.ones((2, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"channels-first.*transpose\(0, 2, 3, 4, 1\)"):
        model(jnp.ones((2, 3, 4, 16, 16)))
    with pytest.raises(ValueError, match=r"\[B, 4, 16, 16, 3\].*num_frames=T"):
        model(jnp.ones((2, 6, 16, 16, 3)))
    with pytest.raises(ValueError, match="dtype"):
        model(jnp.ones((2, 4, 16, 16, 3), jnp.uint8))
    with pytest.raises(ValueError, match="num_frames=5 must be a positive multiple of tubelet_size=2"):
        tiny(num_frames=5)
    with pytest.raises(ValueError, match="not divisible by patch_size 4"):
        tiny(img_size=18)


def test_flops_count_the_tubelet_stem_and_the_head():
    model = tiny()
    assert model.stem_flops() == 32 * (2 * 4 * 4 * 3) * 32 and model.head_flops() == 32 * 5
    layer = lambda t: 4 * t * 32 * 32 + 2 * t * t * 32 + 2 * t * 32 * 128  # noqa: E731
    assert tome_jax.count_flops(model, r=0) == model.stem_flops() + 3 * layer(32) + model.head_flops()
