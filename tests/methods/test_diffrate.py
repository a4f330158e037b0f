"""DiffRate against the authors' code (golden fixture) and its counts, schedules and options.

tests/fixtures/diffrate_io.npz is made by tests/fixtures/make_diffrate_fixture.py from
OpenGVLab/DiffRate's own `DiffRateBlock` / `DiffRateAttention` on the `vit_cls` fixture model
(64 patches + class token, depth 4), in eval mode with per-block kept counts; the model here is the
same `vit_cls` (tests/models/test_vit.py's loader).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tests.models.test_vit import FIXTURES, forward, load_small, rel_err
from tome_jax.methods.diffrate import PUBLISHED, DiffRateOptions, importance, kept_counts
from tome_jax.reduction import TokenReduction

# fixture tag -> (r, options): how the authors' schedules are spelled here. The fixture also holds
# "r8_corrected" (count_patches=False), "mixed" (prune_kept=(65, 58, 44, 36), merge_kept=(60, 50,
# 40, 20)) and "prune_only"; each is one more compile, so the suite checks their helper's schedule
# (the quirk included), and kept_counts / the block tests below cover the other counts.
SETTINGS = {
    "r8_helper": (8, {}),  # their r helper: block 0 prunes one extra token, then 8 merges per block
}


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(os.path.join(FIXTURES, "diffrate_io.npz")))


@pytest.fixture(scope="module")
def model():
    return load_small("vit_cls", trace_source=True)


@pytest.mark.parametrize("tag", list(SETTINGS))
def test_matches_the_authors_code(model, golden, tag):
    """Logits, sizes (similarity-weighted) and sources equal OpenGVLab/DiffRate's on the same weights;
    the fixture's decision margins (> 4e-7, float32 noise here ~1e-8) leave every order and match fixed."""
    r, options = SETTINGS[tag]
    tome_jax.apply_tome(model, method="diffrate", r=r, options=options)
    counts = model.token_counts()
    expected_counts = [65] + [min(p, m) for p, m in zip(golden[f"prune_{tag}"], golden[f"merge_{tag}"])]
    assert counts == expected_counts
    assert golden[f"margin_{tag}"] > 4e-7
    logits, info = forward(model, jnp.asarray(golden["images"]), return_info=True)
    np.testing.assert_allclose(info["size"], golden[f"size_{tag}"], rtol=1e-5, err_msg=tag)
    np.testing.assert_array_equal(info["source"], golden[f"source_{tag}"], err_msg=tag)
    assert rel_err(logits, golden[f"logits_{tag}"]) < 1e-4, tag


def test_kept_counts_reproduce_the_196_token_quirk():
    default, corrected = DiffRateOptions(), DiffRateOptions(count_patches=False)
    # ViT-B/16 at 224: 197 tokens. Their helper starts at the 196 patches: block 0 prunes one.
    assert kept_counts(0, 16, 197, 1, default) == (196, 180)
    assert kept_counts(0, 16, 197, 1, corrected) == (197, 181)
    assert kept_counts(1, 16, 180, 1, default) == (180, 164)  # later blocks: no extra prune
    assert kept_counts(0, 0, 197, 1, default) == (197, 197)  # r = 0: the identity
    assert kept_counts(5, 100, 30, 1, default) == (30, 15)  # their clamp: at most N // 2 per block
    assert kept_counts(0, 16, 64, 0, default) == (64, 48)  # no class token: nothing to miscount


def test_published_schedules_and_explicit_counts():
    options = DiffRateOptions(published="deit_small_patch16_224@2.9")
    prune, merge = PUBLISHED["deit_small_patch16_224@2.9"]
    assert len(prune) == len(merge) == 12 and prune[0] == 197
    assert kept_counts(2, 1, 190, 1, options) == (min(190, prune[2]), min(190, prune[2], merge[2]))
    assert kept_counts(11, 1, 60, 1, options) == (3, 3)
    model = nnx.eval_shape(lambda: tome_jax.create_model("deit_small_patch16_224"))  # no parameters
    tome_jax.apply_tome(model, method="diffrate", r=1, options=dict(published="deit_small_patch16_224@2.9"))
    counts = model.token_counts()
    assert counts[-1] == 3 and counts[1] == min(prune[0], merge[0])
    ratio = tome_jax.count_flops(model) / tome_jax.count_flops(model, r=0)
    assert 0.6 < ratio < 0.7  # 2.9 GFLOPs of DeiT-S's 4.6
    with pytest.raises(ValueError, match="unknown published schedule"):
        DiffRateOptions(published="deit_small_patch16_224@9.9")
    with pytest.raises(ValueError, match="one entry per block"):
        DiffRateOptions(prune_kept=(10, 9), merge_kept=(8,))
    with pytest.raises(ValueError, match="not both"):
        DiffRateOptions(published="deit_small_patch16_224@2.9", prune_kept=(1,), merge_kept=(1,))


def block(options, r=4, tokens=13):
    """One block's DiffRate on random inputs (B=2, 1 class token): (x, size, source, plan, reduction)."""
    rng = np.random.default_rng(3)  # NumPy inputs: no eager JAX op to compile
    x = jnp.asarray(rng.standard_normal((2, tokens, 8)), jnp.float32)
    logits = rng.standard_normal((2, 2, tokens, tokens))
    attn = jnp.asarray(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), jnp.float32)
    reduction = TokenReduction(method="diffrate", r=(r,), trace_source=True, protected=1, options=options)

    @jax.jit  # one compile instead of an eager op-by-op dispatch
    def run(x, attn):
        plan = reduction.plan(0, x, None, x=x, size=None, attn=attn)
        return (*reduction.reduce(plan, x, None, None), plan, reduction.undo(plan, reduction.reduce(plan, x, None, None)[0]))

    return (*run(x, attn), reduction, x, attn)


@pytest.mark.parametrize("options, kept", [({}, (12, 8)), (dict(prune_kept=(10,), merge_kept=(7,)), (10, 7))])
def test_prunes_the_least_attended_and_merges_the_next(options, kept):
    out, size, source, plan, _, reduction, x, attn = block(options)
    # 13 tokens, r=4: their count of 12 patches keeps 12, then 4 merge into 8 destinations; or as given.
    pruned, merged = kept
    assert out.shape == (2, merged, 8) and reduction.tokens_after(0, 13) == merged
    order = 1 + np.argsort(-np.asarray(attn)[:, :, 0, 1:].mean(1), axis=-1, kind="stable")
    source = np.asarray(source)
    for b in range(2):
        assert source[b][:, order[b, pruned - 1:]].sum() == 0  # the least attended tokens are pruned
        assert source[b][:, order[b, :pruned - 1]].sum() == pruned - 1  # the others all kept or merged
        kept_first = [0, *order[b, :merged - 1]]  # the most attended (+ class token) stay, in that order
        np.testing.assert_array_equal(source[b, np.arange(merged), kept_first], 1.0)
    assert (np.asarray(size)[:, 0] == 1).all() and np.asarray(size).sum() < 2 * pruned  # similarity < 1


def test_plain_sizes_option_counts_tokens_and_undo_zeros_pruned():
    """similarity_size=False: sizes count the tokens of each group (12 of 13 left after the prune)."""
    out, size, source, plan, back, reduction, _, _ = block(dict(similarity_size=False))
    size, source = np.asarray(size), np.asarray(source)
    np.testing.assert_array_equal(source.sum(axis=2, keepdims=True), size)
    assert (size.sum(axis=(1, 2)) == 12).all() and (source.sum(axis=1) <= 1).all()
    back = np.asarray(back)
    np.testing.assert_allclose(back, np.einsum("bot,boc->btc", source, np.asarray(out)), rtol=1e-6)
    assert (back[source.sum(axis=1) == 0] == 0).all()  # the pruned token comes back as zeros


def test_without_a_class_token_it_is_not_applicable_unless_importance_is_received():
    """Their importance is the class token's row: a model without one gets the reason, from
    `not_applicable` and from the plan; importance="received" (ours) ranks by the attention each
    token receives."""
    attn = np.random.default_rng(0).dirichlet(np.ones(9), size=(2, 2, 9)).astype(np.float32)  # [B, H, T, T]
    theirs = TokenReduction(method="diffrate", r=(3,), protected=0)
    assert "no class token" in theirs.reducer.not_applicable(0)
    assert theirs.reducer.not_applicable(1) is None  # with a class token it applies
    with pytest.raises(ValueError, match="no class token; options importance='received'"):
        theirs.plan(0, attn[:, 0], x=attn[:, 0], attn=attn)
    with pytest.raises(ValueError, match="importance must be one of class_token, received"):
        DiffRateOptions(importance="cls")
    ours = TokenReduction(method="diffrate", r=(3,), protected=0, options=dict(importance="received"))
    assert ours.reducer.not_applicable(0) is None
    np.testing.assert_allclose(np.asarray(importance(attn, 0, "received")), attn.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(importance(attn, 1, "received")), attn.mean(axis=(1, 2))[:, 1:], rtol=1e-6)
