"""ToFu (tome_jax/methods/tofu.py) against its published code (the PiToMe repository's algo/tofu).

Fixtures (tests/fixtures/make_tofu_fixtures.py, a port of algo/tofu/merge.py and patch/timm.py):
`tofu_merge.npz`, the merge function alone, and `tofu_io.npz`, the small `vit_cls` timm model through
ToFu's block. Decision margins >= 1e-3.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tome_jax
from tests.models.test_vit import forward, load_small, rel_err
from tome_jax import merge as tome
from tome_jax.methods.tofu import mlerp_merge, prunes

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def fixture(name):
    return dict(np.load(os.path.join(FIXTURES, f"{name}.npz")))


@jax.jit
def _merges(metric, x):
    out = {}
    for r in (4, 13):
        plan = tome.bipartite_plan(metric, r, class_token=True)
        largest = tome.apply_plan(plan, jnp.linalg.norm(x, axis=-1, keepdims=True), "amax")[..., 0]
        out[r] = (mlerp_merge(plan, x), tome.keep_rows(plan, x), mlerp_merge(plan, x, "merged"), largest)
    return out


def test_merge_and_prune_match_the_published_code_and_mlerp_keeps_the_largest_norm():
    io = fixture("tofu_merge")
    x = jnp.asarray(io["x"])
    for r, (merged, pruned, paper, largest) in _merges(jnp.asarray(io["metric"]), x).items():
        np.testing.assert_allclose(merged, io[f"x_tofu_r{r}"], atol=1e-5, err_msg=f"r={r}")
        np.testing.assert_array_equal(pruned, io[f"x_prune_r{r}"], err_msg=f"r={r}")
        # The paper's MLERP: every group's result has the group's largest norm; the published rescale
        # (by the destination's norm before the merge) does not.
        np.testing.assert_allclose(np.linalg.norm(paper, axis=-1), largest, rtol=1e-5)
        assert np.abs(np.linalg.norm(merged, axis=-1) - largest).max() > 1e-2


def test_published_rule_prunes_the_first_half_and_one_more():
    assert [prunes(i, 12, -1) for i in range(12)] == [True] * 7 + [False] * 5
    assert [prunes(i, 4, -1) for i in range(4)] == [True] * 3 + [False]
    assert [prunes(i, 4, 1) for i in range(4)] == [True] + [False] * 3


# ----------------------------------------------------------------------------- the model, through the block


def _check_against_fixture(model, io, tag, merge_from):
    """prop_attn=False: the published code never updates sizes, so its proportional attention is inert."""
    assert io[f"margin_{tag}"] > 1e-4
    tome_jax.apply_tome(model, method="tofu", r=[int(v) for v in io[f"r_{tag}"]], prop_attn=False,
                        options=dict(merge_from=merge_from))
    logits, info = forward(model, jnp.asarray(io["images"]), return_info=True)
    np.testing.assert_array_equal(info["source"], io[f"source_{tag}"], err_msg=tag)
    np.testing.assert_array_equal(info["size"], io[f"source_{tag}"].sum(-1, keepdims=True), err_msg=tag)
    assert rel_err(logits, io[f"logits_{tag}"]) < 1e-5, tag


def test_vit_matches_the_published_block_pruning_then_merging():
    """Block 0 prunes, blocks 1-3 merge by MLERP: logits and sources equal the published code's."""
    _check_against_fixture(load_small("vit_cls", trace_source=True), fixture("tofu_io"), "merge_from_1", 1)


@pytest.mark.slow
def test_vit_matches_the_published_block_with_the_published_layer_rule():
    """The published rule (blocks 0-2 of 4 prune; also checked fast by `prunes`)."""
    _check_against_fixture(load_small("vit_cls", trace_source=True), fixture("tofu_io"), "default", -1)
