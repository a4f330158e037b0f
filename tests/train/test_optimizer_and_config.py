"""Optimizer pieces and recipe arguments."""

import jax.numpy as jnp
import numpy as np
import pytest

import tome_jax

from configs.vit_b_tome import get_config
from tome_jax.train import optimizer
from configs.common import parse_arg


def test_parse_arg_types_and_unknown_names():
    arg = parse_arg("runlocal,r=8", runlocal=False, r=-1, name="x")
    assert arg.runlocal is True and arg.r == 8 and arg.name == "x"
    with pytest.raises(ValueError, match="unknown config argument 'bogus'"):
        parse_arg("bogus", runlocal=False)
    with pytest.raises(ValueError, match="needs a value"):
        parse_arg("r", r=1)


def test_recipe_variants_share_one_code_path():
    full, local = get_config(), get_config("runlocal")
    assert set(full.keys()) == set(local.keys())  # runlocal shrinks values, it adds no fields
    assert full.data.name == "imagenet2012" and local.data.name == "digits"
    assert full.tome.r == 16 and get_config("r=0").tome.r == 0


def test_the_main_job_has_tokens_for_merging_to_matter():
    """README command 1 (issue 22): at least 64 patch tokens, and the recipe's r merges most of them
    over the depth, so ToMe's trade-off shows (its speedup grows with depth x tokens merged)."""
    from tome_jax.train.loop import build_model

    config = get_config("runlocal")
    assert config.data.image_size == config.model.img_size
    model = build_model(config, load_weights=False)
    assert model.num_tokens == 64 + 1  # patch tokens + the class token
    assert model.token_counts()[-1] <= 8  # the recipe's r, layer by layer
    assert tome_jax.count_flops(model) <= 0.5 * tome_jax.count_flops(model, r=0)
    assert get_config("runlocal,r=0").tome.r == 0


def test_other_recipes():
    from configs import deit_s_tome, finetune_tome

    deit = deit_s_tome.get_config()
    assert deit.model_name == "deit_small_patch16_224" and deit.tome.r == 13
    finetune = finetune_tome.get_config("model=vit_large_patch16_224,r=8")
    assert finetune.model_name == "vit_large_patch16_224" and finetune.tome.r == 8
    assert finetune.optimizer.layer_decay == 0.65 and tuple(finetune.init.skip) == ("head",)
    assert set(finetune.keys()) == set(deit.keys()) == set(get_config().keys())


def test_weight_decay_mask_and_layer_decay_come_from_the_model():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, embed_dim=8, depth=2,
                                  num_heads=2, num_classes=3)
    params = {"pos_embed": jnp.zeros((1, 5, 4)), "cls_token": jnp.zeros((1, 1, 4)),
              "patch_embed": {"proj": {"kernel": jnp.zeros((2, 2, 3, 4))}},
              "blocks": {0: {"attn": {"qkv": {"kernel": jnp.zeros((4, 12)), "bias": jnp.zeros(12)}}},
                         1: {"mlp": {"fc1": {"kernel": jnp.zeros((4, 8))}}}},
              "head": {"kernel": jnp.zeros((4, 3))}}
    mask = model.weight_decay_mask(params)
    assert not mask["pos_embed"] and not mask["cls_token"] and not mask["blocks"][0]["attn"]["qkv"]["bias"]
    assert mask["blocks"][0]["attn"]["qkv"]["kernel"] and mask["head"]["kernel"]
    scales = optimizer.layer_decay_scales(model.layer_ids(params), depth=2, decay=0.5)
    assert scales["head"]["kernel"] == 1.0
    assert scales["blocks"][1]["mlp"]["fc1"]["kernel"] == 0.5
    assert scales["blocks"][0]["attn"]["qkv"]["kernel"] == 0.25
    assert scales["pos_embed"] == scales["patch_embed"]["proj"]["kernel"] == 0.125


def test_schedule_warms_up_then_decays():
    config = get_config("runlocal").optimizer
    schedule = optimizer.learning_rate_schedule(config, total_steps=100, warmup_steps=10)
    lrs = np.array([schedule(s) for s in range(100)])
    assert lrs[0] == 0 and np.isclose(lrs[10], config.lr) and lrs[99] < lrs[50] < lrs[10]
