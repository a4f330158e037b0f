"""Weight loading: timm, MAE, big_vision and torchvision checkpoints; round trips; clear errors."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import tome_jax
from tests.models.test_vit import FIXTURES, SMALL, fixture, forward, load_small, rel_err
from tome_jax.models.weights import CheckpointMismatchError, resample_pos_embed


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    source = load_small("vit_avg")
    path = tmp_path / "model.safetensors"
    tome_jax.save_timm(source, path)
    target = tome_jax.create_model("vit_tiny_patch16_224", **SMALL, global_pool="avg", fc_norm=True,
                                   init_values=0.1, rngs=__import__("flax").nnx.Rngs(7))
    report = tome_jax.load_timm(target, path)
    assert report == {"missing": [], "unused": [], "resampled": [], "ignored": [], "initialized": []}
    images = jnp.asarray(fixture("vit_avg")["images"])
    np.testing.assert_array_equal(forward(target, images), forward(source, images))


def test_in_memory_dict_and_npz_load(tmp_path):
    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    np.savez(tmp_path / "w.npz", **state)
    images = jnp.asarray(fixture("vit_cls")["images"])
    expected = fixture("vit_cls")["logits_r0"]
    for source in (state, tmp_path / "w.npz"):
        model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
        tome_jax.load_timm(model, source)
        assert rel_err(forward(model, images), expected) < 1e-4


def test_mae_checkpoint_wrapped_in_model_key():
    state = load_file(os.path.join(FIXTURES, "vit_avg.safetensors"))
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL, global_pool="avg", fc_norm=True, init_values=0.1)
    tome_jax.load_timm(model, {"model": state})
    io = fixture("vit_avg")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits_r0"]) < 1e-4


def test_big_vision_npz_checkpoint():
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    tome_jax.load_timm(model, os.path.join(FIXTURES, "bigvision_vit.npz"))
    io = fixture("bigvision_vit")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits"]) < 1e-4


def test_torchvision_checkpoint():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=48, depth=2,
                                  num_heads=3, num_classes=10)
    tome_jax.load_timm(model, os.path.join(FIXTURES, "torchvision_vit.safetensors"))
    io = fixture("torchvision_vit")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits"]) < 1e-4


def test_pos_embed_resampling_matches_timm():
    data = np.load(os.path.join(FIXTURES, "posembed_resample.npz"))
    for grid, key in ((12, "out_12x12"), (6, "out_6x6")):
        out = resample_pos_embed(data["pos_embed"], grid, num_prefix_tokens=1)
        np.testing.assert_allclose(out, data[key], atol=1e-5)


def test_loading_into_another_resolution_resamples():
    model = tome_jax.create_model("vit_tiny_patch16_224", **{**SMALL, "img_size": 48}, r=8)
    report = tome_jax.load_timm(model, os.path.join(FIXTURES, "vit_cls.safetensors"))
    assert report["resampled"] == ["pos_embed"]
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 48)
    assert np.isfinite(np.asarray(forward(model, jnp.zeros((2, 48, 48, 3))))).all()


def test_errors_name_the_offending_keys(tmp_path):
    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    before = np.asarray(model.pos_embed[...]).copy()

    wrong = dict(state, **{"blocks.1.mlp.fc1.weight": np.zeros((10, 48), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        tome_jax.load_timm(model, wrong)
    missing = {k: v for k, v in state.items() if k != "blocks.2.norm1.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \['blocks\.2\.norm1\.bias'\]"):
        tome_jax.load_timm(model, missing)
    extra = dict(state, **{"decoder_embed.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"unused keys \['decoder_embed\.weight'\]"):
        tome_jax.load_timm(model, extra)
    np.testing.assert_array_equal(model.pos_embed[...], before)  # a failed load changes nothing

    report = tome_jax.load_timm(model, extra, strict=False)
    assert report["unused"] == ["decoder_embed.weight"]


def test_new_head_for_fine_tuning():
    model = tome_jax.create_model("vit_tiny_patch16_224", **{**SMALL, "num_classes": 5})
    with pytest.raises(CheckpointMismatchError, match="head.weight"):
        tome_jax.load_timm(model, os.path.join(FIXTURES, "vit_cls.safetensors"))
    report = tome_jax.load_timm(model, os.path.join(FIXTURES, "vit_cls.safetensors"), skip=("head",))
    assert report["missing"] == [] and report["unused"] == []


def test_missing_file_and_pth_without_torch(tmp_path):
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tome_jax.load_timm(model, tmp_path / "nope.safetensors")
    if importlib.util.find_spec("torch") is None:
        (tmp_path / "w.pth").write_bytes(b"not really a pickle")
        with pytest.raises(ImportError, match="safetensors"):
            tome_jax.load_timm(model, tmp_path / "w.pth")
