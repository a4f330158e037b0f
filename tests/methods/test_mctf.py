"""MCTF (tome_jax/methods/mctf.py) against the authors' code (github mlvlab/MCTF).

Fixtures (tests/fixtures/make_mctf_fixtures.py, a port of the authors' utils/mctf.py and block):
`mctf_merge.npz`, the merge function alone, and `mctf_io.npz`, the small `vit_cls` timm model
through MCTF's block. Their decision margins are >= 6e-5 (float32 noise is ~1e-7), so every merge
decision and the order of the unmerged tokens must agree.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tome_jax
from tests.models.test_vit import forward, load_small, rel_err
from tome_jax.methods.mctf import mctf_merge, mctf_plan, mctf_r

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
MERGE_SETTINGS = {  # fixture tag -> (r, bidirectional, pooling, sizes given)
    "bi_attnpool": (10, True, "attention", True),
    "bi_attnpool_nosize": (7, True, "attention", False),
    "oneway_sizepool": (6, False, "size", True),
}


def fixture(name):
    return dict(np.load(os.path.join(FIXTURES, f"{name}.npz")))


@jax.jit
def _merge_all(x, attn, size):
    """Every merge-level check's results from one compiled program: the fixture's settings, and the
    plans of a class + distill token model (x's first 24 tokens, one-way and bidirectional)."""
    out = {}
    for tag, (r, bidirectional, pooling, given) in MERGE_SETTINGS.items():
        s = size if given else None
        plan = mctf_plan(x, attn, s, r, protected=1, bidirectional=bidirectional)
        out[tag] = mctf_merge(plan, x, s, attn, pooling=pooling)
    distill = [mctf_plan(x[:, :24], attn[:, :, :24, :24], None, 6, protected=2, bidirectional=b) for b in (True, False)]
    return out, distill


@pytest.fixture(scope="module")
def merged():
    io = fixture("mctf_merge")
    return io, _merge_all(jnp.asarray(io["x"]), jnp.asarray(io["attn"]), jnp.asarray(io["size"]))


def test_merge_matches_the_authors_merge_function(merged):
    """Fused tokens, sizes and the one-step-ahead attention equal utils/mctf.py's (bidirectional
    with attention pooling, with and without sizes, and one-way with size pooling)."""
    io, (results, _) = merged
    for tag, (x, size, attn) in results.items():
        np.testing.assert_allclose(x, io[f"x_{tag}"], atol=1e-5, err_msg=tag)
        np.testing.assert_array_equal(size, io[f"size_{tag}"], err_msg=tag)
        np.testing.assert_allclose(attn, io[f"attn_{tag}"], atol=1e-6, err_msg=tag)
        np.testing.assert_allclose(np.asarray(attn).sum(-1), 1.0, atol=1e-5)  # still probabilities


@pytest.mark.parametrize("tokens, r, protected, expected", [
    (197, 16, 1, 16), (20, 16, 1, 9), (12, 16, 1, 2), (10, 4, 1, 0), (9, 4, 0, 0), (65, 40, 1, 32)])
def test_clamp_keeps_ten_tokens_then_half(tokens, r, protected, expected):
    """`if t - r < 10: r = t - 10`, then at most (t - protected) // 2, never below 0."""
    assert mctf_r(tokens, r, protected) == expected


def test_distill_token_stays_second_and_alone(merged):
    """With a class and a distill token (the authors' code has none), both stay in front, unmerged."""
    for plan in merged[1][1]:
        np.testing.assert_array_equal(plan.out_rows[:, :2], [[0, 1], [0, 1]])
        assert not np.isin(np.asarray(plan.src_rows), [0, 1]).any()
        assert not np.isin(np.asarray(plan.dst_pos), [0, 1]).any()


# ----------------------------------------------------------------------------- the model, through the block


@pytest.fixture(scope="module")
def vit_cls():
    return load_small("vit_cls", trace_source=True)


def _check_against_fixture(model, io, tag):
    logits, info = forward(model, jnp.asarray(io["images"]), return_info=True)
    assert io[f"margin_{tag}"] > 3e-5
    np.testing.assert_array_equal(info["size"], io[f"size_{tag}"], err_msg=tag)
    np.testing.assert_array_equal(info["source"], io[f"source_{tag}"], err_msg=tag)
    assert rel_err(logits, io[f"logits_{tag}"]) < 1e-5, tag


def test_vit_matches_the_authors_block_off_the_shelf(vit_cls):
    """The authors' evaluation setting (their defaults; block 0 not merging, as activate_layer
    [1..11]): logits, sizes and sources equal their MCTF block's on the same timm weights."""
    io = fixture("mctf_io")
    tome_jax.apply_tome(vit_cls, method="mctf", r=[0, 8, 8, 8], prop_attn=True, options={})
    assert vit_cls.token_counts() == [65, 65, 57, 49, 41]
    _check_against_fixture(vit_cls, io, "default")


@pytest.mark.slow
def test_vit_matches_the_authors_block_one_way_size_pooling(vit_cls):
    """Every block merging, one-way matching, size pooling, no proportional attention (the merge
    function of this setting is also checked fast, in the unit fixture)."""
    io = fixture("mctf_io")
    tome_jax.apply_tome(vit_cls, method="mctf", r=6, prop_attn=False,
                        options=dict(bidirectional=False, pooling="size"))
    _check_against_fixture(vit_cls, io, "all_r6_size")
