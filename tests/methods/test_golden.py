"""PiToMe, DCT and ATC against the authors' own code (tests/fixtures/make_method_fixtures.py wrote
methods_golden.npz with it: PiToMe's `pitome_vision` + `merge_wavg`, the Fourier Transformer's
`dct` / `idct`, ATC's `agglomerative_clustering` on scikit-learn). Each method's cases run as one
jitted program."""

import os

import jax
import numpy as np
import pytest

from tome_jax.reduction import TokenReduction

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "..", "fixtures", "methods_golden.npz"))
PITOME_CASES = [(layer, ratio) for layer in (1, 9) for ratio in (0.9, 0.7)]  # layer 1: bipartite variant
DCT_CASES = [0.5, 0.75, 0.9]
ATC_CASES = [(linkage, clusters) for linkage in ("average", "complete") for clusters in (12, 6)]


def reduce_once(method, layer, depth, metric, x, size, r=1, **options):
    """One block's reduction at `layer` of `depth` (class token protected, sources traced)."""
    red = TokenReduction(method=method, r=(r,) * depth, trace_source=True, options=options, protected=1)
    return red.reduce(red.plan(layer, metric, x=x, size=size), x, size, None)


@pytest.fixture(scope="module")
def pitome():
    g = GOLDEN

    def run(metric, x, size):
        cases = {f"pitome_l{layer}_r{int(ratio * 100)}": reduce_once("pitome", layer, 12, metric, x, size, ratio=ratio)
                 for layer, ratio in PITOME_CASES}
        cases["r7"] = reduce_once("pitome", 9, 12, metric, x, size, r=7)  # = ratio 0.7's floor(24 - 24 * 0.7)
        return cases
    return jax.jit(run)(g["pitome_metric"], g["pitome_x"], g["pitome_size"])


@pytest.mark.parametrize("layer, ratio", PITOME_CASES)
def test_pitome_equals_the_authors_merge(pitome, layer, ratio):
    key = f"pitome_l{layer}_r{int(ratio * 100)}"
    x, size, source = pitome[key]
    assert x.shape == GOLDEN[f"{key}_x"].shape  # 25 - floor(24 - 24 * ratio) tokens, in their order
    np.testing.assert_allclose(np.asarray(x), GOLDEN[f"{key}_x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(size), GOLDEN[f"{key}_size"])
    np.testing.assert_array_equal(np.asarray(source), GOLDEN[f"{key}_source"])


def test_pitome_r_removes_what_the_ratio_does(pitome):
    np.testing.assert_array_equal(np.asarray(pitome["r7"][0]), np.asarray(pitome["pitome_l9_r70"][0]))


def test_dct_equals_the_authors_transform():
    x = GOLDEN["dct_x"]

    def run(x):
        outs = []
        for ratio in DCT_CASES:
            red = TokenReduction(method="dct", r=(1,), options=dict(ratio=ratio), protected=1)
            outs.append(red.reduce(red.plan(0, x), x, None, None)[:2])
        return outs
    for ratio, (out, size) in zip(DCT_CASES, jax.jit(run)(x)):
        np.testing.assert_allclose(np.asarray(out), GOLDEN[f"dct_p{int(ratio * 100)}"], rtol=1e-5, atol=1e-5)
        assert float(np.asarray(size).sum()) == 2 * 21  # the chunks' sizes add up to the tokens in


@pytest.fixture(scope="module")
def atc():
    g = GOLDEN

    def run(metric, x, size):
        return {f"atc_{linkage}_k{k}": reduce_once("atc", 0, 1, metric, x, size, r=20 - k, linkage=linkage)
                for linkage, k in ATC_CASES}
    return jax.jit(run)(g["atc_metric"], g["atc_x"], g["atc_size"])


def groups(source):
    """source [T', T] -> {frozenset of members: output row}."""
    return {frozenset(np.flatnonzero(row > 0).tolist()): i for i, row in enumerate(source)}


@pytest.mark.parametrize("linkage, clusters", ATC_CASES)
def test_atc_forms_scikit_learns_clusters_and_merges_them_by_their_rule(atc, linkage, clusters):
    key = f"atc_{linkage}_k{clusters}"
    x, size, source = atc[key]
    assert x.shape == GOLDEN[f"{key}_x"].shape == (2, 1 + clusters, 6)
    for b in range(2):
        ours, theirs = groups(np.asarray(source[b])), groups(GOLDEN[f"{key}_source"][b])
        assert set(ours) == set(theirs)  # the same clusters (label ids differ: compare groups)
        assert ours[frozenset([0])] == 0  # the class token first, alone
        order = [theirs[group] for group in sorted(ours, key=ours.get)]
        np.testing.assert_allclose(np.asarray(x[b]), GOLDEN[f"{key}_x"][b][order], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(size[b]), GOLDEN[f"{key}_size"][b][order])
