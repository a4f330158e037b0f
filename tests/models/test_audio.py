"""Spectrogram ViTs in AudioMAE's layout: names, ToMe token counts and FLOPs, AudioMAE key names."""

import jax
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax.models.audio import AudioTransformer
from tome_jax.models.weights import CheckpointMismatchError

TINY = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def test_a_one_channel_1024x128_input_runs_with_tome_and_the_expected_token_counts():
    # ViT-B audio's geometry (1024 frames x 128 mel bins, 16x16 patches) with a narrow trunk.
    model = tome_jax.create_model("vit_base_patch16_audio", **TINY, r=40)
    assert model.grid_size == (64, 8) and model.num_patches == 512 and model.in_chans == 1
    assert model.pretrained_cfg["input_size"] == (1024, 128, 1) and model.pretrained_cfg["num_mel_bins"] == 128
    assert model.global_pool == "avg" and model.fc_norm is not None and model.prop_attn is False
    x = jax.random.normal(jax.random.key(0), (1, 1024, 128, 1))
    logits, info = nnx.jit(lambda m, x: m(x, return_info=True))(model, x)
    assert logits.shape == (1, 527)
    assert model.token_counts() == [513, 473, 433] and info["size"].shape == (1, 433, 1)
    np.testing.assert_allclose(np.asarray(info["size"])[:, 1:].sum(1), 512.0)  # patches only, cls kept
    assert float(info["size"][0, 0, 0]) == 1.0  # the class token is never merged


def test_vit_b_audio_flops_at_the_papers_r():
    model = nnx.eval_shape(lambda: tome_jax.create_model("vit_base_patch16_audio"))
    counts = model.token_counts(40)
    assert counts[0] == 513 and counts[-2:] == [73, 37]  # 512 patches + cls, -40 per block, last one clamped
    base, tome = tome_jax.count_flops(model, r=0), tome_jax.count_flops(model, r=40)
    assert base / 1e9 == pytest.approx(48.52, abs=0.01) and base / tome == pytest.approx(1.965, abs=0.001)


def _official_keys(depth, dim, hidden, grid, classes, *, pretrained, dec_dim=16, dec_depth=1):
    """AudioMAE state-dict names and torch shapes: models_vit.VisionTransformer (fine-tuned, global_pool)
    or models_mae.MaskedAutoencoderViT (pre-trained: encoder + norm + decoder)."""
    n = grid[0] * grid[1]
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, n + 1, dim), "patch_embed.proj.weight": (dim, 1, 16, 16),
              "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,), b + "attn.qkv.weight": (3 * dim, dim),
                       b + "attn.qkv.bias": (3 * dim,), b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                       b + "norm2.weight": (dim,), b + "norm2.bias": (dim,), b + "mlp.fc1.weight": (hidden, dim),
                       b + "mlp.fc1.bias": (hidden,), b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,)})
    if not pretrained:
        shapes.update({"fc_norm.weight": (dim,), "fc_norm.bias": (dim,), "head.weight": (classes, dim),
                       "head.bias": (classes,)})
        return shapes
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,), "mask_token": (1, 1, dec_dim),
                   "decoder_embed.weight": (dec_dim, dim), "decoder_embed.bias": (dec_dim,),
                   "decoder_pos_embed": (1, n + 1, dec_dim), "decoder_norm.weight": (dec_dim,),
                   "decoder_norm.bias": (dec_dim,), "decoder_pred.weight": (256, dec_dim), "decoder_pred.bias": (256,)})
    for i in range(dec_depth):
        shapes[f"decoder_blocks.{i}.attn.qkv.weight"] = (3 * dec_dim, dec_dim)
        shapes[f"decoder_blocks.{i}.norm1.weight"] = (dec_dim,)
    return shapes


def _random(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _tiny_audio(**kw):
    return tome_jax.create_model("vit_tiny_patch16_audio", img_size=(64, 32), num_classes=5, **TINY, **kw)


def test_load_timm_takes_an_audiomae_finetuned_checkpoint_key_for_key():
    model = _tiny_audio()
    assert isinstance(model, AudioTransformer)
    sd = _random(_official_keys(2, 32, 64, (4, 2), 5, pretrained=False))
    report = tome_jax.load_timm(model, {"model": {f"module.{k}": v for k, v in sd.items()}})  # DDP, wrapped
    assert report["missing"] == report["unused"] == report["initialized"] == report["ignored"] == []
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    np.testing.assert_array_equal(flat[("blocks", 1, "attn", "qkv", "kernel")][...], sd["blocks.1.attn.qkv.weight"].T)
    np.testing.assert_array_equal(flat[("patch_embed", "proj", "kernel")][...],
                                  sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0))  # (time, freq) = (H, W)
    np.testing.assert_array_equal(flat[("fc_norm", "scale")][...], sd["fc_norm.weight"])
    # Round trip: the model's own timm-named state dict is the checkpoint.
    from tome_jax.models.weights import timm_state_dict

    back = timm_state_dict(model)
    assert sorted(back) == sorted(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)


def test_an_audiomae_pretrained_checkpoint_ignores_the_decoder_and_starts_fc_norm_fresh_like_image_mae():
    model = _tiny_audio()
    init = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    sd = _random(_official_keys(2, 32, 64, (4, 2), 5, pretrained=True), seed=1)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \['head.bias', 'head.weight'\]"):
        tome_jax.load_timm(_tiny_audio(), sd)  # no head in a pre-trained checkpoint: ask for a fresh one
    report = tome_jax.load_timm(model, sd, skip=("head",))
    assert {k.split(".")[0] for k in report["ignored"]} == {
        "norm", "mask_token", "decoder_embed", "decoder_pos_embed", "decoder_norm", "decoder_pred", "decoder_blocks"}
    assert report["initialized"] == ["fc_norm.bias", "fc_norm.weight"] and report["missing"] == report["unused"] == []
    flat = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    np.testing.assert_array_equal(flat[("head", "kernel")], init[("head", "kernel")])
    np.testing.assert_array_equal(flat[("fc_norm", "scale")], init[("fc_norm", "scale")])
    np.testing.assert_array_equal(flat[("pos_embed",)], sd["pos_embed"])
    np.testing.assert_array_equal(flat[("blocks", 0, "mlp", "fc1", "kernel")], sd["blocks.0.mlp.fc1.weight"].T)


def test_an_audiomae_checkpoint_is_resampled_along_time_and_unknown_keys_are_refused():
    model = tome_jax.create_model("vit_tiny_patch16_audio", img_size=(32, 32), num_classes=5, **TINY)
    sd = _random(_official_keys(2, 32, 64, (4, 2), 5, pretrained=False))  # 64 frames -> 32
    assert tome_jax.load_timm(model, sd)["resampled"] == ["pos_embed"]
    assert model.pos_embed[...].shape == (1, 5, 32)
    sd["blocks.0.attn.relative_position_bias_table"] = np.zeros((3, 2), np.float32)
    with pytest.raises(CheckpointMismatchError, match="unused keys.*relative_position_bias_table"):
        tome_jax.load_timm(_tiny_audio(), sd | {"pos_embed": np.zeros((1, 9, 32), np.float32)})
    wrong_head = _random(_official_keys(2, 32, 64, (4, 2), 7, pretrained=False))
    with pytest.raises(CheckpointMismatchError, match="head.weight"):
        tome_jax.load_timm(_tiny_audio(), wrong_head)
    assert tome_jax.load_timm(_tiny_audio(), wrong_head, skip=("head",))["missing"] == []
