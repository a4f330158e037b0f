"""The ViT with ToMe against timm, the official ToMe patch and a NumPy re-statement of the spec.

Golden fixtures (tests/fixtures/, made by make_timm_fixtures.py with torch + timm) hold small timm
models (32x32 images, 4x4 patches -> 64 patches, width 48, depth 4), their r=0 logits from timm and
the logits, sizes and sources of a faithful port of the official ToMe timm patch.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

import tome_jax
from tests import merge_reference as ref

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
SMALL = dict(img_size=32, patch_size=4, embed_dim=48, depth=4, num_heads=3, num_classes=10)
MODELS = {  # fixture -> (timm name, extra kwargs)
    "vit_cls": ("vit_tiny_patch16_224", {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {}),
    "vit_avg": ("vit_tiny_patch16_224", dict(global_pool="avg", fc_norm=True, init_values=0.1)),
}
SETTINGS = {  # fixture tag -> (r, prop_attn)
    "r8_prop": (8, True), "r8_noprop": (8, False), "r8_dec": ((8, -1), True),
    "list": ([12, 0, 6, 3], True), "r40": (40, True),
}


def fixture(name):
    return dict(np.load(os.path.join(FIXTURES, f"{name}_io.npz")))


def load_small(name, **kwargs):
    timm_name, extra = MODELS[name]
    model = tome_jax.create_model(timm_name, **SMALL, **extra, **kwargs)
    tome_jax.load_timm(model, os.path.join(FIXTURES, f"{name}.safetensors"))
    return model


@nnx.jit(static_argnames="return_info")
def forward(model, images, return_info=False):
    """Jitted: an eager ViT dispatches hundreds of small ops, each compiled on its own."""
    return model(images, return_info=return_info)


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.mark.accelerator
@pytest.mark.parametrize("name", list(MODELS))
def test_r0_matches_timm(name):
    io = fixture(name)
    logits = forward(load_small(name), jnp.asarray(io["images"]))
    assert rel_err(logits, io["logits_r0"]) < 1e-4


@pytest.mark.accelerator
@pytest.mark.parametrize("name", list(MODELS))
def test_tome_matches_official_patch(name):
    """Logits, token sizes and sources equal the official PyTorch ToMe on the same weights.
    The fixture's decision margins are > 1e-4, so every merge decision must agree."""
    io = fixture(name)
    model = load_small(name, trace_source=True)
    for tag, (r, prop_attn) in SETTINGS.items():
        assert io[f"margin_{tag}"] > 1e-4
        model.r, model.prop_attn = r, prop_attn
        logits, info = forward(model, jnp.asarray(io["images"]), return_info=True)
        np.testing.assert_array_equal(info["size"], io[f"size_{tag}"], err_msg=tag)
        np.testing.assert_array_equal(info["source"], io[f"source_{tag}"], err_msg=tag)
        assert rel_err(logits, io[f"logits_{tag}"]) < 1e-4, tag


# ----------------------------------------------------------------------------- NumPy re-statement


def _layer_norm(x, w, b, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


def _gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def numpy_vit(sd, images, r, prop_attn, heads=3, patch=4):
    """timm ViT (class token, token pooling) in float64 NumPy, ToMe per the spec with the reference merge."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    b, h, w, c = images.shape
    x = images.astype(np.float64).reshape(b, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 1, 3, 5, 2, 4).reshape(b, -1, c * patch * patch)  # patches in (c, kh, kw) order
    x = x @ sd["patch_embed.proj.weight"].reshape(sd["patch_embed.proj.weight"].shape[0], -1).T
    x = x + sd["patch_embed.proj.bias"]
    x = np.concatenate([np.repeat(sd["cls_token"], b, 0), x], 1) + sd["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    size = np.ones((b, x.shape[1], 1))
    for i, layer_r in enumerate(ref.parse_r(depth, r)):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        y = _layer_norm(x, p("norm1.weight"), p("norm1.bias"))
        t, dim = y.shape[1], y.shape[2]
        qkv = (y @ p("attn.qkv.weight").T + p("attn.qkv.bias")).reshape(b, t, 3, heads, dim // heads)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))  # [B, H, T, D]
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dim // heads)
        if prop_attn:
            logits = logits + np.log(size)[:, None, None, :, 0]
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, dim)
        x = x + out @ p("attn.proj.weight").T + p("attn.proj.bias")
        merge, _ = ref.bipartite_soft_matching(k.mean(1), layer_r, class_token=True)
        x, size = ref.merge_wavg(merge, x, size)
        y = _layer_norm(x, p("norm2.weight"), p("norm2.bias"))
        y = _gelu(y @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
        x = x + y @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    x = _layer_norm(x, sd["norm.weight"], sd["norm.bias"])
    return x[:, 0] @ sd["head.weight"].T + sd["head.bias"], size


@pytest.mark.accelerator
@pytest.mark.parametrize("r", [16, (16, -1), (13, 0.5), [20, 10, 4, 0]])
@pytest.mark.parametrize("prop_attn", [True, False])
def test_tome_matches_numpy_restatement(r, prop_attn):
    sd = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    images = fixture("vit_cls")["images"]
    expected, expected_size = numpy_vit(sd, images, r, prop_attn)
    model = load_small("vit_cls", r=r, prop_attn=prop_attn)
    logits, info = forward(model, jnp.asarray(images), return_info=True)
    np.testing.assert_array_equal(info["size"], expected_size)
    assert rel_err(logits, expected) < 1e-4


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("name", ["vit_cls", "deit_distilled"])
def test_sizes_and_sources_partition_the_tokens(name):
    model = load_small(name, r=(12, -1), trace_source=True)
    _, info = forward(model, jnp.asarray(fixture(name)["images"]), return_info=True)
    size, source = np.asarray(info["size"]), np.asarray(info["source"])
    tokens = model.num_patches + model.num_prefix_tokens
    assert size.sum(axis=(1, 2)).tolist() == [tokens] * size.shape[0]
    assert set(np.unique(source)) <= {0.0, 1.0}
    np.testing.assert_array_equal(source.sum(axis=1), 1.0)  # each original token in exactly one row
    np.testing.assert_array_equal(source.sum(axis=2, keepdims=True), size)
    for i in range(model.num_prefix_tokens):  # protected tokens stay in front, unmerged
        np.testing.assert_array_equal(source[:, i, i], 1.0)
        np.testing.assert_array_equal(size[:, i, 0], 1.0)


def test_changing_r_recompiles_once_per_schedule():
    model = load_small("vit_cls")
    images = jnp.asarray(fixture("vit_cls")["images"])
    traces = []

    @nnx.jit
    def forward(m, x):
        traces.append(m.r)
        return m(x)

    outputs = {}
    for r in [0, 8, 0, 8, (8, -1)]:
        model.r = r
        outputs.setdefault(str(r), []).append(np.asarray(forward(model, images)))
    assert traces == [0, 8, (8, -1)]
    assert not np.allclose(outputs["0"][0], outputs["8"][0])
    np.testing.assert_array_equal(outputs["8"][0], outputs["8"][1])


def test_gradients_flow_through_merged_tokens():
    model = load_small("vit_cls", r=8)
    images = jnp.asarray(fixture("vit_cls")["images"])
    grads = nnx.jit(nnx.grad(lambda m: m(images).sum()))(model)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(g).all() for g in leaves)
    assert np.abs(np.asarray(grads["blocks"][3]["mlp"]["fc1"]["kernel"][...])).sum() > 0


def test_r_above_clamp_is_clamped_per_layer():
    model = load_small("vit_cls", r=1000)
    _, info = forward(model, jnp.asarray(fixture("vit_cls")["images"]), return_info=True)
    assert info["size"].shape[1] == 5  # 65 -> 33 -> 17 -> 9 -> 5: half of the mergeable tokens per layer


def test_bfloat16_model_runs_close_to_float32():
    images = jnp.asarray(fixture("vit_cls")["images"])
    expected = forward(load_small("vit_cls"), images)
    logits = forward(load_small("vit_cls", dtype=jnp.bfloat16), images)
    assert logits.dtype == jnp.bfloat16
    assert rel_err(logits.astype(jnp.float32), expected) < 0.05


def test_dropout_and_drop_path_in_train_mode():
    model = load_small("vit_cls", drop_rate=0.1, drop_path_rate=0.2, rngs=nnx.Rngs(params=0, dropout=1))
    images = jnp.asarray(fixture("vit_cls")["images"])
    eval_out = np.asarray(forward(model, images))
    model.train()
    assert not np.allclose(np.asarray(forward(model, images)), eval_out)
    model.eval()
    np.testing.assert_array_equal(np.asarray(forward(model, images)), eval_out)


# ----------------------------------------------------------------------------- bad input


def test_bad_images_and_names_give_clear_errors():
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    with pytest.raises(ValueError, match="expected images of shape"):
        model(jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="expected images of shape"):
        model(jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="floating point"):
        model(jnp.zeros((1, 32, 32, 3), jnp.uint8))
    with pytest.raises(ValueError, match="unknown model name 'vit_gigantic'.*vit_base_patch16_224"):
        tome_jax.create_model("vit_gigantic")
    with pytest.raises(ValueError, match="inflect"):
        model.r = (8, 3.0)


def test_model_carries_preprocessing_config():
    cfg = tome_jax.create_model("deit_tiny_patch16_224", **SMALL).pretrained_cfg
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["crop_pct"] == 0.875
    assert cfg["input_size"] == (32, 32, 3) and cfg["interpolation"] == "bicubic"
    mae = tome_jax.create_model("vit_tiny_patch16_224.mae", **SMALL)
    assert mae.global_pool == "avg" and mae.fc_norm is not None and mae.prop_attn is False


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("name, r, gflops", [
    ("vit_base_patch16_224", 0, 17.6), ("vit_base_patch16_224", 16, 8.8),
    ("vit_large_patch16_224", 0, 61.6), ("vit_large_patch16_224", 8, 31.0),
])
def test_count_flops_matches_the_paper(name, r, gflops):
    model = nnx.eval_shape(lambda: tome_jax.create_model(name))  # no parameters allocated
    assert round(tome_jax.count_flops(model, r=r) / 1e9, 1) == gflops
