"""CLIP image towers with ToMe against timm, open_clip and the official ToMe patch.

Golden fixtures (tests/fixtures/make_clip_fixtures.py, README section F): timm's
`vit_base_patch16_clip_224` and an open_clip CLIP with QuickGELU in OpenAI's names, both at 32 px
with 4-px patches, width 48, depth 4, 3 heads, a 16-wide embedding; their r=0 embeddings and the
official ToMe patch's embeddings and sizes at r > 0 (proportional attention, class token protected).
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import tome_jax
from tome_jax.models.weight_layouts import CheckpointLayout

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
TINY = dict(img_size=32, patch_size=4, embed_dim=48, depth=4, num_heads=3, num_classes=16)
TEXT_TOWER_KEYS = 18  # open_clip's text tower in the fixture (1 block) + logit_scale


def fixture(name):
    return dict(np.load(os.path.join(FIXTURES, f"{name}_io.npz")))


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def embed_with_sizes(model, images):
    return model(images, return_info=True)


@pytest.mark.parametrize("name, weights, fixture_name", [
    ("vit_base_patch16_clip_224", "clip_timm.safetensors", "clip_timm"),
    ("vit_base_patch16_clip_quickgelu_224", "clip_openai.safetensors", "clip_openai"),
])
def test_clip_tower_equals_timm_or_open_clip_and_the_official_tome_patch(name, weights, fixture_name):
    """r=0: timm's / open_clip's embedding; r=8 (OpenAI's layout: one compile fewer for timm's, whose
    blocks are the same program but for the GELU): the official patch's embedding and token sizes."""
    path = os.path.join(FIXTURES, weights)
    layout = tome_jax.checkpoint_layout(path)
    assert layout.gelu is None and layout.model_kwargs() == {}  # the names do not say: the model name does
    assert layout.name == ("timm" if fixture_name == "clip_timm" else "open_clip")
    model = tome_jax.create_model(name, **TINY)
    assert model.gelu == ("exact" if fixture_name == "clip_timm" else "quick")
    assert model.reduction.protected == 1 and model.blocks[0].norm1.epsilon == 1e-5
    report = tome_jax.load_timm(model, path)
    assert report["missing"] == report["unused"] == []
    assert len(report["ignored"]) == (0 if fixture_name == "clip_timm" else TEXT_TOWER_KEYS)
    io = fixture(fixture_name)
    forward = tome_jax.CompiledForward(model, embed_with_sizes)
    images = jnp.asarray(io["images"])
    embedding_r0, _ = forward(images, r=0)
    assert rel_err(embedding_r0, io["embedding_r0"]) < 1e-5
    if fixture_name == "clip_timm":
        return
    embedding, info = forward(images, r=8)
    assert rel_err(embedding, io["embedding_r8"]) < 1e-5
    np.testing.assert_array_equal(np.asarray(info["size"]), io["size_r8"])
    # The sanity number the issue asks for, here on random weights: the r=8 embedding's cosine to r=0's.
    np.testing.assert_allclose(cosine(embedding, embedding_r0), cosine(io["embedding_r8"], io["embedding_r0"]),
                               atol=1e-5)


def test_openai_names_without_the_visual_prefix_and_choose_r():
    """The image tower's own state dict (no "visual." prefix) loads too; choose_r keeps the class token."""
    from tome_jax.models.weight_files import read_state_dict

    state = read_state_dict(os.path.join(FIXTURES, "clip_openai.safetensors"))
    tower = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    assert tome_jax.checkpoint_layout(tower) == CheckpointLayout("open_clip", None)
    model = tome_jax.create_model("vit_base_patch16_clip_quickgelu_224", **TINY)
    report = tome_jax.load_timm(model, tower)
    assert report["ignored"] == [] and report["missing"] == []
    np.testing.assert_array_equal(model.head.kernel[...], state["visual.proj"])  # x @ proj, a zero bias
    assert not np.any(model.head.bias[...]) and model.patch_embed.proj.bias is None
    choice = tome_jax.choose_r(model, target_flops_ratio=0.6)
    assert choice.flops_ratio <= 0.6 and model.token_counts(choice.r)[-1] >= 1 + 1  # the class token stays
