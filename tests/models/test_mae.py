"""MAE pre-training on the shared encoder: masking, loss, official names, the move into fine-tuning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import tome_jax
from tome_jax.models.mae import MaskedAutoencoder
from tome_jax.models.weights import CheckpointMismatchError

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
            decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
TINY_VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)


def tiny_mae(**kwargs):
    return tome_jax.create_model("mae_vit_tiny_patch16", **{**TINY, **kwargs})


def official_pretraining_keys(depth, decoder_depth, dim, dec, patch, chans, tokens):
    """The key names and torch shapes of facebookresearch/mae models_mae.py, written out by hand."""
    def block(prefix, d):
        return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
                f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
                f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                f"{prefix}.mlp.fc1.weight": (2 * d, d), f"{prefix}.mlp.fc1.bias": (2 * d,),
                f"{prefix}.mlp.fc2.weight": (d, 2 * d), f"{prefix}.mlp.fc2.bias": (d,)}
    keys = {"cls_token": (1, 1, dim), "pos_embed": (1, tokens, dim),
            "patch_embed.proj.weight": (dim, chans, patch, patch), "patch_embed.proj.bias": (dim,),
            "norm.weight": (dim,), "norm.bias": (dim,),
            "decoder_embed.weight": (dec, dim), "decoder_embed.bias": (dec,), "mask_token": (1, 1, dec),
            "decoder_pos_embed": (1, tokens, dec), "decoder_norm.weight": (dec,), "decoder_norm.bias": (dec,),
            "decoder_pred.weight": (patch * patch * chans, dec), "decoder_pred.bias": (patch * patch * chans,)}
    for i in range(depth):
        keys.update(block(f"blocks.{i}", dim))
    for i in range(decoder_depth):
        keys.update(block(f"decoder_blocks.{i}", dec))
    return keys


def random_state_dict(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) * 0.05 for k, s in shapes.items()}


def test_masking_keeps_the_configured_fraction_per_sample_and_is_reproducible():
    for ratio, keep in ((0.75, 4), (0.5, 8), (0.9, 1)):
        model = tiny_mae(mask_ratio=ratio)
        ids_keep, mask, ids_restore = model.random_masking(jax.random.key(3), 32)
        assert model.num_keep == keep and ids_keep.shape == (32, keep)
        np.testing.assert_array_equal(np.asarray(mask).sum(1), 16 - keep)  # exactly, in every sample
        for row_keep, row_mask in zip(np.asarray(ids_keep), np.asarray(mask)):
            assert len(set(row_keep)) == keep and (row_mask[row_keep] == 0).all()
        # The same key gives the same mask; another key another; samples differ from each other.
        again = model.random_masking(jax.random.key(3), 32)[1]
        np.testing.assert_array_equal(again, mask)
        assert not np.array_equal(model.random_masking(jax.random.key(4), 32)[1], mask)
        assert len({tuple(row) for row in np.asarray(mask)}) > 1
        assert (np.sort(np.asarray(ids_restore), axis=1) == np.arange(16)).all()  # a permutation per sample
    # The encoder sees the class token and the visible patches only.
    model = tiny_mae()
    latent, mask, _ = model.forward_encoder(jnp.zeros((2, 16, 16, 3)), jax.random.key(0))
    assert latent.shape == (2, 1 + 4, 32) and model.token_counts() == [5, 5, 5]


def test_patchify_matches_the_official_layout_and_inverts():
    model = tiny_mae()
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    patches = np.asarray(model.patchify(jnp.asarray(images)))
    # Official: imgs NCHW -> 'nchpwq->nhwpqc'; our images are NHWC.
    nchw = images.transpose(0, 3, 1, 2).reshape(2, 3, 4, 4, 4, 4)
    expected = np.einsum("nchpwq->nhwpqc", nchw).reshape(2, 16, 48)
    np.testing.assert_array_equal(patches, expected)
    np.testing.assert_array_equal(model.unpatchify(jnp.asarray(patches)), images)


def test_reconstruction_loss_falls_on_digits():
    from configs.mae_pretrain import get_config
    from tome_jax import data as data_lib

    config = get_config("runlocal")
    batch = next(iter(data_lib.make_dataset(config.data, "train", global_batch_size=64, train=True, seed=0)))
    images = data_lib.normalize(jnp.asarray(batch["image"]), config.data.mean, config.data.std)  # as the loop does
    model = tiny_mae()
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, key):
        loss, grads = nnx.value_and_grad(lambda m: m.reconstruction_loss(images, key).mean())(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt, jax.random.key(i))) for i in range(40)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    # The loss is on the masked patches: those are what the model learned to predict, not the visible
    # ones. Measured on a fresh mask, per-patch error masked / visible: 0.70 / 1.24 = 0.57; with the
    # mask inverted in the loss (training on the visible patches, a copy task) 0.84 / 0.27 = 3.1.
    _, pred, mask = model(images, jax.random.key(1000))
    per_patch, mask = np.asarray(model.patch_losses(images, pred)), np.asarray(mask)
    masked, visible = (per_patch * mask).sum() / mask.sum(), (per_patch * (1 - mask)).sum() / (1 - mask).sum()
    assert masked < 0.8 * visible, (masked, visible)


def test_official_pretraining_checkpoint_loads_both_ways():
    shapes = official_pretraining_keys(2, 1, 32, 16, 4, 3, 17)
    state = random_state_dict(shapes)
    model = tiny_mae()
    report = tome_jax.load_timm(model, {"model": state})  # strict: every key used, none missing
    assert report["missing"] == report["unused"] == report["ignored"] == []
    np.testing.assert_array_equal(model.mask_token[...], state["mask_token"])
    # ... and our model writes exactly the official names and shapes.
    written = tome_jax.models.weights.timm_state_dict(model)
    assert {k: v.shape for k, v in written.items()} == shapes
    # Its encoder loads into the fine-tuning ViT; the decoder and final norm are reported as
    # intentionally unused, fc_norm and the head start fresh (official MAE fine-tuning).
    vit = tome_jax.create_model("vit_tiny_patch16_224.mae", **TINY_VIT)
    report = tome_jax.load_timm(vit, {"model": state}, skip=("head",))
    decoder = sorted(k for k in shapes if k.startswith(("decoder_", "mask_token")))
    assert report["ignored"] == sorted(decoder + ["norm.bias", "norm.weight"])
    assert report["initialized"] == ["fc_norm.bias", "fc_norm.weight"]
    assert report["missing"] == report["unused"] == []
    np.testing.assert_array_equal(vit.blocks[1].mlp.fc2.kernel[...], state["blocks.1.mlp.fc2.weight"].T)
    np.testing.assert_array_equal(vit.pos_embed[...], state["pos_embed"])


def test_official_finetuned_checkpoint_accounts_for_every_key():
    shapes = official_pretraining_keys(2, 0, 32, 16, 4, 3, 17)
    shapes = {k: v for k, v in shapes.items() if not k.startswith(("decoder_", "mask_token", "norm."))}
    shapes.update({"fc_norm.weight": (32,), "fc_norm.bias": (32,), "head.weight": (10, 32), "head.bias": (10,)})
    vit = tome_jax.create_model("vit_tiny_patch16_224.mae", **TINY_VIT, r=2)
    report = tome_jax.load_timm(vit, {"model": random_state_dict(shapes)})
    assert report == {"missing": [], "unused": [], "resampled": [], "ignored": [], "initialized": []}


def test_finetuning_step_with_tome_gives_finite_gradients_for_every_parameter():
    vit = tome_jax.create_model("vit_tiny_patch16_224.mae", **TINY_VIT, r=4, drop_path_rate=0.1)
    assert vit.token_counts() == [17, 13, 9] and not vit.prop_attn
    vit.train()
    images = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    labels = jnp.arange(4)

    def loss_fn(model):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = nnx.jit(nnx.grad(loss_fn))(vit)  # jitted: the same gradients, without eager dispatch
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param))
    assert len(leaves) == len(jax.tree.leaves(nnx.state(vit, nnx.Param)))
    for path, g in leaves:
        assert np.isfinite(np.asarray(g)).all(), path
    assert sum(float(jnp.abs(g).sum()) > 0 for _, g in leaves) == len(leaves)


def test_bad_mask_ratio_and_decoder_config_are_clear_errors():
    for ratio in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
            tiny_mae(mask_ratio=ratio)
    with pytest.raises(ValueError, match="keeps 0 of 16 patches"):
        tiny_mae(mask_ratio=0.99)
    with pytest.raises(ValueError, match="decoder config does not fit.*decoder_embed_dim=18"):
        tiny_mae(decoder_embed_dim=18)
    with pytest.raises(ValueError, match="decoder config does not fit"):
        tiny_mae(decoder_embed_dim=16, decoder_num_heads=3)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        tiny_mae(img_size=18)


def test_a_non_mae_init_lists_the_wrong_keys():
    vit = tome_jax.create_model("vit_tiny_patch16_224.mae", **TINY_VIT)
    wrong = random_state_dict({"conv_stem.weight": (2, 2), "mask_token": (1, 1, 16), "decoder_embed.weight": (16, 32),
                               "decoder_pred.weight": (48, 16)})
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \[.*blocks\.0\.attn\.qkv\.weight.*"
                                                      r"unused keys \['conv_stem\.weight'\].*MAE pre-training"):
        tome_jax.load_timm(vit, wrong, skip=("head",))


def test_flops_count_the_visible_tokens_and_the_decoder():
    model = tiny_mae()
    assert isinstance(model, MaskedAutoencoder)
    full = tome_jax.count_flops(model)
    assert full > model.head_flops() > 0 and model.stem_flops() == 16 * 16 * 3 * 32


def test_with_tome_the_encoder_undoes_its_merges_before_the_decoder():
    """r=1 merges 5 -> 4 -> 3 tokens; `forward_encoder` unmerges them back to the class token and the
    4 visible patches (each patch holding its group's value), so the decoder's gather still works."""
    model = tiny_mae(r=1)
    assert model.token_counts() == [5, 4, 3]
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))

    @nnx.jit  # one compiled program for the encoder, the full pass and its gradients (eagerly: 30 s)
    def run(m, x, key):
        latent = m.forward_encoder(x, key)[0]
        loss, pred, _ = m(x, key)
        grads = nnx.grad(lambda m: m(x, key)[0].mean())(m)
        return latent, loss, pred, grads

    latent, loss, pred, grads = run(model, images, jax.random.key(1))
    assert latent.shape == (2, 1 + 4, 32)
    for sample in np.asarray(latent):
        groups = np.unique(sample.round(5), axis=0)
        assert len(groups) == 3  # 3 groups after the merges, each spread back over its tokens
        assert not any(np.allclose(sample[0], row) for row in sample[1:])  # the class token is never merged
    assert pred.shape == (2, 16, 48) and np.isfinite(np.asarray(loss)).all()
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(nnx.state(grads, nnx.Param)))
