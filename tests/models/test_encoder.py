"""The shared encoder, the open registry and the image stem: a second family plugs in unchanged."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax.models.compiled import CompiledForward
from tome_jax.models.encoder import Encoder, layer_norm, linear


class RowFormer(Encoder):
    """A toy family defined outside the library: every pixel row of an image is one token; no class
    token; mean pooling with ToMe's sizes; also a reconstruction hook (predict each row back)."""

    stem_params = ("row_embed", "pos_embed")
    no_weight_decay_params = ("pos_embed",)

    def __init__(self, *, img_size=16, in_chans=3, embed_dim=32, depth=2, num_heads=2, num_classes=10,
                 dtype=None, pretrained_cfg=None, rngs, **encoder_kwargs):
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.row_embed = linear(img_size * in_chans, embed_dim, rngs=rngs, dtype=dtype)
        self.pos_embed = nnx.Param(jnp.zeros((1, img_size, embed_dim)))
        Encoder.__init__(self, embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_tokens=img_size,
                         dtype=dtype, rngs=rngs, **encoder_kwargs)
        self.norm = layer_norm(embed_dim, rngs=rngs, dtype=dtype)
        self.head = linear(embed_dim, num_classes, rngs=rngs, dtype=dtype)
        self.decoder = linear(embed_dim, img_size * in_chans, rngs=rngs, dtype=dtype)

    def tokens(self, images):
        b, h, w, c = images.shape
        return self.row_embed(images.reshape(b, h, w * c)) + self.pos_embed[...]

    def __call__(self, images, *, return_info=False):
        out = self.encode(self.tokens(images))
        x = self.norm(out.x)
        pooled = (x * out.size).sum(1) / self.num_tokens
        logits = self.head(pooled)
        return (logits, {"size": out.size, "source": out.source}) if return_info else logits

    def reconstruction_loss(self, images, key):
        del key
        out = self.encode(self.tokens(images))
        rows = self.unmerge(out.plans, self.decoder(self.norm(out.x)))  # back to one row per token
        return ((rows - images.reshape(rows.shape)) ** 2).mean(axis=(1, 2))

    def stem_flops(self):
        return float(self.num_tokens * self.img_size * self.in_chans * self.embed_dim)

    def head_flops(self):
        return float(self.embed_dim * self.num_classes)


@tome_jax.register_model("toy_rowformer", pretrained_cfg=dict(mean=(0.5,) * 3, std=(0.5,) * 3))
def toy_rowformer(**kwargs):
    return RowFormer(**kwargs)


def test_a_registered_family_gets_the_encoder_tome_and_flops():
    assert "toy_rowformer" in tome_jax.list_models("toy")
    model = tome_jax.create_model("toy_rowformer", r=3, trace_source=True)
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    logits, info = nnx.jit(lambda m, x: m(x, return_info=True))(model, images)
    assert logits.shape == (2, 10)
    assert info["size"].shape == (2, 10, 1)  # 16 -> 13 -> 10 tokens
    np.testing.assert_array_equal(np.asarray(info["size"]).sum(1), 16.0)
    np.testing.assert_array_equal(np.asarray(info["source"]).sum(1), 1.0)
    assert model.token_counts() == [16, 13, 10]
    flops = tome_jax.count_flops(model)
    assert flops < tome_jax.count_flops(model, r=0)
    with pytest.raises(ValueError, match="unknown tag 'mae'.*none"):
        tome_jax.create_model("toy_rowformer.mae")
    with pytest.raises(ValueError, match="already registered"):
        tome_jax.register_model("toy_rowformer")(toy_rowformer)


def test_a_registered_family_trains_and_reconstructs_in_the_loop(tmp_path):
    import ml_collections

    from tests.train.test_loop import tiny_config
    from tome_jax.train import train_and_evaluate

    config = tiny_config()
    config.model_name = "toy_rowformer"
    config.model = ml_collections.ConfigDict(dict(num_classes=10, embed_dim=32, depth=2, num_heads=2,
                                                  dtype="float32"))
    config.tome.r = 3
    config.optimizer.layer_decay = 0.75
    summary = train_and_evaluate(config, str(tmp_path / "cls"))
    # It learns: 8 steps reach 24.5% top-1 where lr=0 stays at chance (10.3%).
    assert summary["steps"] == 8 and summary["eval_top1"] > 17.0, summary
    config.task = "reconstruction"
    config.total_steps = 4
    summary = train_and_evaluate(config, str(tmp_path / "rec"))
    assert np.isfinite(summary["eval_loss"]) and summary["task"] == "reconstruction"


def test_each_method_compiles_once_per_schedule():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2,
                                  num_heads=2, num_classes=4)
    forward = CompiledForward(model)
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    for method in ("bipartite", "prune", "random", "kth", "none"):
        model.method = method
        for r in (2, 3, 2, 3):
            forward(images, r=r)
            forward(images + 1.0, r=r)
    assert len(forward.traces) == 10 and set(forward.traces.values()) == {1}
    model.method, model.r = "prune", 3
    # Shapes only: traced (nnx.eval_shape, 0.1 s) instead of run eagerly (6 s), the same program.
    _, info = nnx.eval_shape(lambda m, x: m(x, return_info=True), model, images)
    assert info["size"].shape[1] == 11  # 17 -> 14 -> 11: prune removes as many tokens as merging


def test_apply_tome_is_the_one_door_and_changes_only_what_it_is_given():
    import inspect

    from tome_jax.reduction import SETTINGS, TokenReduction

    assert tuple(inspect.signature(tome_jax.apply_tome).parameters)[1:] == SETTINGS
    assert [f.name for f in dataclasses.fields(TokenReduction)] == [*SETTINGS, "protected"]
    model = tome_jax.create_model("deit_tiny_distilled_patch16_224", img_size=16, patch_size=4, embed_dim=32,
                                  depth=2, num_heads=2, num_classes=4)
    assert model.reduction == TokenReduction(r=(0, 0), protected=2)  # class + distill token: the model's
    assert tome_jax.apply_tome(model, r=3, prop_attn=False) is model
    assert model.reduction == TokenReduction(r=(3, 3), prop_attn=False, protected=2)
    tome_jax.apply_tome(model, method="kth", trace_source=True)  # r and prop_attn stay
    assert (model.r, model.method, model.prop_attn, model.trace_source) == (3, "kth", False, True)
    model.r, model.prop_attn = [1, 2], True  # the shorthands are apply_tome with one keyword
    assert model.r == [1, 2] and model.reduction == TokenReduction("kth", (1, 2), True, True, protected=2)
    hash(model.reduction)  # static under jit
    with pytest.raises(TypeError, match="class_token"):
        tome_jax.apply_tome(model, class_token=True)  # an architecture fact, not a setting
    with pytest.raises(ValueError, match="prop_attn must be True or False, got 'no'"):
        tome_jax.apply_tome(model, prop_attn="no")
    with pytest.raises(ValueError, match="unknown token reduction method 'merge'"):
        model.method = "merge"
    assert model.reduction.method == "kth"  # a refused setting changes nothing


def test_constructors_take_no_tome_settings_and_families_keep_their_defaults_in_the_registry():
    import inspect

    from tome_jax.models import AudioTransformer, MaskedAutoencoder, VideoTransformer, VisionTransformer
    from tome_jax.reduction import SETTINGS

    for cls in (Encoder, VisionTransformer, VideoTransformer, MaskedAutoencoder, AudioTransformer):
        assert not set(SETTINGS) & set(inspect.signature(cls.__init__).parameters), cls
    small = dict(embed_dim=32, depth=2, num_heads=2)
    defaults = {  # name -> prop_attn: the family's registry entry, a tag's override, or TokenReduction's
        "vit_tiny_patch16_224": True, "vit_tiny_patch16_224.mae": False, "vit_tiny_patch16_audio": False,
        "mae_vit_tiny_patch16": False, "video_vit_base_patch16": True, "video_vit_base_patch16.mae_st": False}
    for name, prop_attn in defaults.items():
        model = nnx.eval_shape(lambda: tome_jax.create_model(name, **small))
        assert model.prop_attn is prop_attn and model.r == 0, name
        model = nnx.eval_shape(lambda: tome_jax.create_model(name, **small, r=2, prop_attn=None))
        assert model.prop_attn is prop_attn and model.r == 2, name  # None: the default survives
        assert nnx.eval_shape(lambda: tome_jax.create_model(name, **small, prop_attn=not prop_attn)).prop_attn \
            is (not prop_attn)
    with pytest.raises(ValueError, match=r"tags\['x'\]\['tome'\] has \['reduction_method'\]"):
        tome_jax.register_model("toy_bad_tome", tags={"x": dict(tome=dict(reduction_method="kth"))})(toy_rowformer)
    assert "toy_bad_tome" not in tome_jax.list_models("toy_bad")


def test_one_channel_rectangular_input_through_the_image_stem():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=(32, 128), in_chans=1, embed_dim=32,
                                  depth=2, num_heads=2, num_classes=5, r=4, trace_source=True)
    assert model.grid_size == (2, 8) and model.num_patches == 16
    assert model.pretrained_cfg["input_size"] == (32, 128, 1)
    logits, info = nnx.jit(lambda m, x: m(x, return_info=True))(model, jnp.ones((3, 32, 128, 1)))
    assert logits.shape == (3, 5) and info["source"].shape == (3, 9, 17)  # 17 -> 13 -> 9
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 32, 128, 1\]"):
        model(jnp.ones((1, 128, 32, 1)))
    with pytest.raises(ValueError, match="not divisible by patch_size 16"):
        tome_jax.create_model("vit_tiny_patch16_224", img_size=(32, 120))


def test_fractional_r_gives_the_documented_list_and_compiles_once():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=32, depth=3,
                                  num_heads=2, num_classes=4)
    model.r = 0.25
    assert model.r == 0.25 and model.r_per_layer == [16, 12, 9]  # of 64, 48, 36 patch tokens
    forward = CompiledForward(model)
    images = jnp.ones((1, 32, 32, 3))
    forward(images)
    forward(images, r=0.25)
    assert list(forward.traces.values()) == [1]
    with pytest.raises(ValueError, match="4 entries but the model has 3 blocks"):
        model.r = [1, 2, 3, 4]


def test_tags_keep_their_defaults_unless_the_config_sets_the_field():
    from configs.finetune_tome import get_config
    from tome_jax.train.loop import build_model

    config = get_config("runlocal")
    config.model_name = "vit_tiny_patch16_224.mae"
    assert "prop_attn" not in config.tome  # the recipe leaves it to the model
    assert build_model(config).prop_attn is False
    config.model_name = "vit_tiny_patch16_224"
    assert build_model(config).prop_attn is True
    config.model_name = "vit_tiny_patch16_224.mae"
    config.tome.prop_attn = True
    assert build_model(config).prop_attn is True
    config.tome.prop_atn = False
    with pytest.raises(ValueError, match=r"config.tome has \['prop_atn'\]; .*method, r, prop_attn, trace_source"):
        build_model(config)


def test_a_model_is_described_by_its_name_and_what_changes_it():
    from configs.vit_b_tome import get_config
    from tome_jax.models.registry import describe_model

    # Keywords that change what the name states (input and patch size, depth, width): the name would
    # mislead, so the description leads with the family and its shape (the README's main job).
    runlocal = get_config("runlocal").model.to_dict()
    assert describe_model("vit_tiny_patch16_224", **runlocal) == (
        "VisionTransformer (16x16 input, 2-px patches, depth 6, width 64; global_pool='avg', mlp_ratio=2.0, "
        "num_classes=10, num_heads=4)")
    assert describe_model("vit_base_patch16_audio", img_size=(512, 128)) == (
        "AudioTransformer (512x128 input, 16-px patches, depth 12, width 768)")
    assert describe_model("vit_tiny_patch16_224", num_classes=10) == "vit_tiny_patch16_224 (num_classes=10)"
    # The name's own values, float32 and training-only regularization say nothing new.
    assert describe_model("vit_tiny_patch16_224", embed_dim=192, img_size=224, dtype="float32",
                          drop_path_rate=0.1) == "vit_tiny_patch16_224"
    assert describe_model("deit_base_patch16_224", **get_config().model.to_dict()) == (
        "deit_base_patch16_224 (dtype='bfloat16')")
    assert describe_model("vit_base_patch16_224.mae", global_pool="avg") == "vit_base_patch16_224.mae"
    assert describe_model("vit_base_patch16_224.mae", global_pool="token") == (
        "vit_base_patch16_224.mae (global_pool='token')")
    assert describe_model("toy_rowformer", embed_dim=32) == "toy_rowformer (embed_dim=32)"  # no visible defaults
    with pytest.raises(ValueError, match="unknown model name 'vit_tiny'"):
        describe_model("vit_tiny")


def test_reading_a_recipe_loads_no_training_code():
    code = ("import sys, glob, importlib, os\n"
            "for f in sorted(glob.glob('configs/*.py')):\n"
            "    m = importlib.import_module('configs.' + os.path.basename(f)[:-3])\n"
            "    getattr(m, 'get_config', lambda *a: None)()\n"
            "heavy = sorted({n.split('.')[0] for n in sys.modules} & {'orbax', 'optax', 'grain', 'tqdm', 'flax'})\n"
            "models = [n for n in sys.modules if n.startswith(('tome_jax.models', 'tome_jax.train'))]\n"
            "print(heavy, models)\n"
            "assert not heavy and not models, (heavy, models)\n")
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
